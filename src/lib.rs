//! pgshare: a Postgres wire-protocol gateway that lets any number of clients
//! share an engine that serves one session at a time, each client behaving as
//! if it had its own connection.

pub mod cancel;
pub mod catalog;
pub mod config;
pub mod config_file;
pub mod database;
pub mod engine;
pub mod frontend;
pub mod gateway;
pub mod http;
pub mod pool;
pub mod protocol;
pub mod scheduler;
pub mod session;
pub mod sql;
