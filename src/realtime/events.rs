//! Serving one subscriber as Server-Sent Events, for clients that cannot
//! open a WebSocket: the same messages as `data:` lines, with `id:` the
//! message's seq, so that a browser's `EventSource` resumes by itself with
//! `Last-Event-ID` (and `?gen=`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;

use super::endpoints::{Address, Endpoints, admit, refusal, resume_point};
use super::feed::Next;

/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

pub async fn serve(
    endpoints: Arc<Endpoints>,
    at: Address,
    params: HashMap<String, String>,
    peer: SocketAddr,
    headers: HeaderMap,
) -> Response {
    let last_event = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok());
    let since = resume_point(&params, last_event);
    let admitted = match admit(&endpoints, &at, &params, peer, &headers, since).await {
        Ok(admitted) => admitted,
        Err(refused) => return refusal(refused, &at),
    };
    let shutdown = endpoints.gateway.shutdown.subscribe();
    let first: Vec<Event> = admitted
        .first
        .iter()
        .map(|(frame, seq)| event(frame, *seq))
        .collect();
    let rest = stream::unfold(
        (admitted, shutdown),
        |(mut admitted, mut shutdown)| async move {
            tokio::select! {
                next = admitted.subscriber.next() => match next {
                    Next::Frame(frame, seq) => Some((event(&frame, seq), (admitted, shutdown))),
                    Next::Close(_) => None,
                },
                _ = shutdown.changed() => None,
            }
        },
    );
    let events = futures_util::StreamExt::map(
        futures_util::StreamExt::chain(stream::iter(first), rest),
        Ok::<Event, Infallible>,
    );
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

fn event(frame: &str, seq: Option<i64>) -> Event {
    let event = Event::default().data(frame);
    match seq {
        Some(seq) => event.id(seq.to_string()),
        None => event,
    }
}
