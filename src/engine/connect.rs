//! Opening engine sessions for engines that can open more than one (an
//! upstream server), and waiting for a server that is unreachable for a while.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::EngineSession;

/// Opens a new engine session, for engines that can (an upstream server).
pub type Connect = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<EngineSession>> + Send>> + Send + Sync,
>;

/// Opens a session, trying again with growing pauses while the server is
/// unreachable (restarting, say), until it succeeds or `abandoned` says no
/// one waits for it any more; a waiting client's own wait timeout ends the
/// wait.
pub async fn connect_retrying(
    connect: &Connect,
    abandoned: impl Fn() -> bool,
) -> Option<EngineSession> {
    let mut pause = Duration::from_millis(100);
    let mut failures = 0u32;
    loop {
        match connect().await {
            Ok(session) => {
                if failures > 0 {
                    info!("the engine is reachable again");
                }
                return Some(session);
            }
            Err(err) => {
                if failures.is_multiple_of(20) {
                    warn!("could not open an engine session: {err:#}; trying again");
                }
                failures += 1;
            }
        }
        if abandoned() {
            return None;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}
