//! `SHOW DATABASES`: every database pgshare serves or knows of, in
//! PgBouncer's columns (the server behind it, pool sizes, connections,
//! whether it is paused), then pgshare's own: what serves it.

use crate::gateway::Gateway;

use super::overview::{self, DatabaseView};
use super::result_set::{Cell, ResultSet, Type};

pub fn show(gateway: &Gateway) -> ResultSet {
    let mut set = ResultSet::new(&[
        ("name", Type::Text),
        ("host", Type::Text),
        ("port", Type::Int4),
        ("database", Type::Text),
        ("force_user", Type::Text),
        ("pool_size", Type::Int4),
        ("min_pool_size", Type::Int4),
        ("reserve_pool_size", Type::Int4),
        ("server_lifetime", Type::Int4),
        ("pool_mode", Type::Text),
        ("load_balance_hosts", Type::Text),
        ("max_connections", Type::Int4),
        ("current_connections", Type::Int4),
        ("max_client_connections", Type::Int4),
        ("current_client_connections", Type::Int4),
        ("paused", Type::Int4),
        ("disabled", Type::Int4),
        ("engine", Type::Text),
    ]);
    for database in overview::databases(gateway) {
        set.push(row(&database));
    }
    set
}

fn row(database: &DatabaseView) -> Vec<Cell> {
    let (host, port, server_database, lifetime) = match &database.upstream {
        Some((upstream, pool)) => {
            let (host, port) = upstream.address();
            (
                Some(host),
                Some(port),
                upstream.database().to_string(),
                pool.lifetime.map_or(0, |lifetime| lifetime.as_secs()),
            )
        }
        None => (None, None, database.name.clone(), 0),
    };
    vec![
        (&database.name).into(),
        host.into(),
        port.into(),
        server_database.into(),
        database.engine_user().into(),
        database.pool_size().into(),
        0.into(),
        0.into(),
        lifetime.into(),
        "transaction".into(),
        Cell::NULL,
        database.pool_size().into(),
        {
            let (active, idle) = database.sessions();
            active + idle
        }
        .into(),
        0.into(),
        database.clients.len().into(),
        database.activity.is_paused().into(),
        0.into(),
        database.kind.into(),
    ]
}
