-- Addresses an account signed in from successfully: guesses spread over many addresses slow
-- the account down, but not its owner at their usual address (src/auth/mod.rs).
CREATE TABLE login_known_addresses (
    username TEXT NOT NULL,
    address TEXT NOT NULL,
    last_success TEXT NOT NULL,
    PRIMARY KEY (username, address)
);
