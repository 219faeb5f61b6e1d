//! The gateway's HTTP port, for Live Share: hosts attach their PGlite at
//! `/tunnel/<database>` (a WebSocket, see `docs/tunnel-protocol.md`), and
//! `/share` is a page that runs PGlite in the browser tab and attaches it;
//! and for operators: `/metrics` has the Prometheus metrics. Live queries
//! have their own routes (see `realtime::endpoints`).
//! Everything a host sends before the upgrade is checked here, so that a
//! refused host gets a plain HTTP status (401, 409) and never a WebSocket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Component, Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use serde_json::json;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::database::validate_name;
use crate::engine::tunnel::bridge::{self, BridgeContext, BridgeLimits};
use crate::engine::tunnel::slot::{HostClaim, HostSlot};
use crate::engine::tunnel::{self, token};
use crate::gateway::Gateway;
use crate::metrics::{self, Metrics};
use crate::realtime::Realtime;
use crate::realtime::endpoints::{self, Endpoints};
use crate::session::statements::SessionStatements;

/// The share page; `__PGLITE_URL__` stands for where PGlite is loaded from.
const SHARE_PAGE: &str = include_str!("../js/page/share.html");
/// The host library the page uses (the `pgshare-host` package).
const HOST_LIBRARY: &str = include_str!("../js/src/share.js");
/// Where the page loads PGlite from without `--pglite-dist`: the version the
/// host library is tested with (see `js/package.json`).
const PGLITE_CDN: &str = "https://cdn.jsdelivr.net/npm/@electric-sql/pglite@0.5.16/dist/index.js";

/// What `/` lists.
const INDEX_PAGE: &str = "<!doctype html>
<title>pgshare</title>
<h1>pgshare</h1>
<ul>
<li><a href=\"/share\">/share</a>: share a PGlite running in this tab</li>
<li><a href=\"/metrics\">/metrics</a>: Prometheus metrics</li>
<li>/live/[database/]query_id: the rows of a live query (see pgr.subscribe)</li>
</ul>
";

/// Bytes written to an HTTP port's socket that the kernel may hold unsent.
const UNSENT_AT_MOST: u32 = 64 << 10;

struct Http {
    gateway: Arc<Gateway>,
    metrics: Metrics,
    /// The Postgres address clients use, for the connection string hosts
    /// show.
    postgres_addr: Option<SocketAddr>,
}

/// Serves the HTTP port until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    realtime: Option<Arc<Realtime>>,
    postgres_addr: Option<SocketAddr>,
) {
    let live_queries = endpoints::routes(Endpoints {
        gateway: gateway.clone(),
        realtime: realtime.clone(),
    });
    let state = Arc::new(Http {
        metrics: Metrics::new(gateway.clone(), realtime),
        gateway,
        postgres_addr,
    });
    let router = Router::new()
        .route("/", get(|| async { Html(INDEX_PAGE) }))
        .route("/metrics", get(metrics_page))
        .route("/share", get(share_page))
        .route("/share/pgshare-host.js", get(host_library))
        .route("/share/pglite/{*file}", get(pglite_file))
        .route("/tunnel/{database}", get(attach))
        .with_state(state)
        .merge(live_queries);
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let listener = listener.tap_io(|stream| {
        // A peer that stops reading (a live-query subscriber, a host) makes
        // writes wait once this much is unsent, instead of the kernel
        // buffering megabytes for it; the gateway's own bounds then apply.
        let _ = socket2::SockRef::from(&*stream).set_tcp_notsent_lowat(UNSENT_AT_MOST);
        // Writes are already whole batches (a subscriber's frames are fed,
        // then flushed once): holding one back for the peer's ACK only
        // delays it.
        let _ = stream.set_nodelay(true);
    });
    if let Err(err) = axum::serve(listener, service).await {
        warn!("the HTTP port stopped: {err}");
    }
}

async fn metrics_page(State(http): State<Arc<Http>>) -> Response {
    match http.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn share_page(State(http): State<Arc<Http>>) -> Response {
    let pglite = match http.gateway.config().tunnel.pglite_dist {
        Some(_) => "/share/pglite/index.js",
        None => PGLITE_CDN,
    };
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        SHARE_PAGE.replace("__PGLITE_URL__", pglite),
    )
        .into_response()
}

async fn host_library() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        HOST_LIBRARY,
    )
        .into_response()
}

async fn pglite_file(State(http): State<Arc<Http>>, Path(file): Path<String>) -> Response {
    let Some(dist) = http.gateway.config().tunnel.pglite_dist.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "start pgshare with --pglite-dist to serve PGlite\n",
        )
            .into_response();
    };
    let Some(path) = inside(&dist, &file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type(&path))], bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `file` under `dir`, unless it would leave it.
fn inside(dir: &FsPath, file: &str) -> Option<PathBuf> {
    let relative = FsPath::new(file);
    relative
        .components()
        .all(|component| matches!(component, Component::Normal(_)))
        .then(|| dir.join(relative))
}

fn content_type(path: &FsPath) -> &'static str {
    match path.extension().and_then(|ext| ext.to_str()) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json") | Some("map") => "application/json",
        _ => "application/octet-stream",
    }
}

/// A host asks to serve `database`.
async fn attach(
    State(http): State<Arc<Http>>,
    Path(database): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Err(err) = validate_name(&database) {
        return refuse(StatusCode::BAD_REQUEST, &database, &err.message);
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let Some(presented) = query.get("token").map(String::as_str).or(bearer) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            &database,
            "no token: give one as ?token= or in an Authorization: Bearer header",
        );
    };
    let config = http.gateway.config();
    let registry = &http.gateway.registry;
    if let Err(reason) = token::verify(
        presented,
        &database,
        config.tunnel.secret.as_deref(),
        registry.tunnel_secret(&database).as_deref(),
    ) {
        return refuse(StatusCode::UNAUTHORIZED, &database, &reason);
    }
    let (slot, claim) = match registry.claim_host(&database) {
        Ok(claimed) => claimed,
        Err(reason) => return refuse(StatusCode::CONFLICT, &database, &reason),
    };
    let hello = json!({
        "type": "hello",
        "protocol": 1,
        "database": database,
        "connection_string": connection_string(http.postgres_addr, host_name(&headers), &database),
        "heartbeat_ms": config.tunnel.heartbeat.as_millis() as u64,
        "max_frame": config.tunnel.max_frame,
    });
    let max_frame = config.tunnel.max_frame;
    upgrade
        .max_frame_size(max_frame)
        .max_message_size(max_frame)
        .on_upgrade(move |socket| host(socket, http, database, slot, claim, hello))
}

fn refuse(status: StatusCode, database: &str, reason: &str) -> Response {
    warn!(
        "refused a host for database \"{database}\" ({}): {reason}",
        status.as_u16()
    );
    (status, format!("{reason}\n")).into_response()
}

/// Serves one attached host until it leaves.
async fn host(
    socket: WebSocket,
    http: Arc<Http>,
    database: String,
    slot: Arc<HostSlot>,
    claim: HostClaim,
    hello: serde_json::Value,
) {
    let config = http.gateway.config();
    let (engine_end, bridge_end) = tunnel::pipe();
    let context = BridgeContext {
        database: database.clone(),
        limits: BridgeLimits {
            heartbeat: config.tunnel.heartbeat,
            max_frame: config.tunnel.max_frame,
            idle_timeout: config.tunnel.idle_timeout,
            lifetime: config.tunnel.lifetime,
            max_message_len: config.max_message_len,
            max_copy: config.tunnel.max_copy,
        },
        hello,
        clients: slot.clients.subscribe(),
        shutdown: http.gateway.shutdown.subscribe(),
    };
    let bridge = tokio::spawn(bridge::run(socket, bridge_end, context));
    match tunnel::start_session(engine_end).await {
        Ok(mut session) => {
            session.statements = SessionStatements::with_limit(config.max_prepared_statements);
            http.gateway
                .registry
                .host_attached(&database, &slot, &claim, session);
            info!("a host attached for database \"{database}\"; its clients can connect");
        }
        Err(err) => {
            warn!("a host for database \"{database}\" could not be used: {err:#}");
            bridge.abort();
            return;
        }
    }
    let why = bridge
        .await
        .unwrap_or_else(|_| "its connection task ended".to_string());
    drop(claim);
    info!("the host of database \"{database}\" left: {why}");
}

/// The host name the host reached the gateway by (its `Host` header).
fn host_name(headers: &HeaderMap) -> Option<&str> {
    let authority: &str = headers.get(header::HOST)?.to_str().ok()?;
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    (!host.is_empty()).then_some(host)
}

/// How a client reaches `database` through the gateway: at the Postgres
/// address, or, when that listens on every interface, at the host name the
/// host used.
fn connection_string(
    addr: Option<SocketAddr>,
    host_name: Option<&str>,
    database: &str,
) -> Option<String> {
    let addr = addr?;
    let host = match host_name {
        Some(name) if addr.ip().is_unspecified() => format!("{name}:{}", addr.port()),
        _ => addr.to_string(),
    };
    let encoded: String = database
        .bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    Some(format!("postgres://postgres@{host}/{encoded}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_outside_the_pglite_directory_are_not_served() {
        let dir = FsPath::new("/srv/pglite");
        assert_eq!(
            inside(dir, "index.js"),
            Some(PathBuf::from("/srv/pglite/index.js"))
        );
        assert_eq!(inside(dir, "../secret"), None);
        assert_eq!(inside(dir, "/etc/passwd"), None);
        assert_eq!(inside(dir, "a/../../b"), None);
    }

    #[test]
    fn connection_strings_encode_the_database_name() {
        let addr = "127.0.0.1:5432".parse().ok();
        assert_eq!(
            connection_string(addr, Some("ignored"), "my app").as_deref(),
            Some("postgres://postgres@127.0.0.1:5432/my%20app")
        );
    }

    #[test]
    fn a_gateway_on_every_interface_is_named_as_the_host_reached_it() {
        let addr = "0.0.0.0:5432".parse().ok();
        let mut headers = HeaderMap::new();
        for (host, expected) in [
            ("db.example.com:8080", "db.example.com:5432"),
            ("db.example.com", "db.example.com:5432"),
            ("[::1]:8080", "[::1]:5432"),
        ] {
            headers.insert(header::HOST, host.parse().unwrap());
            assert_eq!(
                connection_string(addr, host_name(&headers), "app").as_deref(),
                Some(format!("postgres://postgres@{expected}/app").as_str())
            );
        }
    }
}
