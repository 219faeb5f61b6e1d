//! Reading and writing client messages on any byte stream (TCP, Unix socket).

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::error::PgError;
use crate::protocol::frame;

/// A client connection's byte stream.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientStream for T {}

/// Why talking to a client stopped.
#[derive(Debug)]
pub enum ClientError {
    /// The client broke the protocol; it gets this error and is disconnected.
    Protocol(PgError),
    /// The connection itself failed or closed.
    Io(io::Error),
}

impl From<io::Error> for ClientError {
    fn from(err: io::Error) -> Self {
        ClientError::Io(err)
    }
}

impl From<PgError> for ClientError {
    fn from(err: PgError) -> Self {
        ClientError::Protocol(err)
    }
}

/// Reads one whole tagged message, waiting as long as it takes.
pub async fn read_message<S: ClientStream>(
    stream: &mut S,
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<BytesMut, ClientError> {
    loop {
        if let Some(message) = frame::split_message(buf, max_len)? {
            return Ok(message);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(ClientError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Sends an error and, when it is fatal, nothing more will follow.
pub async fn send_error<S: ClientStream>(stream: &mut S, err: &PgError) -> io::Result<()> {
    stream.write_all(&err.to_bytes()).await?;
    stream.flush().await
}
