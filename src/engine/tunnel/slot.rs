//! Where a database's host, when one is attached, hands its engine session to
//! the database. One host at a time: a claim is held for as long as the host's
//! WebSocket is open, and a session it offered but nobody took goes with it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::engine::EngineSession;

#[derive(Default)]
struct State {
    attached: bool,
    /// Opened on the attached host and not yet taken by the database.
    offered: Option<EngineSession>,
}

pub struct HostSlot {
    state: Mutex<State>,
    offered: Notify,
    /// The database's own secret, a token for it besides the tunnel secret's.
    pub secret: Option<String>,
    /// Clients connected to the database now, for the host to show.
    pub clients: watch::Sender<usize>,
}

/// The right to be the database's host, until dropped.
pub struct HostClaim {
    slot: std::sync::Arc<HostSlot>,
}

impl HostSlot {
    pub fn new(secret: Option<String>) -> Self {
        Self {
            state: Mutex::default(),
            offered: Notify::new(),
            secret,
            clients: watch::Sender::new(0),
        }
    }

    /// Claims the slot for a new host, unless one is attached.
    pub fn claim(self: &std::sync::Arc<Self>) -> Option<HostClaim> {
        let mut state = self.lock();
        if state.attached {
            return None;
        }
        state.attached = true;
        Some(HostClaim { slot: self.clone() })
    }

    pub fn is_attached(&self) -> bool {
        self.lock().attached
    }

    /// The attached host's session, waiting up to `wait` for a host to attach
    /// and open one.
    pub async fn take(&self, wait: Duration) -> Option<EngineSession> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let offered = self.offered.notified();
            if let Some(session) = self.lock().offered.take() {
                return Some(session);
            }
            if tokio::time::timeout_at(deadline, offered).await.is_err() {
                return None;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl HostClaim {
    /// Offers the host's engine session to the database.
    pub fn offer(&self, session: EngineSession) {
        self.slot.lock().offered = Some(session);
        self.slot.offered.notify_waiters();
    }
}

impl Drop for HostClaim {
    fn drop(&mut self) {
        let mut state = self.slot.lock();
        state.attached = false;
        state.offered = None;
    }
}
