//! The live queries' part of the HTTP port: `/ws/[DATABASE/]QUERY_ID`
//! (WebSocket), `/sse/[DATABASE/]QUERY_ID` (Server-Sent Events) and the
//! page `/live/[DATABASE/]QUERY_ID`; without a database, `postgres`.
//! Everything is checked before a subscriber is served, in the order
//! pg_reactive's proxy checks it (token, origin, subscription and
//! audience, a free place); a refusal is a plain HTTP response with body
//! `{"error": "..."}`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tracing::debug;

use crate::database::Connected;
use crate::gateway::Gateway;

use super::Realtime;
use super::admission::Place;
use super::auth::{self, Refusal};
use super::feed::{Frame, NotReady, Subscriber};
use super::{events, websocket};

/// The page that shows a live query's rows.
const LIVE_PAGE: &str = include_str!("../../js/page/live.html");
/// The client library the page uses (also `pgshare-host/live-query`).
const LIVE_LIBRARY: &str = include_str!("../../js/src/live-query.js");
/// The database of addresses that name none.
const DEFAULT_DATABASE: &str = "postgres";
/// Bytes of messages that may wait for one subscriber before it gets an
/// overflow instead.
pub const QUEUE_BOUND: u64 = 256 << 10;

pub struct Endpoints {
    pub gateway: Arc<Gateway>,
    pub realtime: Option<Arc<Realtime>>,
}

/// A subscriber that passed every check.
pub struct Admitted {
    /// `subscribed`, then the snapshot unless messages are replayed.
    pub first: Vec<Frame>,
    pub subscriber: Subscriber,
    /// Held while it is served: its place among the subscribers, and its
    /// database kept open.
    pub place: Place,
    pub connected: Connected,
}

/// The routes, for `http` to serve.
pub fn routes(endpoints: Endpoints) -> Router {
    Router::new()
        .route("/ws/{query_id}", get(websocket_default))
        .route("/ws/{database}/{query_id}", get(websocket_named))
        .route("/sse/{query_id}", get(events_default))
        .route("/sse/{database}/{query_id}", get(events_named))
        .route("/live/live-query.js", get(library))
        .route("/live/{query_id}", get(page))
        .route("/live/{database}/{query_id}", get(page))
        .with_state(Arc::new(endpoints))
}

type Params = Query<HashMap<String, String>>;

async fn websocket_default(
    State(endpoints): State<Arc<Endpoints>>,
    Path(query_id): Path<String>,
    Query(params): Params,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let at = Address::new(DEFAULT_DATABASE.into(), query_id);
    websocket::serve(endpoints, at, params, peer, headers, upgrade).await
}

async fn websocket_named(
    State(endpoints): State<Arc<Endpoints>>,
    Path((database, query_id)): Path<(String, String)>,
    Query(params): Params,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let at = Address::new(database, query_id);
    websocket::serve(endpoints, at, params, peer, headers, upgrade).await
}

async fn events_default(
    State(endpoints): State<Arc<Endpoints>>,
    Path(query_id): Path<String>,
    Query(params): Params,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let at = Address::new(DEFAULT_DATABASE.into(), query_id);
    events::serve(endpoints, at, params, peer, headers).await
}

async fn events_named(
    State(endpoints): State<Arc<Endpoints>>,
    Path((database, query_id)): Path<(String, String)>,
    Query(params): Params,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let at = Address::new(database, query_id);
    events::serve(endpoints, at, params, peer, headers).await
}

async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        LIVE_PAGE,
    )
        .into_response()
}

async fn library() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        LIVE_LIBRARY,
    )
        .into_response()
}

/// Which live query a request is for.
pub struct Address {
    pub database: String,
    pub query_id: String,
}

impl Address {
    fn new(database: String, query_id: String) -> Self {
        Self { database, query_id }
    }
}

/// The answer to a refused request.
pub fn refusal(refusal: Refusal, at: &Address) -> Response {
    debug!(
        "refused a subscriber of live query \"{}\" in database \"{}\" ({}): {}",
        at.query_id,
        at.database,
        refusal.status.as_u16(),
        refusal.reason
    );
    (
        refusal.status,
        axum::Json(json!({ "error": refusal.reason })),
    )
        .into_response()
}

/// Runs every check for a subscriber of `at` that has seen the messages
/// up to `since` (seq, generation), and joins the query's feed.
pub async fn admit(
    endpoints: &Endpoints,
    at: &Address,
    params: &HashMap<String, String>,
    peer: SocketAddr,
    headers: &HeaderMap,
    since: Option<(i64, i64)>,
) -> Result<Admitted, Refusal> {
    let config = endpoints.gateway.config();
    let settings = &config.realtime;
    let Some(realtime) = &endpoints.realtime else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "live queries are off (pgshare serve --realtime off)",
        ));
    };
    if !served(settings.secret.is_some(), config.http) {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "live queries are served on this address only with --realtime-secret",
        ));
    }
    let claims = auth::authenticate(settings, params, headers)?;
    auth::origin_allowed(settings, headers)?;
    let unknown = || {
        Refusal::new(
            StatusCode::NOT_FOUND,
            format!(
                "no live query \"{}\" in database \"{}\": register it with SELECT pgr.subscribe('{}', 'SELECT ...')",
                at.query_id, at.database, at.query_id
            ),
        )
    };
    if !valid_query_id(&at.query_id) {
        return Err(unknown());
    }
    let connected = match endpoints
        .gateway
        .registry
        .connect_existing(&at.database)
        .await
    {
        None => {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!("database \"{}\" does not exist", at.database),
            ));
        }
        Some(Err(err)) => return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, err.message)),
        Some(Ok(connected)) => connected,
    };
    let Some(hub) = realtime.hub(&at.database) else {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "live queries of this database are not started yet; try again",
        ));
    };
    let live = match hub.live(&at.query_id).await {
        Ok(Some(live)) => live,
        Ok(None) => return Err(unknown()),
        Err(err) => return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, err)),
    };
    auth::admitted(live.audience().as_ref(), &claims)?;
    let place = realtime
        .admission
        .admit(peer.ip(), settings.max_per_ip)
        .map_err(|reason| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, reason))?;
    let (first, subscriber) = live.feed.join(since, QUEUE_BOUND).map_err(|why| {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            match why {
                NotReady::Broken(err) => format!("the live query fails: {err}"),
                NotReady::Pending => {
                    "the live query's result is not computed yet; try again".into()
                }
            },
        )
    })?;
    Ok(Admitted {
        first,
        subscriber,
        place,
        connected,
    })
}

/// Whether live queries are served on the HTTP port at `http`: with a
/// secret anywhere, without one on loopback only (as a development
/// server).
fn served(secret: bool, http: Option<SocketAddr>) -> bool {
    secret || http.is_some_and(|addr| addr.ip().is_loopback())
}

/// 1 to 63 characters of `[A-Za-z0-9_-]`, as `pgr.subscribe` accepts.
fn valid_query_id(query_id: &str) -> bool {
    (1..=63).contains(&query_id.len())
        && query_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Where a subscriber resumes: `?since=` (or, for an event stream,
/// `last_event`, its `Last-Event-ID`) and `?gen=`, when both are numbers.
pub fn resume_point(
    params: &HashMap<String, String>,
    last_event: Option<&str>,
) -> Option<(i64, i64)> {
    let since = params.get("since").map(String::as_str).or(last_event)?;
    let generation = params.get("gen")?;
    Some((since.trim().parse().ok()?, generation.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_ids_are_what_pgr_subscribe_accepts() {
        assert!(valid_query_id("orders_q-1"));
        assert!(!valid_query_id(""));
        assert!(!valid_query_id(&"a".repeat(64)));
        assert!(!valid_query_id("a b"));
        assert!(!valid_query_id("a.js"));
    }

    #[test]
    fn without_a_secret_only_a_loopback_port_serves() {
        let at = |addr: &str| Some(addr.parse::<SocketAddr>().unwrap());
        assert!(served(false, at("127.0.0.1:8080")));
        assert!(served(false, at("[::1]:8080")));
        assert!(!served(false, at("0.0.0.0:8080")));
        assert!(!served(false, at("192.168.1.5:8080")));
        assert!(served(true, at("0.0.0.0:8080")));
    }

    #[test]
    fn a_resume_point_needs_both_numbers() {
        let params = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            resume_point(&params(&[("since", "5"), ("gen", "2")]), None),
            Some((5, 2))
        );
        assert_eq!(
            resume_point(&params(&[("gen", "2")]), Some("7")),
            Some((7, 2))
        );
        assert_eq!(resume_point(&params(&[("since", "5")]), None), None);
        assert_eq!(
            resume_point(&params(&[("since", "x"), ("gen", "2")]), None),
            None
        );
    }
}
