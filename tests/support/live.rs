//! Subscribers of live queries, as a browser or a service would be: a
//! WebSocket client, an event stream read line by line, and plain HTTP
//! requests for the refusals that come before an upgrade.

use std::io::{Read, Write};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a message that must come.
pub const WAIT: Duration = Duration::from_secs(20);

/// A WebSocket subscriber.
pub struct Subscriber {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a socket ended.
#[derive(Debug)]
pub enum Ended {
    Closed(Option<u16>),
    Error(String),
}

impl Subscriber {
    /// Connects to `path` (e.g. `/ws/q1?since=3&gen=1`) on the HTTP port,
    /// with `headers` besides; panics when refused.
    pub async fn connect(http: u16, path: &str, headers: &[(&str, &str)]) -> Self {
        let mut request = format!("ws://127.0.0.1:{http}{path}")
            .into_client_request()
            .unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("the upgrade answered in time")
            .unwrap_or_else(|err| panic!("subscribing at {path} failed: {err}"));
        Self { socket }
    }

    /// The next message, parsed; panics when none comes within `WAIT`.
    pub async fn next(&mut self) -> Value {
        match self.next_within(WAIT).await {
            Ok(Some(value)) => value,
            Ok(None) => panic!("no message within {WAIT:?}"),
            Err(ended) => panic!("the socket ended: {ended:?}"),
        }
    }

    /// The next text message within `limit`: `Ok(None)` when none came.
    pub async fn next_within(&mut self, limit: Duration) -> Result<Option<Value>, Ended> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Err(Ended::Closed(None)),
                Ok(Some(Err(err))) => return Err(Ended::Error(err.to_string())),
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Text(text) => return Ok(Some(serde_json::from_str(&text).unwrap())),
                Message::Close(frame) => {
                    return Err(Ended::Closed(frame.map(|frame| frame.code.into())));
                }
                _ => {}
            }
        }
    }

    /// Asserts that nothing arrives for `quiet`.
    pub async fn assert_quiet(&mut self, quiet: Duration) {
        if let Ok(Some(message)) = self.next_within(quiet).await {
            panic!("expected no message, got {message}");
        }
    }

    /// How the socket ends, within `WAIT`.
    pub async fn ended(&mut self) -> Ended {
        loop {
            match self.next_within(WAIT).await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the socket stayed open"),
                Err(ended) => return ended,
            }
        }
    }

    /// Sends a message of its own, as subscribers must not.
    pub async fn send(&mut self, message: Message) {
        let _ = self.socket.send(message).await;
    }
}

/// The status and body the HTTP port answers to a WebSocket upgrade of
/// `path` with `headers`.
pub fn refusal(http: u16, path: &str, headers: &str) -> (u16, Value) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{http}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(read) = stream.read(&mut buffer) {
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n")
            && (head.starts_with("HTTP/1.1 101")
                || serde_json::from_str::<Value>(body.trim()).is_ok())
        {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body.trim()).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

/// An event stream (`/sse/...`), read as it arrives.
pub struct Events {
    stream: std::net::TcpStream,
    buffered: String,
}

/// One event: its `id:` and its `data:`.
#[derive(Debug)]
pub struct Event {
    pub id: Option<String>,
    pub data: Value,
}

impl Events {
    /// Opens `path` with `headers` (lines ending in `\r\n`).
    pub fn open(http: u16, path: &str, headers: &str) -> Self {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{http}\r\nAccept: text/event-stream\r\n{headers}\r\n"
        )
        .unwrap();
        let mut events = Self {
            stream,
            buffered: String::new(),
        };
        // HTTP/1.0: the body is not chunked, only ended by the close.
        let head = events.read_until("\n\n");
        assert!(head.contains(" 200 "), "the stream opened: {head}");
        events
    }

    /// The next event (keep-alive comments skipped).
    pub fn next(&mut self) -> Event {
        loop {
            let block = self.read_until("\n\n");
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("id:") {
                    id = Some(value.trim().to_string());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str(value.trim()).unwrap());
                }
            }
            if let Some(data) = data {
                return Event { id, data };
            }
        }
    }

    fn read_until(&mut self, end: &str) -> String {
        loop {
            if let Some(at) = self.buffered.find(end) {
                let block = self.buffered[..at].to_string();
                self.buffered.drain(..at + end.len());
                return block;
            }
            let mut buffer = [0u8; 4096];
            let read = self.stream.read(&mut buffer).expect("the stream goes on");
            assert!(read > 0, "the stream ended");
            self.buffered
                .push_str(&String::from_utf8_lossy(&buffer[..read]).replace("\r\n", "\n"));
        }
    }
}
