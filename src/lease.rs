//! A lease: an engine session lent to one client for a unit of work, given
//! back (or reported broken) when the lease is dropped. The scheduler lends
//! the one session of a shared engine this way, the pool its sessions.

use crate::engine::EngineSession;

/// The engine session, lent to one client until dropped. `session` is `None`
/// when the engine failed or was shut down; setting it to `None` reports the
/// session broken.
pub struct Lease {
    pub session: Option<EngineSession>,
    /// Gives the session back when the lease ends.
    home: Option<Box<dyn FnOnce(Option<EngineSession>) + Send>>,
}

impl Lease {
    pub fn new(
        session: Option<EngineSession>,
        home: impl FnOnce(Option<EngineSession>) + Send + 'static,
    ) -> Self {
        Self {
            session,
            home: Some(Box::new(home)),
        }
    }

    /// A lease of no session: the engine is gone.
    pub fn none() -> Self {
        Self {
            session: None,
            home: None,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            home(self.session.take());
        }
    }
}
