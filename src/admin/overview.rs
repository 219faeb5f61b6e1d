//! The databases the console reports on, each with what serves it (the open
//! database in the registry, the upstream server from the configuration)
//! and its activity record.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::activity::{ClientActivity, DatabaseActivity};
use crate::config::{Config, UpstreamPool};
use crate::database::Database;
use crate::engine::upstream::Upstream;
use crate::gateway::Gateway;

/// One database as the console shows it.
pub struct DatabaseView {
    pub name: String,
    /// The database when it is open now.
    pub open: Option<Arc<Database>>,
    pub activity: Arc<DatabaseActivity>,
    /// `embedded`, `upstream` or `tunnel`.
    pub kind: &'static str,
    /// The server behind an upstream database, and its pool.
    pub upstream: Option<(Upstream, UpstreamPool)>,
    /// Its connected clients.
    pub clients: Vec<Arc<ClientActivity>>,
}

impl DatabaseView {
    /// The role sessions of its engine log in as.
    pub fn engine_user(&self) -> String {
        match &self.upstream {
            Some((upstream, _)) => upstream.user().to_string(),
            None => "postgres".to_string(),
        }
    }

    /// Engine sessions it may have at once.
    pub fn pool_size(&self) -> usize {
        match &self.open {
            Some(open) => open.scheduler.pool().map_or(1, |pool| pool.size()),
            None => self.upstream.as_ref().map_or(1, |(_, pool)| pool.size),
        }
    }

    /// Engine sessions in use and idle now.
    pub fn sessions(&self) -> (usize, usize) {
        let Some(open) = &self.open else {
            return (0, 0);
        };
        match open.scheduler.pool() {
            Some(pool) => (pool.in_use(), pool.idle_sessions().len()),
            None if !open.engine_present() => (0, 0),
            None if self.activity.live().active > 0 => (1, 0),
            None => (0, 1),
        }
    }
}

/// Every database pgshare serves or knows of, by name: open ones, those on
/// disk, the configured upstream and tunnel databases, and any an
/// administrator paused before it opened.
pub fn databases(gateway: &Gateway) -> Vec<DatabaseView> {
    let config = gateway.config();
    let registry = &gateway.registry;
    let open = registry.open_databases();
    let tunnels = registry.tunnel_databases();
    let mut names: BTreeSet<String> = registry.names().into_iter().collect();
    names.extend(tunnels.iter().map(|(name, _)| name.clone()));
    names.extend(
        gateway
            .activity
            .databases()
            .iter()
            .map(|activity| activity.name.clone()),
    );
    let clients = gateway.activity.client_list();
    names
        .into_iter()
        .map(|name| {
            let open = open.iter().find(|database| database.name == name).cloned();
            let kind = match &open {
                Some(database) => database.engine_kind(),
                None if tunnels.iter().any(|(tunnel, _)| *tunnel == name) => "tunnel",
                None if upstream_of(&config, &name).is_some() => "upstream",
                None => "embedded",
            };
            DatabaseView {
                activity: gateway.activity.database_entry(&name),
                upstream: upstream_of(&config, &name),
                clients: clients
                    .iter()
                    .filter(|client| client.info.database == name)
                    .cloned()
                    .collect(),
                name,
                open,
                kind,
            }
        })
        .collect()
}

/// The database named `name`, if pgshare knows it.
pub fn find(gateway: &Gateway, name: &str) -> Option<DatabaseView> {
    databases(gateway)
        .into_iter()
        .find(|database| database.name == name)
}

/// The upstream server and pool of database `name`, when one serves it.
fn upstream_of(config: &Config, name: &str) -> Option<(Upstream, UpstreamPool)> {
    if let Some(upstream) = &config.upstream
        && upstream.database() == name
    {
        return Some((
            upstream.clone(),
            UpstreamPool {
                size: config.pool_size,
                lifetime: config.server_lifetime,
                idle_timeout: config.server_idle_timeout,
            },
        ));
    }
    config
        .upstream_databases
        .iter()
        .find(|(served, _)| served == name)
        .map(|(_, database)| (database.upstream.clone(), database.pool))
}
