//! The tunnel engine: a PGlite that lives elsewhere (a browser tab, a Node
//! process) and attaches to the gateway over a WebSocket as the *host* of one
//! database. The host runs whatever frontend messages it is sent and answers
//! with the backend messages; the gateway treats that as one engine session,
//! multiplexed like any other. `docs/tunnel-protocol.md` describes the wire
//! protocol.

pub mod bridge;
mod requests;
pub mod slot;
pub mod token;

use std::time::Duration;

use anyhow::Context;
use tokio::io::DuplexStream;

use crate::engine::EngineSession;
use crate::session::cleanup::query;

/// Bytes the pipe between the engine session and the bridge buffers.
const PIPE_CAPACITY: usize = 256 * 1024;
/// How long a host may take to answer the startup and reset requests.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The two ends of the pipe between an engine session and its bridge.
pub fn pipe() -> (DuplexStream, DuplexStream) {
    tokio::io::duplex(PIPE_CAPACITY)
}

/// Logs in on the host's PGlite through the bridge and resets the session,
/// which a host attached before may have left in any state.
pub async fn start_session(engine_end: DuplexStream) -> anyhow::Result<EngineSession> {
    let start = async {
        let (reader, writer) = tokio::io::split(engine_end);
        let mut session = EngineSession::start(
            Box::new(reader),
            Box::new(writer),
            "postgres",
            "postgres",
            None,
        )
        .await
        .context("log in on the host's database")?;
        let mut reset = query(b"ROLLBACK");
        reset.extend_from_slice(&query(b"DISCARD ALL"));
        session
            .run_discarding(&reset, 2)
            .await
            .context("reset the host's session")?;
        anyhow::Ok(session)
    };
    tokio::time::timeout(STARTUP_TIMEOUT, start)
        .await
        .context("the host did not answer the startup in time")?
}
