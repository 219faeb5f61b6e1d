//! Cancel keys: each client gets a process id and secret in `BackendKeyData`,
//! and a `CancelRequest` carrying both, on another connection, reaches it here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::engine::cancel::ServerCancel;

/// What a cancel request can reach of one client.
#[derive(Default)]
pub struct CancelTarget {
    notify: Notify,
    waiting: AtomicBool,
    /// The server session the client holds now, when it can be cancelled.
    running: Mutex<Option<ServerCancel>>,
}

impl CancelTarget {
    /// Runs `wait` as a wait for the lease that a cancel request interrupts;
    /// returns `None` when cancelled.
    pub async fn cancellable<T>(&self, wait: impl Future<Output = T>) -> Option<T> {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        self.waiting.store(true, Ordering::SeqCst);
        let result = tokio::select! {
            value = wait => Some(value),
            _ = notified => None,
        };
        self.waiting.store(false, Ordering::SeqCst);
        result
    }

    /// Records the server session the client holds (`None` once released).
    pub fn set_running(&self, session: Option<ServerCancel>) {
        *self
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = session;
    }

    /// Interrupts the client's wait, or else the statement it runs on a
    /// server session.
    fn cancel(&self) -> CancelOutcome {
        if self.waiting.load(Ordering::SeqCst) {
            self.notify.notify_waiters();
            return CancelOutcome::RemovedFromQueue;
        }
        let running = self
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        match running {
            Some(server) => {
                tokio::spawn(async move {
                    if let Err(err) = server.send().await {
                        tracing::warn!("forwarding a cancel request to the server failed: {err}");
                    }
                });
                CancelOutcome::ForwardedToServer
            }
            None => CancelOutcome::NotWaiting,
        }
    }
}

pub struct CancelKey {
    pub process_id: i32,
    pub secret_key: i32,
}

#[derive(Default)]
pub struct CancelRegistry {
    next_process_id: AtomicI32,
    targets: Mutex<HashMap<i32, (i32, Arc<CancelTarget>)>>,
}

/// What a cancel request found.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The client was waiting for the engine; its work was dropped.
    RemovedFromQueue,
    /// The client holds an upstream server session: the server was asked to
    /// cancel what runs there.
    ForwardedToServer,
    /// The client is running on the engine or idle; nothing was waiting.
    NotWaiting,
    /// No client has this key.
    UnknownKey,
}

impl CancelRegistry {
    pub fn new() -> Self {
        Self {
            next_process_id: AtomicI32::new(1000),
            targets: Mutex::new(HashMap::new()),
        }
    }

    /// Issues a key for a new client.
    pub fn register(&self) -> (CancelKey, Arc<CancelTarget>) {
        let process_id = self.next_process_id.fetch_add(1, Ordering::Relaxed);
        let secret_key = rand::random::<i32>();
        let target = Arc::new(CancelTarget::default());
        self.lock().insert(process_id, (secret_key, target.clone()));
        (
            CancelKey {
                process_id,
                secret_key,
            },
            target,
        )
    }

    pub fn unregister(&self, process_id: i32) {
        self.lock().remove(&process_id);
    }

    pub fn cancel(&self, process_id: i32, secret_key: i32) -> CancelOutcome {
        let target = match self.lock().get(&process_id) {
            Some((secret, target)) if *secret == secret_key => target.clone(),
            _ => return CancelOutcome::UnknownKey,
        };
        target.cancel()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, (i32, Arc<CancelTarget>)>> {
        self.targets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancel_interrupts_only_a_waiting_client_with_the_right_secret() {
        let registry = CancelRegistry::new();
        let (key, target) = registry.register();
        assert_eq!(
            registry.cancel(key.process_id, key.secret_key),
            CancelOutcome::NotWaiting
        );
        assert_eq!(
            registry.cancel(key.process_id, key.secret_key.wrapping_add(1)),
            CancelOutcome::UnknownKey
        );
        let waiter = {
            let target = target.clone();
            tokio::spawn(async move { target.cancellable(std::future::pending::<()>()).await })
        };
        while registry.cancel(key.process_id, key.secret_key) != CancelOutcome::RemovedFromQueue {
            tokio::task::yield_now().await;
        }
        assert_eq!(waiter.await.unwrap(), None);
        registry.unregister(key.process_id);
        assert_eq!(
            registry.cancel(key.process_id, key.secret_key),
            CancelOutcome::UnknownKey
        );
    }
}
