//! Carries one engine session over a host's WebSocket: the engine session
//! writes frontend bytes into one end of an in-memory pipe, as it would to a
//! socket; the bridge sends them to the host as requests, one outstanding at
//! a time, and writes the host's replies back into the pipe. It also keeps
//! the host's heartbeat, tells it how many clients are connected, and
//! disconnects it when it is idle, too old, or the gateway shuts down.

use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::{Bytes, BytesMut};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tracing::{info, warn};

use super::requests::{Requests, Step};

/// The flags byte of a binary frame: this frame ends its request or reply.
const FINAL: u8 = 0x01;
/// A host silent for this many heartbeats while idle is taken as gone.
const MISSED_HEARTBEATS: u32 = 3;

/// Close codes of the tunnel protocol (see `docs/tunnel-protocol.md`).
mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1008;
    pub const LIFETIME: u16 = 4001;
    pub const IDLE: u16 = 4002;
    pub const HEARTBEAT: u16 = 4003;
}

/// The limits a host is held to.
#[derive(Debug, Clone)]
pub struct BridgeLimits {
    pub heartbeat: Duration,
    pub max_frame: usize,
    pub idle_timeout: Option<Duration>,
    pub lifetime: Option<Duration>,
    pub max_message_len: usize,
    /// The most COPY FROM STDIN data sent to the host in one request.
    pub max_copy: usize,
}

/// What the bridge needs besides the socket and the pipe.
pub struct BridgeContext {
    pub database: String,
    pub limits: BridgeLimits,
    /// The `hello` control message.
    pub hello: serde_json::Value,
    pub clients: watch::Receiver<usize>,
    /// Set when the gateway shuts down.
    pub shutdown: watch::Receiver<Option<Instant>>,
}

/// Runs until the host or the engine session goes away, or the host is
/// disconnected; returns why.
pub async fn run(
    mut socket: WebSocket,
    mut engine: DuplexStream,
    mut ctx: BridgeContext,
) -> String {
    let limits = ctx.limits.clone();
    let mut requests = Requests::new(limits.max_message_len, limits.max_copy);
    let mut from_engine = BytesMut::with_capacity(64 * 1024);
    let mut outstanding = false;
    let attached_at = Instant::now();
    let mut last_heard = Instant::now();
    let mut last_request = Instant::now();
    let mut ticks = tokio::time::interval(limits.heartbeat.min(Duration::from_secs(1)));
    let mut last_ping = Instant::now();
    // Set at shutdown: the host is let go once its current unit of work ends.
    let mut stopping = false;
    if send_control(&mut socket, &ctx.hello).await.is_err() {
        return "the host left before the hello".into();
    }
    let clients = *ctx.clients.borrow_and_update();
    if send_control(&mut socket, &json!({"type": "clients", "count": clients}))
        .await
        .is_err()
    {
        return "the host left".into();
    }
    loop {
        tokio::select! {
            read = engine.read_buf(&mut from_engine) => {
                match read {
                    Ok(0) | Err(_) => {
                        shut(&mut socket, close::GOING_AWAY, "the database was closed").await;
                        return "the database was closed".into();
                    }
                    Ok(_) => {
                        requests.push(&from_engine);
                        from_engine.clear();
                    }
                }
            }
            frame = socket.recv() => {
                last_heard = Instant::now();
                let frame = match frame {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return "the host disconnected".into(),
                    Some(Ok(frame)) => frame,
                };
                match frame {
                    Message::Binary(data) => {
                        let Some((&flags, payload)) = data.split_first().filter(|_| outstanding) else {
                            shut(&mut socket, close::PROTOCOL, "a reply came without a request").await;
                            return "the host sent a reply without a request".into();
                        };
                        let last = flags & FINAL != 0;
                        let answer = requests.reply(payload, last);
                        if !answer.is_empty() && engine.write_all(&answer).await.is_err() {
                            shut(&mut socket, close::GOING_AWAY, "the database was closed").await;
                            return "the database was closed".into();
                        }
                        if last {
                            outstanding = false;
                        }
                    }
                    Message::Text(text) => {
                        let message: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                        if message["type"] == "error" {
                            warn!(
                                database = ctx.database,
                                "the host reports a failure: {}",
                                message["message"].as_str().unwrap_or("(no message)")
                            );
                        }
                    }
                    _ => {}
                }
            }
            changed = ctx.clients.changed() => {
                if changed.is_ok() {
                    let count = *ctx.clients.borrow_and_update();
                    if send_control(&mut socket, &json!({"type": "clients", "count": count})).await.is_err() {
                        return "the host disconnected".into();
                    }
                }
            }
            _ = ticks.tick() => {
                let idle = !outstanding && requests.status() == b'I';
                if last_ping.elapsed() >= limits.heartbeat {
                    last_ping = Instant::now();
                    if send_control(&mut socket, &json!({"type": "ping"})).await.is_err() {
                        return "the host disconnected".into();
                    }
                }
                if !outstanding && last_heard.elapsed() >= limits.heartbeat * MISSED_HEARTBEATS {
                    shut(&mut socket, close::HEARTBEAT, "no heartbeat").await;
                    return format!("the host missed {MISSED_HEARTBEATS} heartbeats");
                }
                if idle && limits.idle_timeout.is_some_and(|limit| last_request.elapsed() >= limit) {
                    shut(&mut socket, close::IDLE, "idle timeout").await;
                    return "the host was idle for longer than the tunnel idle timeout".into();
                }
                if idle && stopping {
                    shut(&mut socket, close::GOING_AWAY, "pgshare is shutting down").await;
                    return "pgshare is shutting down".into();
                }
                if idle && limits.lifetime.is_some_and(|limit| attached_at.elapsed() >= limit) {
                    shut(&mut socket, close::LIFETIME, "lifetime reached").await;
                    return "the host reached the tunnel lifetime".into();
                }
            }
            _ = async { ctx.shutdown.wait_for(Option::is_some).await.is_ok() }, if !stopping => {
                stopping = true;
            }
        }
        if !outstanding {
            match requests.next() {
                Ok(Step::Send(request)) => {
                    if send_request(&mut socket, &request, limits.max_frame)
                        .await
                        .is_err()
                    {
                        return "the host disconnected".into();
                    }
                    outstanding = true;
                    last_request = Instant::now();
                }
                Ok(Step::Wait) => {}
                Err(err) => {
                    warn!(
                        database = ctx.database,
                        "the engine session sent {err}; disconnecting the host"
                    );
                    shut(&mut socket, close::PROTOCOL, "bad request").await;
                    return err;
                }
            }
        }
    }
}

/// Sends `request` as binary frames of at most `max_frame` bytes.
async fn send_request(
    socket: &mut WebSocket,
    request: &[u8],
    max_frame: usize,
) -> Result<(), axum::Error> {
    let room = max_frame.saturating_sub(1).max(1);
    let mut chunks = request.chunks(room).peekable();
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() { FINAL } else { 0 };
        let mut frame = Vec::with_capacity(chunk.len() + 1);
        frame.push(flags);
        frame.extend_from_slice(chunk);
        socket.send(Message::Binary(Bytes::from(frame))).await?;
    }
    Ok(())
}

async fn send_control(
    socket: &mut WebSocket,
    message: &serde_json::Value,
) -> Result<(), axum::Error> {
    socket.send(Message::Text(message.to_string().into())).await
}

async fn shut(socket: &mut WebSocket, code: u16, reason: &str) {
    info!("closing a host's tunnel: {reason}");
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}
