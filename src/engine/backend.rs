//! The embedded engine's thread: one PostgreSQL backend serving one socket.
//!
//! The backend (an `oliphaunt-wasix` protocol session) is not `Send`, so it
//! lives and dies on this thread. The thread reads whole protocol messages
//! from its end of the socket pair, hands each to the backend, and writes
//! back what the backend answers. When a message makes the backend start a
//! COPY, the backend takes the socket over and serves it itself until the
//! connection ends, reading first what the thread had read beyond that
//! message (the engine would only hand it over once the COPY is done, after
//! the messages that follow it: a `Sync` sent behind the COPY would then be
//! answered twice). At the end the thread checkpoints, so that the next open
//! has nothing to replay.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use oliphaunt_wasix::session::{
    PostgresConfig, PreparedDatabase, PreparedRuntime, ProtocolPumpOutcome, ProtocolSession,
    ProtocolStream, StartupConfig, default_catalog_profile,
};
use oliphaunt_wasix::{DatabaseStorage, Extension};
use tokio::sync::oneshot;
use tracing::warn;

use super::embedded::Storage;
use super::error_message;
use super::extensions;
use super::session::startup_packet;
use crate::session::cleanup::query;

/// What the engine thread is to open, and where it says how that went.
pub struct Opening {
    pub storage: Storage,
    pub relaxed_durability: bool,
    pub database: String,
    pub opened: oneshot::Sender<Result<()>>,
}

/// The settings every embedded engine starts with. PostgreSQL's default
/// buffer pool (128MB) is held for the whole life of each open database:
/// with 16MB an idle database holds about 40 MB instead of 160 MB, so a
/// gateway can keep many open; the host's page cache still holds the rest.
fn postgres_settings() -> PostgresConfig {
    let mut config = PostgresConfig::default();
    config.insert("shared_buffers", "16MB");
    config
}

/// The engine's own database, present from the start.
const DEFAULT_DATABASE: &str = "postgres";
/// The role the gateway's session logs in as.
const USER: &str = "postgres";

/// The engine thread's body: opens the database, serves `socket` until the
/// gateway closes it, then checkpoints and closes the backend.
pub fn serve(opening: Opening, socket: UnixStream) {
    let Opening {
        storage,
        relaxed_durability,
        database,
        opened,
    } = opening;
    let open = open(storage, relaxed_durability, &database);
    let (mut prepared, runtime, mut session) = match open {
        Ok(open) => open,
        Err(err) => {
            let _ = opened.send(Err(err));
            return;
        }
    };
    let _ = opened.send(Ok(()));
    let served = serve_socket(&mut session, socket);
    if let Err(err) = &served {
        warn!("database \"{database}\": the embedded engine's connection failed: {err:#}");
    }
    // The engine writes no checkpoint of its own when it closes.
    if let Err(err) = session.send_buffered(&query(b"CHECKPOINT")) {
        warn!("database \"{database}\": the engine could not checkpoint before closing: {err:#}");
    }
    if let Err(err) = session.shutdown() {
        warn!("database \"{database}\": the engine did not close cleanly: {err:#}");
        return;
    }
    drop(session);
    drop(runtime);
    if let Err(err) = prepared.release() {
        warn!("database \"{database}\": the engine's files could not be released: {err:#}");
    }
}

/// The database prepared on its storage, and a backend on engine database
/// `database`, created first when it does not exist.
fn open(
    storage: Storage,
    relaxed_durability: bool,
    database: &str,
) -> Result<(PreparedDatabase, PreparedRuntime, ProtocolSession)> {
    let storage = match storage {
        Storage::Directory(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("create data directory {}", dir.display()))?;
            DatabaseStorage::Directory(dir)
        }
        Storage::Memory => DatabaseStorage::Memory,
    };
    let prepared = PreparedDatabase::prepare(storage, default_catalog_profile(), USER)?;
    let runtime = prepared.runtime()?;
    let mut config = postgres_settings();
    if relaxed_durability {
        config.insert("fsync", "off");
    }
    let extensions = extensions::all();
    if database != DEFAULT_DATABASE {
        create_database(&runtime, &config, &extensions, database)?;
    }
    let session = backend(&runtime, &config, &extensions, database)?;
    Ok((prepared, runtime, session))
}

/// Creates engine database `database` unless it exists, from a backend on
/// the default database that logs in on its own.
fn create_database(
    runtime: &PreparedRuntime,
    config: &PostgresConfig,
    extensions: &[Extension],
    database: &str,
) -> Result<()> {
    let mut setup = backend(runtime, config, extensions, DEFAULT_DATABASE)?;
    let startup = setup.startup_with_packet(&startup_packet(USER, DEFAULT_DATABASE))?;
    if !startup.accepted {
        bail!(
            "the engine refused its own login: {}",
            error_text(&startup.output)
        );
    }
    let found = setup.send_buffered(&query(
        format!(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = {}",
            literal(database)
        )
        .as_bytes(),
    ))?;
    if !has_message(&found, b'D') {
        let created = setup.send_buffered(&query(
            format!("CREATE DATABASE {}", identifier(database)).as_bytes(),
        ))?;
        if has_message(&created, b'E') {
            bail!(
                "the engine could not create database \"{database}\": {}",
                error_text(&created)
            );
        }
    }
    setup.shutdown()
}

/// A backend on `database`, before its startup.
fn backend(
    runtime: &PreparedRuntime,
    config: &PostgresConfig,
    extensions: &[Extension],
    database: &str,
) -> Result<ProtocolSession> {
    runtime.open_with_extensions(
        config.clone(),
        StartupConfig {
            username: USER.into(),
            database: database.into(),
        },
        extensions,
    )
}

/// Serves the gateway's connection: its startup first, then every message.
fn serve_socket(session: &mut ProtocolSession, mut socket: UnixStream) -> Result<()> {
    let mut input = Vec::new();
    let Some(startup) = read_startup(&mut socket, &mut input)? else {
        return Ok(());
    };
    // The backend's database and role are those it was opened with; the
    // gateway asks for the same.
    let answer = session.startup_with_packet(&startup)?;
    socket.write_all(&answer.output)?;
    if !answer.accepted {
        bail!(
            "the engine refused the gateway's login: {}",
            error_text(&answer.output)
        );
    }
    let unread = Arc::new(Mutex::new(Vec::new()));
    session.attach_protocol_stream(Stream {
        socket: socket.try_clone()?,
        unread: unread.clone(),
    })?;
    let mut chunk = vec![0; 64 << 10];
    loop {
        while let Some(len) = complete_message(&input) {
            if input[0] == b'X' {
                return Ok(());
            }
            let message: Vec<u8> = input.drain(..len).collect();
            // Where a COPY this message starts reads on from.
            *lock(&unread) = std::mem::take(&mut input);
            match session.send_with_connection_protocol_pump(&message, Vec::new)? {
                ProtocolPumpOutcome::Buffered(output) => {
                    input = std::mem::take(&mut *lock(&unread));
                    socket.write_all(&output)?;
                }
                // The backend served the connection to its end.
                ProtocolPumpOutcome::Streamed => return Ok(()),
            }
        }
        let read = match socket.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err.into()),
        };
        input.extend_from_slice(&chunk[..read]);
    }
}

/// The startup packet (length-prefixed, no type byte), or `None` when the
/// connection closed first.
fn read_startup(socket: &mut UnixStream, input: &mut Vec<u8>) -> Result<Option<Vec<u8>>> {
    let mut chunk = [0; 4096];
    loop {
        if input.len() >= 4 {
            let len = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
            if !(8..=10_000).contains(&len) {
                bail!("the gateway sent a startup packet of {len} bytes");
            }
            if input.len() >= len {
                return Ok(Some(input.drain(..len).collect()));
            }
        }
        match socket.read(&mut chunk)? {
            0 => return Ok(None),
            read => input.extend_from_slice(&chunk[..read]),
        }
    }
}

/// The length of the whole message at the start of `input`, once all of it
/// is there.
fn complete_message(input: &[u8]) -> Option<usize> {
    let header = input.get(..5)?;
    let len = 1 + u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    (input.len() >= len).then_some(len)
}

/// The engine's end of the socket, for the backend to read and write itself
/// once a COPY started: what the thread read beyond the COPY's message
/// first, then the socket. Reads block, so it is always "ready"; a write
/// writes everything or fails, and a signal interrupts neither.
struct Stream {
    socket: UnixStream,
    unread: Arc<Mutex<Vec<u8>>>,
}

fn lock(unread: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    unread
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        {
            let mut unread = lock(&self.unread);
            if !unread.is_empty() {
                let len = unread.len().min(buf.len());
                buf[..len].copy_from_slice(&unread[..len]);
                unread.drain(..len);
                return Ok(len);
            }
        }
        loop {
            match self.socket.read(buf) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                read => return read,
            }
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

impl ProtocolStream for Stream {
    fn read_ready(&mut self) -> io::Result<bool> {
        Ok(true)
    }
}

/// Whether `output` holds a message of type `kind`.
fn has_message(output: &[u8], kind: u8) -> bool {
    messages(output).any(|(tag, _)| tag == kind)
}

/// The primary message of the first `ErrorResponse` in `output`.
fn error_text(output: &[u8]) -> String {
    let mut rest = output;
    while let Some(len) = complete_message(rest) {
        let (message, after) = rest.split_at(len);
        if message[0] == b'E' {
            return error_message(message);
        }
        rest = after;
    }
    "no error message".into()
}

/// The messages of `output`: type and body.
fn messages(mut output: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let len = complete_message(output)?;
        let (message, rest) = output.split_at(len);
        output = rest;
        Some((message[0], &message[5..]))
    })
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_split_by_their_lengths() {
        let mut output = query(b"SELECT 1");
        output.extend_from_slice(b"E\0\0\0\x0fSXX\0Mboom\0\0");
        assert_eq!(complete_message(&output[..4]), None);
        let kinds: Vec<u8> = messages(&output).map(|(kind, _)| kind).collect();
        assert_eq!(kinds, vec![b'Q', b'E']);
        assert_eq!(error_text(&output), "boom");
        assert!(!has_message(&output, b'D'));
    }
}
