//! A pool of upstream server sessions that clients take directly: each unit
//! of work (a transaction, or one statement) runs on a session of its own,
//! taken when it starts and given back when it ends, as a transaction pooler
//! does. Up to `size` sessions exist; they open when the load needs them, and
//! a session found dead when taken is replaced at once, so a client that is
//! not inside a transaction never notices a server restart. Sessions older
//! than the lifetime are replaced when next idle; idle ones are closed after
//! the idle timeout.

use std::pin::pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tracing::warn;

use crate::engine::EngineSession;
use crate::engine::connect::{Connect, connect_retrying};
use crate::lease::Lease;

/// How many sessions, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    pub size: usize,
    pub lifetime: Option<Duration>,
    pub idle_timeout: Option<Duration>,
}

/// What the admin console shows of an idle session.
#[derive(Debug, Clone, Copy)]
pub struct IdleSession {
    /// The server process id from `BackendKeyData`.
    pub backend_pid: Option<i32>,
    pub opened_at: Instant,
    pub idle_since: Instant,
    pub prepared_statements: usize,
}

/// A session waiting in the pool, and since when.
struct Idle {
    session: EngineSession,
    since: Instant,
}

pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    /// One permit per session that may be in use; waiters are served FIFO.
    permits: Arc<Semaphore>,
    connect: Connect,
    limits: PoolLimits,
}

impl Pool {
    pub fn new(first: EngineSession, connect: Connect, limits: PoolLimits) -> Arc<Self> {
        let pool = Arc::new(Self {
            idle: Mutex::new(vec![Idle {
                session: first,
                since: Instant::now(),
            }]),
            permits: Arc::new(Semaphore::new(limits.size.max(1))),
            connect,
            limits,
        });
        if let Some(timeout) = limits.idle_timeout {
            tokio::spawn(close_idle(Arc::downgrade(&pool), timeout));
        }
        pool
    }

    /// Waits for a free session (or room for a new one) and lends it.
    pub async fn lease(self: &Arc<Self>) -> Lease {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return Lease::new(None, |_| {});
        };
        let session = match self.take_idle() {
            Some(session) => Some(session),
            // The client's query_wait_timeout bounds the wait.
            None => connect_retrying(&self.connect, || false).await,
        };
        let pool = self.clone();
        Lease::new(session, move |session| {
            if let Some(session) = session
                && !pool.expired(&session)
            {
                pool.lock().push(Idle {
                    session,
                    since: Instant::now(),
                });
            }
            drop(permit);
        })
    }

    /// The sessions waiting in the pool now.
    pub fn idle_sessions(&self) -> Vec<IdleSession> {
        self.lock()
            .iter()
            .map(|idle| IdleSession {
                backend_pid: idle.session.backend_key.map(|(pid, _)| pid),
                opened_at: idle.session.opened_at,
                idle_since: idle.since,
                prepared_statements: idle.session.statements.len(),
            })
            .collect()
    }

    /// Sessions that may exist at once.
    pub fn size(&self) -> usize {
        self.limits.size.max(1)
    }

    /// Sessions lent to units of work now (or being opened for them).
    pub fn in_use(&self) -> usize {
        self.size().saturating_sub(self.permits.available_permits())
    }

    /// An idle session that is still usable; dead ones are dropped.
    fn take_idle(&self) -> Option<EngineSession> {
        let mut idle = self.lock();
        while let Some(Idle { mut session, .. }) = idle.pop() {
            if self.expired(&session) {
                continue;
            }
            if is_alive(&mut session) {
                return Some(session);
            }
            warn!("a pooled server session was closed by the server; replacing it");
        }
        None
    }

    /// Older than the lifetime: to be closed rather than used again.
    fn expired(&self, session: &EngineSession) -> bool {
        self.limits
            .lifetime
            .is_some_and(|lifetime| session.opened_at.elapsed() >= lifetime)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Closes sessions idle for longer than `timeout`, until the pool is gone.
async fn close_idle(pool: Weak<Pool>, timeout: Duration) {
    let period = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else { return };
        pool.lock().retain(|idle| idle.since.elapsed() < timeout);
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
