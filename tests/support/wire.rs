//! A client that speaks the protocol message by message, for the sequences
//! drivers send that ordinary clients rarely do: a `Flush` without a `Sync`,
//! pipelined `Sync`s, a `Describe` of a portal, an error in the middle of a
//! pipeline.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long a test waits for an answer that must come.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// One backend message: its type and body.
#[derive(Debug, Clone)]
pub struct Message {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Message {
    /// A field of an `ErrorResponse` or `NoticeResponse`, such as `b'C'`
    /// (the SQLSTATE) or `b'M'` (the message).
    pub fn field(&self, field: u8) -> Option<String> {
        self.body
            .split(|&b| b == 0)
            .take_while(|entry| !entry.is_empty())
            .find(|entry| entry[0] == field)
            .map(|entry| String::from_utf8_lossy(&entry[1..]).into_owned())
    }

    /// The tag of a `CommandComplete`.
    pub fn command_tag(&self) -> String {
        assert_eq!(self.tag, b'C', "not a CommandComplete: {self:?}");
        String::from_utf8_lossy(self.body.strip_suffix(&[0]).unwrap_or(&self.body)).into_owned()
    }

    /// The text of the first column of a `DataRow`.
    pub fn first_value(&self) -> Option<String> {
        assert_eq!(self.tag, b'D', "not a DataRow: {self:?}");
        let len = i32::from_be_bytes(self.body[2..6].try_into().unwrap());
        (len >= 0).then(|| String::from_utf8_lossy(&self.body[6..6 + len as usize]).into_owned())
    }
}

/// Frontend messages, built as a driver builds them.
pub mod frontend {
    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn cstr(out: &mut Vec<u8>, text: &str) {
        out.extend_from_slice(text.as_bytes());
        out.push(0);
    }

    pub fn query(sql: &str) -> Vec<u8> {
        let mut body = Vec::new();
        cstr(&mut body, sql);
        message(b'Q', &body)
    }

    /// `Parse` with no parameter types given.
    pub fn parse(name: &str, sql: &str) -> Vec<u8> {
        let mut body = Vec::new();
        cstr(&mut body, name);
        cstr(&mut body, sql);
        body.extend_from_slice(&0i16.to_be_bytes());
        message(b'P', &body)
    }

    /// `Bind` with text parameters and text results.
    pub fn bind(portal: &str, statement: &str, params: &[Option<&str>]) -> Vec<u8> {
        let mut body = Vec::new();
        cstr(&mut body, portal);
        cstr(&mut body, statement);
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for param in params {
            match param {
                Some(value) => {
                    body.extend_from_slice(&(value.len() as i32).to_be_bytes());
                    body.extend_from_slice(value.as_bytes());
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        body.extend_from_slice(&0i16.to_be_bytes());
        message(b'B', &body)
    }

    /// `Describe` of a statement (`b'S'`) or a portal (`b'P'`).
    pub fn describe(kind: u8, name: &str) -> Vec<u8> {
        let mut body = vec![kind];
        cstr(&mut body, name);
        message(b'D', &body)
    }

    pub fn execute(portal: &str) -> Vec<u8> {
        let mut body = Vec::new();
        cstr(&mut body, portal);
        body.extend_from_slice(&0i32.to_be_bytes());
        message(b'E', &body)
    }

    /// `Close` of a statement (`b'S'`) or a portal (`b'P'`).
    pub fn close(kind: u8, name: &str) -> Vec<u8> {
        let mut body = vec![kind];
        cstr(&mut body, name);
        message(b'C', &body)
    }

    pub fn sync() -> Vec<u8> {
        message(b'S', &[])
    }

    pub fn flush() -> Vec<u8> {
        message(b'H', &[])
    }

    pub fn terminate() -> Vec<u8> {
        message(b'X', &[])
    }

    /// Parse, Bind, Describe portal, Execute of an unnamed statement, as
    /// libpq's `PQsendQueryParams` sends it (without the Sync).
    pub fn extended(sql: &str, params: &[Option<&str>]) -> Vec<u8> {
        [
            parse("", sql),
            bind("", "", params),
            describe(b'P', ""),
            execute(""),
        ]
        .concat()
    }
}

/// A logged-in raw connection.
pub struct Wire {
    socket: TcpStream,
    /// The process id the gateway gave this client, for cancel requests.
    pub process_id: i32,
    pub secret_key: i32,
}

impl Wire {
    /// Logs in as `postgres` (trust) to `database`.
    pub async fn connect(addr: SocketAddr, database: &str) -> Self {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        let mut body = 196608i32.to_be_bytes().to_vec();
        body.extend_from_slice(format!("user\0postgres\0database\0{database}\0\0").as_bytes());
        let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        socket.write_all(&packet).await.unwrap();
        let mut wire = Self {
            socket,
            process_id: 0,
            secret_key: 0,
        };
        for message in wire.until_ready(1).await {
            assert_ne!(message.tag, b'E', "login failed: {message:?}");
            if message.tag == b'K' {
                wire.process_id = i32::from_be_bytes(message.body[0..4].try_into().unwrap());
                wire.secret_key = i32::from_be_bytes(message.body[4..8].try_into().unwrap());
            }
        }
        wire
    }

    pub async fn send(&mut self, messages: &[Vec<u8>]) {
        self.socket.write_all(&messages.concat()).await.unwrap();
    }

    /// Reads one message; fails the test when none comes in time.
    pub async fn read(&mut self) -> Message {
        self.try_read(ANSWER_WAIT)
            .await
            .expect("the gateway answers in time")
    }

    /// Reads one message, or `None` when none comes within `wait`.
    pub async fn try_read(&mut self, wait: Duration) -> Option<Message> {
        let read = async {
            let mut header = [0u8; 5];
            self.socket.read_exact(&mut header).await?;
            let len = i32::from_be_bytes(header[1..5].try_into().unwrap());
            assert!((4..1 << 24).contains(&len), "implausible length {len}");
            let mut body = vec![0u8; len as usize - 4];
            self.socket.read_exact(&mut body).await?;
            Ok::<_, io::Error>(Message {
                tag: header[0],
                body,
            })
        };
        match timeout(wait, read).await {
            Ok(message) => Some(message.expect("a whole backend message")),
            Err(_) => None,
        }
    }

    /// Reads messages up to and including the `count`-th `ReadyForQuery`.
    pub async fn until_ready(&mut self, count: usize) -> Vec<Message> {
        let mut messages = Vec::new();
        let mut seen = 0;
        while seen < count {
            let message = self.read().await;
            seen += usize::from(message.tag == b'Z');
            messages.push(message);
        }
        messages
    }

    /// Sends `messages` and reads the answers up to `ready` ReadyForQuery.
    pub async fn exchange(&mut self, messages: &[Vec<u8>], ready: usize) -> Vec<Message> {
        self.send(messages).await;
        self.until_ready(ready).await
    }

    /// Asks the gateway, on a new connection, to cancel what this client
    /// runs or waits for.
    pub async fn cancel(&self, addr: SocketAddr) {
        let mut packet = 16i32.to_be_bytes().to_vec();
        packet.extend_from_slice(&80877102i32.to_be_bytes());
        packet.extend_from_slice(&self.process_id.to_be_bytes());
        packet.extend_from_slice(&self.secret_key.to_be_bytes());
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket.write_all(&packet).await.unwrap();
        let mut rest = Vec::new();
        let _ = timeout(ANSWER_WAIT, socket.read_to_end(&mut rest)).await;
    }
}

/// The tags of `messages`, as a string such as `"12TDCZ"`.
pub fn tags(messages: &[Message]) -> String {
    messages.iter().map(|m| m.tag as char).collect()
}

/// The SQLSTATE of the first `ErrorResponse` in `messages`, if any.
pub fn error_code(messages: &[Message]) -> Option<String> {
    messages
        .iter()
        .find(|m| m.tag == b'E')
        .and_then(|m| m.field(b'C'))
}
