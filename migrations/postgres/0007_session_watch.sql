-- Tell every instance when what a request knows about its caller may have changed: a session
-- ended, a user was changed or disabled, a role was granted or revoked. Each instance LISTENs
-- on changeguard_auth and stops trusting what it read before (src/db/watch.rs). NOTIFY is
-- delivered at commit, once per transaction, and also for changes made outside the service.
CREATE FUNCTION changeguard_auth_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('changeguard_auth', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER sessions_auth_changed AFTER UPDATE OR DELETE OR TRUNCATE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION changeguard_auth_changed();
CREATE TRIGGER users_auth_changed AFTER UPDATE OR DELETE OR TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION changeguard_auth_changed();
CREATE TRIGGER role_grants_auth_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON role_grants
    FOR EACH STATEMENT EXECUTE FUNCTION changeguard_auth_changed();
