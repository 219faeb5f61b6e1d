//! When a client leaves: the engine session is left as a new connection
//! would find it (no transaction, no half-finished sequence, none of its own
//! statements, LISTENs or reserved state).

use std::io;

use tracing::{error, warn};

use crate::session::{cleanup, pinning};

use super::Client;

impl Client {
    /// Leaves the engine session as a new connection would find it.
    pub(super) async fn clean_up(mut self) {
        let statements = self.names.own_statements();
        let notifier = self.ctx.database.notifier.clone();
        let listened = notifier.unregister(self.ctx.key.process_id);
        if self.lease.is_none() && statements.is_empty() && !listened {
            return;
        }
        let mut lease = match self.lease.take() {
            Some(lease) => lease,
            None => self.ctx.database.scheduler.lease().await,
        };
        let Some(engine) = lease.session.as_mut() else {
            return;
        };
        let result = async {
            engine.send(&self.to_engine).await?;
            let hidden = self.replies.hidden_pending();
            cleanup::after_client(engine, &self.unit, hidden, &statements).await?;
            if self.pinned || self.state_may_change {
                engine
                    .run_collecting(&cleanup::query(pinning::RELEASE))
                    .await?;
            }
            Ok::<_, io::Error>(())
        }
        .await;
        if (listened || self.listens_may_change) && result.is_ok() {
            // LISTENs live on the listener session (the same one unless the
            // engine is pooled).
            drop(lease);
            let mut listener = self.ctx.database.scheduler.lease_listener().await;
            if let Some(engine) = listener.session.as_mut()
                && let Err(err) = notifier.reconcile(engine, None, &[]).await
            {
                warn!("could not drop a departed client's LISTENs: {err}");
                listener.session = None;
            }
            return;
        }
        if let Err(err) = result {
            error!(
                client = self.ctx.key.process_id,
                "the engine session failed while cleaning up after a client: {err}; clients of database \"{}\" get errors until pgshare is restarted",
                self.ctx.database.name
            );
            lease.session = None;
        }
    }
}
