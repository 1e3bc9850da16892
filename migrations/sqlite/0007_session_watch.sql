-- Nothing to create on SQLite: the service notices commits by other processes through
-- PRAGMA data_version (src/db/watch.rs). This file keeps the version numbers of both
-- backends equal.
SELECT 1;
