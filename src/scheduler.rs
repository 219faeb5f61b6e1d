//! Leases of one engine session, granted first come, first served.
//!
//! A client holds the lease for a whole unit of work (see `session::unit`); all
//! others wait in FIFO order. tokio's mutex is fair, so its wait list is the
//! queue, and an owned guard is the lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::engine::EngineSession;

/// The right to run work on the engine session until dropped.
pub type Lease = OwnedMutexGuard<EngineSlot>;

/// The engine session, or nothing once it failed or was shut down.
pub struct EngineSlot {
    pub session: Option<EngineSession>,
}

pub struct Scheduler {
    slot: Arc<Mutex<EngineSlot>>,
    waiting: AtomicUsize,
}

impl Scheduler {
    pub fn new(session: EngineSession) -> Self {
        Self {
            slot: Arc::new(Mutex::new(EngineSlot {
                session: Some(session),
            })),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits for the lease, behind everyone who asked earlier.
    pub async fn lease(&self) -> Lease {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let lease = self.slot.clone().lock_owned().await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        lease
    }

    /// How many clients are waiting for the lease now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}
