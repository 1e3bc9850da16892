-- Directory sign-in (LDAP / Active Directory): accounts of kind 'directory' have no local
-- password (password_hash holds a marker no hash verifies) and remember the entry they were
-- found at; a role grant says where it came from: 'changeguard' (an admin, the console) or
-- 'directory' (a group mapping in policies/directory.toml, brought up to date at every
-- sign-in and by the sync job, which never touches the other grants).
ALTER TABLE users ADD COLUMN directory_dn TEXT;
ALTER TABLE role_grants ADD COLUMN source TEXT NOT NULL DEFAULT 'changeguard';
