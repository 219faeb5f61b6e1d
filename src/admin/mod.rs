//! The admin console, as PgBouncer's: a client that connects to the virtual
//! database `pgshare` as one of the admin users (`--admin-users`), logged in
//! like any other client, gets a console that speaks the simple query
//! protocol. `SHOW CLIENTS`, `SERVERS`, `POOLS`, `DATABASES`, `STATS`,
//! `STATS_TOTALS`, `CONFIG`, `VERSION`, `LISTS` and `HELP` answer in
//! PgBouncer's columns and types (so its exporters and dashboards read
//! them), with pgshare's own columns last; `PAUSE`, `RESUME`, `KILL`,
//! `KILL_CLIENT`, `RELOAD` and `SHUTDOWN` act on the gateway. The
//! extended protocol is refused with 0A000, and the connection goes on.

mod command;
mod kill;
pub(crate) mod overview;
mod pause;
mod process;
mod result_set;
mod show_clients;
mod show_config;
mod show_databases;
mod show_help;
mod show_lists;
mod show_pools;
mod show_servers;
mod show_stats;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tracing::debug;

use crate::activity::ClientRegistration;
use crate::cancel::{CancelKey, CancelTarget};
use crate::frontend::transport::{ClientError, ClientStream, read_message, send_error};
use crate::gateway::Gateway;
use crate::protocol::backend::{self, push_message, ready_for_query};
use crate::protocol::error::{PgError, sqlstate};
use crate::protocol::frame::{self, Reader};

use command::{Command, Show};

/// The virtual database of the console.
pub use crate::database::CONSOLE_DATABASE as DATABASE;

/// How long a last error may take to reach a departing console client.
const FAREWELL_WAIT: Duration = Duration::from_secs(5);

/// A logged-in console client.
pub struct ConsoleContext {
    pub key: CancelKey,
    /// Interrupts a `PAUSE` that waits for running units.
    pub cancel: Arc<CancelTarget>,
    pub user: String,
    /// The console's client is listed in `SHOW CLIENTS` too.
    pub activity: ClientRegistration,
    /// Set when the gateway shuts down or an administrator kills the
    /// console's client.
    pub shutdown: watch::Receiver<Option<Instant>>,
    pub gateway: Arc<Gateway>,
    pub _permit: OwnedSemaphorePermit,
}

/// Refuses the console to roles that are not admin users, as PostgreSQL
/// refuses a database to a role without `CONNECT`.
pub fn check_access(admin_users: &[String], user: &str) -> Result<(), PgError> {
    if admin_users.iter().any(|admin| admin == user) {
        return Ok(());
    }
    Err(PgError::fatal(
        sqlstate::INSUFFICIENT_PRIVILEGE,
        format!("permission denied for database \"{DATABASE}\""),
    )
    .with_detail(format!(
        "Role \"{user}\" is not an admin user; only the admin users (--admin-users) may open the admin console."
    )))
}

/// Everything after authentication up to the first `ReadyForQuery`.
pub fn welcome(process_id: i32, secret_key: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    backend::authentication_ok(&mut out);
    for (name, value) in [
        (
            "server_version",
            concat!(env!("CARGO_PKG_VERSION"), "/pgshare"),
        ),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "on"),
    ] {
        backend::parameter_status(&mut out, name, value);
    }
    backend::backend_key_data(&mut out, process_id, secret_key);
    ready_for_query(&mut out, b'I');
    out
}

/// Serves a console client until it leaves.
pub async fn serve<S: ClientStream>(stream: &mut S, mut buf: BytesMut, mut ctx: ConsoleContext) {
    let id = ctx.key.process_id;
    match run(stream, &mut buf, &mut ctx).await {
        Ok(()) => {}
        Err(ClientError::Protocol(err)) => {
            debug!(client = id, "closing the admin console: {err}");
            let _ = tokio::time::timeout(FAREWELL_WAIT, send_error(stream, &err)).await;
        }
        Err(ClientError::Io(err)) => debug!(client = id, "admin console connection failed: {err}"),
    }
}

async fn run<S: ClientStream>(
    stream: &mut S,
    buf: &mut BytesMut,
    ctx: &mut ConsoleContext,
) -> Result<(), ClientError> {
    // After an extended-protocol message, the rest of its sequence is
    // skipped up to its Sync, as PostgreSQL skips after an error.
    let mut skipping_to_sync = false;
    loop {
        let max_message_len = ctx.gateway.config().max_message_len;
        let message = tokio::select! {
            message = read_message(stream, buf, max_message_len) => message?,
            () = shutting_down(&mut ctx.shutdown) => return Err(terminated().into()),
        };
        let mut out = Vec::new();
        match message[0] {
            b'Q' => {
                skipping_to_sync = false;
                let query = Reader::new(frame::body(&message)).cstr()?;
                let query = String::from_utf8_lossy(query);
                tokio::select! {
                    () = execute(&ctx.gateway, &ctx.cancel, &query, &mut out) => {}
                    () = shutting_down(&mut ctx.shutdown) => return Err(terminated().into()),
                }
                ready_for_query(&mut out, b'I');
            }
            b'X' => return Ok(()),
            b'S' => {
                skipping_to_sync = false;
                ready_for_query(&mut out, b'I');
            }
            b'P' | b'B' | b'E' | b'D' | b'C' if !skipping_to_sync => {
                skipping_to_sync = true;
                extended_protocol_refused().encode(&mut out);
            }
            b'F' => {
                extended_protocol_refused().encode(&mut out);
                ready_for_query(&mut out, b'I');
            }
            // The rest of a refused sequence, a Flush, stray COPY data.
            b'P' | b'B' | b'E' | b'D' | b'C' | b'H' | b'd' | b'c' | b'f' => {}
            tag => {
                return Err(PgError::protocol_violation(format!(
                    "invalid frontend message type {tag}"
                ))
                .into());
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            stream.flush().await?;
        }
    }
}

/// Carries out one console command, appending its answer (or its error)
/// to `out`.
async fn execute(gateway: &Gateway, cancel: &CancelTarget, query: &str, out: &mut Vec<u8>) {
    let command = match command::parse(query) {
        Ok(command) => command,
        Err(err) => return err.encode(out),
    };
    let result = match command {
        Command::Empty => {
            push_message(out, b'I', &[]);
            Ok(())
        }
        Command::Help => {
            show_help::help(out);
            Ok(())
        }
        Command::Show(what) => {
            let set = match what {
                Show::Clients => show_clients::show(gateway),
                Show::Servers => show_servers::show(gateway),
                Show::Pools => show_pools::show(gateway),
                Show::Databases => show_databases::show(gateway),
                Show::Stats => show_stats::show_stats(gateway),
                Show::StatsTotals => show_stats::show_totals(gateway),
                Show::Config => show_config::show(gateway),
                Show::Version => show_help::version(),
                Show::Lists => show_lists::show(gateway),
            };
            set.encode(out, "SHOW");
            Ok(())
        }
        Command::Pause(database) => pause::pause(gateway, cancel, database.as_deref(), out).await,
        Command::Resume(database) => pause::resume(gateway, database.as_deref(), out),
        Command::Kill(database) => kill::kill(gateway, &database, out),
        Command::KillClient(id) => kill::kill_client(gateway, id, out),
        Command::Reload => process::reload(gateway, out),
        Command::Shutdown => process::shutdown(gateway, out),
    };
    if let Err(err) = result {
        err.encode(out);
    }
}

fn extended_protocol_refused() -> PgError {
    PgError::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        "the admin console speaks only the simple query protocol",
    )
    .with_hint("send console commands as simple queries, as psql does (with a driver: its simple-query call)")
}

fn terminated() -> PgError {
    PgError::fatal(
        sqlstate::ADMIN_SHUTDOWN,
        "terminating connection due to administrator command",
    )
}

/// Completes once the gateway shuts down or the client is killed.
async fn shutting_down(shutdown: &mut watch::Receiver<Option<Instant>>) {
    if shutdown.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_admin_users_open_the_console() {
        let admins = ["ops".to_string()];
        assert!(check_access(&admins, "ops").is_ok());
        let refused = check_access(&admins, "app").unwrap_err();
        assert_eq!(refused.code, sqlstate::INSUFFICIENT_PRIVILEGE);
        assert!(refused.is_fatal());
    }
}
