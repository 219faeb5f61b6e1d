//! Serving one subscriber over a WebSocket: the first frames, then every
//! message of its feed, with pings to find a dead peer. Subscribers send
//! nothing but pongs and a close; anything else, or a frame too big, ends
//! the socket. A socket that cannot be written to for `UNWRITABLE_FOR` is
//! closed, so a stalled peer holds nothing for long.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::SinkExt;

use super::endpoints::{Address, Admitted, Endpoints, admit, refusal, resume_point};
use super::feed::Next;

/// How often a subscriber is pinged; one silent for two of these is gone.
const PING_EVERY: Duration = Duration::from_secs(30);
/// How long a write may wait for the peer to read.
const UNWRITABLE_FOR: Duration = Duration::from_secs(30);
/// The largest frame a subscriber may send (a pong or a close).
const MAX_CLIENT_FRAME: usize = 4 << 10;
/// Frames written together at most, and the bytes buffered before a write
/// even without a flush.
const MAX_BATCH: usize = 64;
const WRITE_BUFFER: usize = 64 << 10;

pub async fn serve(
    endpoints: Arc<Endpoints>,
    at: Address,
    params: HashMap<String, String>,
    peer: SocketAddr,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let since = resume_point(&params, None);
    let admitted = match admit(&endpoints, &at, &params, peer, &headers, since).await {
        Ok(admitted) => admitted,
        Err(refused) => return refusal(refused, &at),
    };
    let shutdown = endpoints.gateway.shutdown.subscribe();
    upgrade
        .max_frame_size(MAX_CLIENT_FRAME)
        .max_message_size(MAX_CLIENT_FRAME)
        // Subscribers only read: a small read buffer keeps ten thousand of
        // them cheap; frames are written when flushed.
        .read_buffer_size(MAX_CLIENT_FRAME)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| run(socket, admitted, shutdown))
}

async fn run(
    mut socket: WebSocket,
    admitted: Admitted,
    mut shutdown: tokio::sync::watch::Receiver<Option<Instant>>,
) {
    let Admitted {
        first,
        mut subscriber,
        place: _place,
        connected: _connected,
    } = admitted;
    for (frame, _) in first {
        if socket.feed(Message::Text(frame)).await.is_err() {
            return;
        }
    }
    if flush(&mut socket).await.is_err() {
        return;
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            next = subscriber.next() => {
                // What else is there already goes out in the same write: a
                // socket that lags behind costs fewer system calls, not more.
                let mut next = Some(next);
                let mut batched = 0;
                while let Some(message) = next.take() {
                    match message {
                        Next::Frame(frame, _) => {
                            if socket.feed(Message::Text(frame)).await.is_err() {
                                return;
                            }
                        }
                        Next::Close(reason) => {
                            close(&mut socket, close_code::NORMAL, reason).await;
                            return;
                        }
                    }
                    batched += 1;
                    if batched < MAX_BATCH {
                        next = subscriber.ready();
                    }
                }
                if flush(&mut socket).await.is_err() {
                    return;
                }
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Pong(_) | Message::Ping(_))) => heard = Instant::now(),
                Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                    close(&mut socket, close_code::UNSUPPORTED, "subscribers send nothing but pongs").await;
                    return;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
            },
            _ = ping.tick() => {
                if heard.elapsed() > 2 * PING_EVERY {
                    return;
                }
                if send(&mut socket, Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            _ = shutdown.changed() => {
                close(&mut socket, close_code::AWAY, "the gateway is shutting down").await;
                return;
            }
        }
    }
}

/// Writes what was fed; waits for the peer to read at most
/// `UNWRITABLE_FOR`.
async fn flush(socket: &mut WebSocket) -> Result<(), ()> {
    match tokio::time::timeout(UNWRITABLE_FOR, socket.flush()).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn send(socket: &mut WebSocket, message: Message) -> Result<(), ()> {
    match tokio::time::timeout(UNWRITABLE_FOR, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = send(socket, Message::Close(Some(frame))).await;
}
