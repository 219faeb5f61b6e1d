//! A pool of upstream server sessions that clients take directly: each unit
//! of work (a transaction, or one statement) runs on a session of its own,
//! taken when it starts and given back when it ends, as a transaction pooler
//! does. Up to `size` sessions exist; they open when the load needs them, and
//! a session found dead when taken is replaced at once, so a client that is
//! not inside a transaction never notices a server restart.

use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::sync::Semaphore;
use tracing::warn;

use crate::engine::EngineSession;
use crate::scheduler::{Connect, Lease};

pub struct Pool {
    idle: Mutex<Vec<EngineSession>>,
    /// One permit per session that may be in use; waiters are served FIFO.
    permits: Arc<Semaphore>,
    connect: Connect,
}

impl Pool {
    pub fn new(first: EngineSession, connect: Connect, size: usize) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(vec![first]),
            permits: Arc::new(Semaphore::new(size.max(1))),
            connect,
        })
    }

    /// Waits for a free session (or room for a new one) and lends it.
    pub async fn lease(self: &Arc<Self>) -> Lease {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return Lease::new(None, |_| {});
        };
        let session = match self.take_idle() {
            Some(session) => Some(session),
            None => match (self.connect)().await {
                Ok(session) => Some(session),
                Err(err) => {
                    warn!("could not open a server session: {err:#}");
                    None
                }
            },
        };
        let pool = self.clone();
        Lease::new(session, move |session| {
            if let Some(session) = session {
                pool.lock().push(session);
            }
            drop(permit);
        })
    }

    /// An idle session that is still usable; dead ones are dropped.
    fn take_idle(&self) -> Option<EngineSession> {
        let mut idle = self.lock();
        while let Some(mut session) = idle.pop() {
            if is_alive(&mut session) {
                return Some(session);
            }
            warn!("a pooled server session was closed by the server; replacing it");
        }
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<EngineSession>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An idle session has nothing to say: if the server closed it, or sent
/// something (a termination notice), it is not fit for a new unit of work.
fn is_alive(session: &mut EngineSession) -> bool {
    let mut read = pin!(session.input.fill());
    matches!(
        read.as_mut().poll(&mut Context::from_waker(Waker::noop())),
        Poll::Pending
    )
}
