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
    /// Opens (creating if needed) the database and its one session.
    pub async fn open(storage: Storage, relaxed_durability: bool) -> Result<(Self, EngineSession)> {
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
        let stream = UnixStream::connect(&socket_path)
            .await
            .context("connect to the embedded engine")?;
        let (reader, writer) = stream.into_split();
        let session = EngineSession::start(
            Box::new(reader),
            Box::new(writer),
            "postgres",
            "postgres",
            None,
        )
        .await
        .context("start the embedded engine session")?;
        Ok((
            Self {
                server: Some(server),
                _socket_dir: socket_dir,
            },
            session,
        ))
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
