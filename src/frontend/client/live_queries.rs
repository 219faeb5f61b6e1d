//! Schema `pgr` of live queries, created on the client's own engine session
//! right before the first statement of a database that names it (see
//! `realtime::install`).

use std::sync::atomic::Ordering;

use tracing::{debug, info};

use crate::realtime::install;

use super::{Client, End};

impl Client {
    /// Whether the next statements name schema pgr in a database that does
    /// not have it yet.
    pub(super) fn needs_live_queries_schema(&self) -> bool {
        self.ctx.config.realtime.enabled
            && !self.ctx.database.realtime_installed.load(Ordering::SeqCst)
            && install::names_schema(self.pending.iter().map(|message| &message[..]))
    }

    /// Installs schema pgr before the pending statements when they need it
    /// and everything sent before is answered. Outside a transaction it is
    /// then there for good; inside one, it goes with a rollback.
    pub(super) async fn install_live_queries_schema(&mut self) -> Result<(), End> {
        if !self.to_engine.is_empty() || !self.unit.answered() || !self.needs_live_queries_schema()
        {
            return Ok(());
        }
        let database = self.ctx.database.clone();
        let Some(engine) = self.lease.as_mut().and_then(|lease| lease.session.as_mut()) else {
            return Ok(());
        };
        let installed = install::install(engine).await.map_err(End::Engine)?;
        database.realtime_wake.notify_one();
        match installed {
            Ok(()) if engine.status() == b'I' => {
                database.realtime_installed.store(true, Ordering::SeqCst);
                info!(
                    "database \"{}\": schema pgr of live queries installed",
                    database.name
                );
            }
            Ok(()) => {}
            // The client's statement fails or not on its own.
            Err(err) => debug!(
                "database \"{}\": schema pgr could not be installed: {err}",
                database.name
            ),
        }
        Ok(())
    }
}
