//! Integration tests: the real server on 127.0.0.1:0, over HTTP, on a fresh SQLite file and on a
//! fresh PostgreSQL database (`CHANGEGUARD_TEST_POSTGRES_URL`). One test binary, many modules.

mod harness;
mod openapi;

mod approvals;
mod audit_checkpoints;
mod audit_trail;
mod auth;
mod browser;
mod changes;
mod cli;
mod console;
mod console_tasks;
mod console_vault;
mod dbaccess;
mod directory;
mod enrolment;
mod errors;
mod gate;
mod login_defences;
mod notify;
mod privilege;
mod rbac;
mod text;
mod vault;
mod webhooks;
mod workdays;
