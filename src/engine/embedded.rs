//! The embedded engine: PGlite (PostgreSQL 17 compiled to WASIX) run in-process
//! by `pglite-oxide` on its own thread.
//!
//! pglite-oxide's server owns the engine thread and speaks the wire protocol on
//! a Unix socket. The gateway opens exactly one connection to it, in a private
//! directory, and keeps it for the engine's lifetime: that connection is the one
//! engine session all clients share. Going through the protocol stream rather
//! than a function call is what lets `COPY ... FROM STDIN` work: PGlite cannot
//! resume a COPY across calls, but on a stream its backend reads the COPY data
//! itself, as a real backend does.

use std::path::PathBuf;

use anyhow::{Context, Result};
use pglite_oxide::PgliteServer;
use tokio::net::UnixStream;

use crate::session::cleanup::query;

use super::EngineSession;

/// Where the embedded database keeps its files.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A persistent data directory, created on first use.
    Directory(PathBuf),
    /// A throwaway database removed when the gateway stops.
    Memory,
}

pub struct EmbeddedEngine {
    server: Option<PgliteServer>,
    _socket_dir: tempfile::TempDir,
}

impl EmbeddedEngine {
    /// Opens (creating if needed) the engine and its one session, on the
    /// engine's database `database` (created inside the engine when new, so
    /// that `current_database()` names it).
    pub async fn open(
        storage: Storage,
        relaxed_durability: bool,
        database: &str,
    ) -> Result<(Self, EngineSession)> {
        let socket_dir = tempfile::Builder::new()
            .prefix("pgshare-engine-")
            .tempdir()
            .context("create a private directory for the engine socket")?;
        let socket_path = socket_dir.path().join(".s.PGSQL.5432");
        let builder = match &storage {
            Storage::Directory(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("create data directory {}", dir.display()))?;
                PgliteServer::builder().path(dir.clone())
            }
            Storage::Memory => PgliteServer::builder().temporary(),
        }
        .unix(socket_path.clone())
        .relaxed_durability(relaxed_durability);
        let server = tokio::task::spawn_blocking(move || builder.start())
            .await
            .context("engine start task")?
            .context("start the embedded PGlite engine")?;
        let engine = Self {
            server: Some(server),
            _socket_dir: socket_dir,
        };
        if database != DEFAULT_DATABASE {
            let mut setup = connect(&socket_path, DEFAULT_DATABASE).await?;
            let reply = setup
                .run_collecting(&query(
                    format!(
                        "SELECT 1 FROM pg_catalog.pg_database WHERE datname = {}",
                        literal(database)
                    )
                    .as_bytes(),
                ))
                .await?;
            if reply.rows.is_empty() {
                let reply = setup
                    .run_collecting(&query(
                        format!("CREATE DATABASE {}", identifier(database)).as_bytes(),
                    ))
                    .await?;
                if let Some(error) = reply.error {
                    anyhow::bail!(
                        "the engine could not create database \"{database}\": {}",
                        super::error_message(&error)
                    );
                }
            }
        }
        let session = connect(&socket_path, database).await?;
        Ok((engine, session))
    }

    /// Stops the engine thread. The session must have been dropped first so the
    /// engine sees its connection close and flushes.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(server) = self.server.take() {
            tokio::task::spawn_blocking(move || server.shutdown())
                .await
                .context("engine shutdown task")??;
        }
        Ok(())
    }
}

/// The engine's own database, present from the start.
const DEFAULT_DATABASE: &str = "postgres";

/// A session on the engine's database `database`.
async fn connect(socket_path: &std::path::Path, database: &str) -> Result<EngineSession> {
    let stream = UnixStream::connect(socket_path)
        .await
        .context("connect to the embedded engine")?;
    let (reader, writer) = stream.into_split();
    EngineSession::start(
        Box::new(reader),
        Box::new(writer),
        "postgres",
        database,
        None,
    )
    .await
    .context("start the embedded engine session")
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Drop for EmbeddedEngine {
    /// Dropped without `shutdown` (the gateway's future was cancelled), the
    /// session may still be open somewhere, and stopping the server waits for
    /// it to close: wait on a thread of its own instead of blocking a runtime
    /// worker.
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            std::thread::spawn(move || drop(server));
        }
    }
}
