//! One engine session: a Postgres protocol stream after startup, with its read
//! buffer and the transaction status of its last `ReadyForQuery`.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;

use crate::protocol::frame::{self, Reader};
use crate::session::settings::Settings;
use crate::session::statements::SessionStatements;

use super::cancel::ServerCancel;

/// Backend messages are trusted more than client ones, but a length beyond this
/// still means the stream is corrupt.
const MAX_BACKEND_MESSAGE_LEN: usize = 1 << 30;

pub struct EngineSession {
    /// What the engine sends; a separate field so that reading and writing can
    /// wait at the same time.
    pub input: EngineInput,
    pub output: Box<dyn AsyncWrite + Send + Unpin>,
    /// The `ParameterStatus` values the engine reported at startup.
    pub parameters: Vec<(String, String)>,
    /// The session settings the engine carries now (see `session::settings`).
    pub settings: Arc<Settings>,
    /// The prepared statements that exist on this session.
    pub statements: SessionStatements,
    /// The process id and secret key the engine gave this session.
    pub backend_key: Option<(i32, i32)>,
    /// How to cancel what runs on this session, where that is possible.
    pub cancel: Option<ServerCancel>,
    /// When the session was opened.
    pub opened_at: Instant,
}

/// What the engine answered to one of the gateway's own queries.
pub struct Reply {
    /// The `DataRow` messages, whole.
    pub rows: Vec<BytesMut>,
    /// The first `ErrorResponse`, whole, if any.
    pub error: Option<BytesMut>,
}

impl Reply {
    /// Each row's columns as text (`None` for NULL).
    pub fn text_rows(&self) -> Vec<Vec<Option<String>>> {
        self.rows.iter().map(|row| text_columns(row)).collect()
    }
}

/// The columns of a `DataRow` in text format.
pub fn text_columns(row: &[u8]) -> Vec<Option<String>> {
    let mut reader = Reader::new(frame::body(row));
    let Ok(count) = reader.take(2).map(|c| i16::from_be_bytes([c[0], c[1]])) else {
        return Vec::new();
    };
    let mut columns = Vec::new();
    for _ in 0..count {
        let Ok(len) = reader.i32() else { break };
        let value = match usize::try_from(len) {
            Ok(len) => match reader.take(len) {
                Ok(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
                Err(_) => break,
            },
            Err(_) => None,
        };
        columns.push(value);
    }
    columns
}

pub struct EngineInput {
    reader: Box<dyn AsyncRead + Send + Unpin>,
    inbuf: BytesMut,
    /// `I`, `T` or `E` from the last `ReadyForQuery`.
    pub status: u8,
}

impl EngineSession {
    /// Performs startup as `user` on `database` over a fresh stream, answering
    /// the engine's password challenge (cleartext, md5 or SCRAM-SHA-256) with
    /// `password`, and collects the reported parameters.
    pub async fn start(
        reader: Box<dyn AsyncRead + Send + Unpin>,
        writer: Box<dyn AsyncWrite + Send + Unpin>,
        user: &str,
        database: &str,
        password: Option<&[u8]>,
    ) -> io::Result<Self> {
        let mut session = Self {
            input: EngineInput {
                reader,
                inbuf: BytesMut::with_capacity(64 * 1024),
                status: b'I',
            },
            output: writer,
            parameters: Vec::new(),
            settings: Arc::default(),
            statements: SessionStatements::default(),
            backend_key: None,
            cancel: None,
            opened_at: Instant::now(),
        };
        session
            .output
            .write_all(&startup_packet(user, database))
            .await?;
        let mut login = Login::new(user, password);
        loop {
            let message = session.input.recv().await?;
            match message[0] {
                b'R' => {
                    if let Some(answer) = login.answer(frame::body(&message))? {
                        session.output.write_all(&answer).await?;
                    }
                }
                b'S' => {
                    let mut reader = Reader::new(frame::body(&message));
                    let name = reader.cstr().map_err(invalid)?;
                    let value = reader.cstr().map_err(invalid)?;
                    session.parameters.push((
                        String::from_utf8_lossy(name).into_owned(),
                        String::from_utf8_lossy(value).into_owned(),
                    ));
                }
                b'E' => {
                    return Err(io::Error::other(format!(
                        "the engine refused the login: {}",
                        error_message(&message)
                    )));
                }
                b'K' => {
                    let mut reader = Reader::new(frame::body(&message));
                    if let (Ok(process_id), Ok(secret_key)) = (reader.i32(), reader.i32()) {
                        session.backend_key = Some((process_id, secret_key));
                    }
                }
                b'Z' => return Ok(session),
                _ => {}
            }
        }
    }

    /// Writes `bytes` to the engine.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.output.write_all(bytes).await
    }

    /// `I`, `T` or `E` from the engine's last `ReadyForQuery`.
    pub fn status(&self) -> u8 {
        self.input.status
    }

    /// Runs one simple `Query` message of the gateway's own and collects its
    /// rows and first error; nothing of it reaches a client.
    pub async fn run_collecting(&mut self, query: &[u8]) -> io::Result<Reply> {
        self.send(query).await?;
        let mut reply = Reply {
            rows: Vec::new(),
            error: None,
        };
        loop {
            let message = self.input.recv().await?;
            match message[0] {
                b'D' => reply.rows.push(message),
                b'E' if reply.error.is_none() => reply.error = Some(message),
                b'Z' => return Ok(reply),
                _ => {}
            }
        }
    }

    /// Sends `bytes`, which must end with `expected_ready` Query/Sync messages,
    /// and discards everything up to their last `ReadyForQuery`. Used for the
    /// gateway's own housekeeping, never for client work.
    pub async fn run_discarding(&mut self, bytes: &[u8], expected_ready: usize) -> io::Result<()> {
        self.send(bytes).await?;
        self.input.discard_until_ready(expected_ready).await
    }
}

impl EngineInput {
    /// Reads more bytes from the engine into the buffer; cancel-safe.
    pub async fn fill(&mut self) -> io::Result<()> {
        let read = self.reader.read_buf(&mut self.inbuf).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "engine closed the connection",
            ));
        }
        Ok(())
    }

    /// The next whole message already buffered, if any. Tracks the status.
    pub fn next_buffered(&mut self) -> io::Result<Option<BytesMut>> {
        let message =
            frame::split_message(&mut self.inbuf, MAX_BACKEND_MESSAGE_LEN).map_err(invalid)?;
        if let Some(message) = &message
            && message[0] == b'Z'
            && message.len() == 6
        {
            self.status = message[5];
        }
        Ok(message)
    }

    /// Takes every whole message buffered so far, in one piece, calling
    /// `on_message` with each message's tag. Tracks the status.
    pub fn take_complete(&mut self, mut on_message: impl FnMut(u8)) -> io::Result<BytesMut> {
        let (end, _) = self.scan(u32::MAX, &mut on_message)?;
        Ok(self.inbuf.split_to(end))
    }

    /// Takes the whole messages buffered so far, stopping after the
    /// `max_ready`-th `ReadyForQuery`; returns them, how many of those there
    /// were, and whether a `NotificationResponse` is among them.
    pub fn take_until_ready(&mut self, max_ready: u32) -> io::Result<(BytesMut, u32, bool)> {
        let mut notifications = false;
        let (end, ready) = self.scan(max_ready, &mut |tag| notifications |= tag == b'A')?;
        Ok((self.inbuf.split_to(end), ready, notifications))
    }

    /// Finds the end of the buffered whole messages, up to `max_ready`
    /// `ReadyForQuery` messages, and tracks the status.
    fn scan(&mut self, max_ready: u32, on_message: &mut dyn FnMut(u8)) -> io::Result<(usize, u32)> {
        let mut end = 0;
        let mut ready = 0;
        while ready < max_ready && self.inbuf.len() >= end + 5 {
            let tag = self.inbuf[end];
            let len = i32::from_be_bytes([
                self.inbuf[end + 1],
                self.inbuf[end + 2],
                self.inbuf[end + 3],
                self.inbuf[end + 4],
            ]);
            if len < 4 || len as usize > MAX_BACKEND_MESSAGE_LEN {
                return Err(invalid(format!("engine sent a message of length {len}")));
            }
            let total = len as usize + 1;
            if self.inbuf.len() < end + total {
                break;
            }
            if tag == b'Z' && len == 5 {
                self.status = self.inbuf[end + 5];
                ready += 1;
            }
            on_message(tag);
            end += total;
        }
        Ok((end, ready))
    }

    /// Waits for the next whole message.
    pub async fn recv(&mut self) -> io::Result<BytesMut> {
        loop {
            if let Some(message) = self.next_buffered()? {
                return Ok(message);
            }
            self.fill().await?;
        }
    }

    /// Reads and drops messages until `expected_ready` `ReadyForQuery` arrived.
    pub async fn discard_until_ready(&mut self, expected_ready: usize) -> io::Result<()> {
        let mut remaining = expected_ready;
        while remaining > 0 {
            if self.recv().await?[0] == b'Z' {
                remaining -= 1;
            }
        }
        Ok(())
    }
}

/// The gateway's side of the engine's authentication exchange.
struct Login<'a> {
    user: &'a str,
    password: Option<&'a [u8]>,
    scram: Option<ScramSha256>,
}

impl<'a> Login<'a> {
    fn new(user: &'a str, password: Option<&'a [u8]>) -> Self {
        Self {
            user,
            password,
            scram: None,
        }
    }

    fn password(&self) -> io::Result<&'a [u8]> {
        self.password.ok_or_else(|| {
            io::Error::other("the engine asks for a password; give one in the upstream URL")
        })
    }

    /// The message answering an `Authentication*` request, if one is due.
    fn answer(&mut self, body: &[u8]) -> io::Result<Option<BytesMut>> {
        let mut reader = Reader::new(body);
        let code = reader.i32().map_err(invalid)?;
        let mut out = BytesMut::new();
        match code {
            0 => return Ok(None),
            3 => frontend::password_message(self.password()?, &mut out)?,
            5 => {
                let salt: [u8; 4] = reader
                    .take(4)
                    .map_err(invalid)?
                    .try_into()
                    .map_err(invalid)?;
                let hash = postgres_protocol::authentication::md5_hash(
                    self.user.as_bytes(),
                    self.password()?,
                    salt,
                );
                frontend::password_message(hash.as_bytes(), &mut out)?;
            }
            10 => {
                let mut mechanisms = Vec::new();
                while let Ok(mechanism) = reader.cstr() {
                    if mechanism.is_empty() {
                        break;
                    }
                    mechanisms.push(mechanism);
                }
                if !mechanisms.contains(&SCRAM_SHA_256.as_bytes()) {
                    return Err(io::Error::other(
                        "the engine offers no SASL mechanism the gateway speaks",
                    ));
                }
                let scram = ScramSha256::new(self.password()?, ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut out)?;
                self.scram = Some(scram);
            }
            11 => {
                let scram = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| io::Error::other("SASL out of order"))?;
                scram.update(reader.rest())?;
                frontend::sasl_response(scram.message(), &mut out)?;
            }
            12 => {
                let mut scram = self
                    .scram
                    .take()
                    .ok_or_else(|| io::Error::other("SASL out of order"))?;
                scram.finish(reader.rest())?;
                return Ok(None);
            }
            other => {
                return Err(io::Error::other(format!(
                    "the engine asks for authentication method {other}, which the gateway does not speak"
                )));
            }
        }
        Ok(Some(out))
    }
}

fn invalid(err: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err.to_string())
}

pub(super) fn startup_packet(user: &str, database: &str) -> Vec<u8> {
    let mut body = 196608i32.to_be_bytes().to_vec();
    for (name, value) in [("user", user), ("database", database)] {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// The `M` field of an `ErrorResponse`, for log lines.
pub fn error_message(message: &[u8]) -> String {
    let mut reader = Reader::new(frame::body(message));
    while let Ok(field) = reader.byte() {
        if field == 0 {
            break;
        }
        let Ok(value) = reader.cstr() else { break };
        if field == b'M' {
            return String::from_utf8_lossy(value).into_owned();
        }
    }
    "unknown error".to_string()
}
