//! The embedded engine: PostgreSQL 18 compiled to WASIX, run in-process by
//! `oliphaunt-wasix` on a thread of its own.
//!
//! The gateway speaks the wire protocol to it over one end of a socket pair,
//! as to a server; the engine thread (`backend.rs`) hands each message from
//! the other end to the backend and writes back what it answers. That one
//! connection is the engine session all clients share. Going through a
//! protocol stream rather than a function call is what lets `COPY ... FROM
//! STDIN` work: once a COPY starts, the backend reads the socket itself, as a
//! real backend does.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail};
use tokio::net::UnixStream;

use super::EngineSession;
use super::backend::{self, Opening};

/// Where the embedded database keeps its files.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A persistent data directory, created on first use.
    Directory(PathBuf),
    /// A throwaway database removed when the gateway stops.
    Memory,
}

pub struct EmbeddedEngine {
    thread: Option<JoinHandle<()>>,
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
        if let Storage::Directory(dir) = &storage {
            refuse_old_layout(dir)?;
        }
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().context("create the engine's socket pair")?;
        let (opened, outcome) = tokio::sync::oneshot::channel();
        let opening = Opening {
            storage,
            relaxed_durability,
            database: database.to_string(),
            opened,
        };
        let thread = std::thread::Builder::new()
            .name("pgshare-engine".into())
            .spawn(move || backend::serve(opening, theirs))
            .context("start the engine thread")?;
        let engine = Self {
            thread: Some(thread),
        };
        outcome
            .await
            .context("the engine thread stopped while opening")?
            .context("start the embedded PostgreSQL engine")?;
        ours.set_nonblocking(true)?;
        let stream = UnixStream::from_std(ours)?;
        let (reader, writer) = stream.into_split();
        let session = EngineSession::start(
            Box::new(reader),
            Box::new(writer),
            "postgres",
            database,
            None,
        )
        .await
        .context("start the embedded engine session")?;
        Ok((engine, session))
    }

    /// Waits for the engine thread to checkpoint and stop. The session must
    /// have been dropped first: the engine stops when its connection closes.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .context("engine shutdown task")?
                .map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
        }
        Ok(())
    }
}

/// A data directory written by the earlier engine (PostgreSQL 17, laid out
/// by pglite-oxide) is refused before anything in it is touched.
pub fn refuse_old_layout(dir: &Path) -> Result<()> {
    if dir.join("tmp").join("pglite").exists() || dir.join(".pglite-oxide.lock").exists() {
        bail!(
            "{} holds a database of an earlier pgshare (PostgreSQL 17), which this one \
             (PostgreSQL 18) cannot open; it is left as it is. To carry the data over, run the \
             earlier pgshare on it and `pg_dump -Fc` each database, then restore the dumps with \
             `pg_restore` into this pgshare (with a new --data directory)",
            dir.display()
        );
    }
    Ok(())
}

impl Drop for EmbeddedEngine {
    /// Dropped without `shutdown` (the gateway's future was cancelled), the
    /// engine thread stops by itself once the session closes.
    fn drop(&mut self) {
        drop(self.thread.take());
    }
}
