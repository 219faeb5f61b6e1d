//! pgshare: a Postgres wire-protocol gateway that lets any number of clients
//! share an engine that serves one session at a time, each client behaving as
//! if it had its own connection.

pub mod activity;
pub mod admin;
pub mod cancel;
pub mod catalog;
pub mod config;
pub mod config_file;
pub mod database;
pub mod engine;
pub mod frontend;
pub mod gateway;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod realtime;
pub mod reload;
pub mod run_command;
pub mod scheduler;
pub mod server;
pub mod session;
pub mod sql;
