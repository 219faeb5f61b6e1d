//! Live queries: the rows of a query, kept current in browsers as the
//! database changes, compatible with pg_reactive.
//!
//! `pgr.subscribe(query_id, query)` in any database registers one (see
//! `schema.sql`, installed by `install`); each open database has a `hub`
//! that recomputes its queries after commits and publishes what changed
//! (also as `NOTIFY pgr`); each query's `feed` holds those messages for the
//! WebSockets and event streams the HTTP port serves (`endpoints`), behind
//! the checks of `auth` and `admission`.

pub mod admission;
pub mod auth;
pub mod endpoints;
pub mod events;
pub mod feed;
pub mod frames;
pub mod hub;
pub mod install;
pub mod result;
pub mod statements;
pub mod websocket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tracing::warn;

use crate::gateway::Gateway;

use admission::Admission;
use hub::{Hub, HubStats};

/// Every database's hub, and the places for subscribers.
pub struct Realtime {
    hubs: Arc<Mutex<HashMap<String, Weak<Hub>>>>,
    admission: Admission,
}

impl Realtime {
    /// Starts a hub in every database as it opens, unless live queries are
    /// off.
    pub fn start(gateway: &Arc<Gateway>) -> Option<Arc<Self>> {
        let config = gateway.config();
        if !config.realtime.enabled {
            return None;
        }
        match (&config.http, &config.realtime.secret) {
            (Some(addr), None) if addr.ip().is_loopback() => warn!(
                "live queries are open to anyone who reaches {addr}: set --realtime-secret before serving them on another address"
            ),
            (Some(addr), None) => warn!(
                "live queries are not served at {addr}: without --realtime-secret they are served on loopback only"
            ),
            _ => {}
        }
        let hubs: Arc<Mutex<HashMap<String, Weak<Hub>>>> = Arc::default();
        let max_message = config.realtime.max_message;
        let started = hubs.clone();
        // Hubs run beside the clients, whichever thread opens a database
        // (the HTTP port's opens one for a subscriber).
        let runtime = tokio::runtime::Handle::current();
        gateway.registry.on_open(move |database| {
            let hub = Hub::start(database, max_message, &runtime);
            let mut hubs = lock(&started);
            hubs.retain(|_, hub| hub.strong_count() > 0);
            hubs.insert(database.name.clone(), Arc::downgrade(&hub));
        });
        Some(Arc::new(Self {
            hubs,
            admission: Admission::new(config.realtime.max_connections),
        }))
    }

    /// The hub of open database `name`.
    pub fn hub(&self, name: &str) -> Option<Arc<Hub>> {
        lock(&self.hubs).get(name).and_then(Weak::upgrade)
    }

    /// Every open database's live queries, for the metrics.
    pub fn stats(&self) -> Vec<(String, HubStats)> {
        let hubs: Vec<(String, Arc<Hub>)> = lock(&self.hubs)
            .iter()
            .filter_map(|(name, hub)| Some((name.clone(), hub.upgrade()?)))
            .collect();
        hubs.into_iter()
            .map(|(name, hub)| (name, hub.stats()))
            .collect()
    }
}

fn lock(
    hubs: &Mutex<HashMap<String, Weak<Hub>>>,
) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Hub>>> {
    hubs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
