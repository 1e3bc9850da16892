-- Directory accounts belong to one entry: its lasting identifier (AD objectGUID, OpenLDAP
-- entryUUID), kept from the first sign-in. A username that later names another entry (a new
-- colleague with a departed one's name) never inherits the account: it is disabled instead.
ALTER TABLE users ADD COLUMN directory_id TEXT;
-- One account per directory entry: a renamed person never gets a second one.
CREATE UNIQUE INDEX users_directory_id ON users (directory_id);
