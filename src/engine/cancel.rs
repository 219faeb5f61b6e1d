//! Cancelling a statement running on an upstream server: PostgreSQL's
//! `CancelRequest`, sent on a new connection with the key the server gave the
//! session in `BackendKeyData`.

use std::io;
use std::path::PathBuf;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};

const CANCEL_REQUEST_CODE: i32 = 80877102;

/// Where a server listens.
#[derive(Debug, Clone)]
pub enum ServerAddress {
    Tcp(String, u16),
    Unix(PathBuf),
}

/// What it takes to cancel the statement running on one server session.
#[derive(Debug, Clone)]
pub struct ServerCancel {
    pub address: ServerAddress,
    pub process_id: i32,
    pub secret_key: i32,
}

impl ServerCancel {
    /// Sends the cancel request; the server answers nothing and closes.
    pub async fn send(&self) -> io::Result<()> {
        let mut packet = Vec::with_capacity(16);
        packet.extend_from_slice(&16i32.to_be_bytes());
        packet.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
        packet.extend_from_slice(&self.process_id.to_be_bytes());
        packet.extend_from_slice(&self.secret_key.to_be_bytes());
        match &self.address {
            ServerAddress::Tcp(host, port) => {
                TcpStream::connect((host.as_str(), *port))
                    .await?
                    .write_all(&packet)
                    .await
            }
            ServerAddress::Unix(path) => UnixStream::connect(path).await?.write_all(&packet).await,
        }
    }
}
