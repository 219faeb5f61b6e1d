//! `SHOW POOLS`: one row per open database (a pool is a database's engine
//! sessions, shared by all its users), in PgBouncer's columns: clients
//! active and waiting, sessions active and idle, the longest current wait.
//! pgshare's own columns follow: what serves the database, the units of work
//! queued for its engine, the average wait since pgshare started, and the
//! client that took the shared engine last, since when and in which state.

use crate::activity::ClientState;
use crate::gateway::Gateway;

use super::overview::{self, DatabaseView};
use super::result_set::{Cell, ResultSet, Type};

pub fn show(gateway: &Gateway) -> ResultSet {
    let mut set = ResultSet::new(&[
        ("database", Type::Text),
        ("user", Type::Text),
        ("cl_active", Type::Int4),
        ("cl_waiting", Type::Int4),
        ("cl_active_cancel_req", Type::Int4),
        ("cl_waiting_cancel_req", Type::Int4),
        ("sv_active", Type::Int4),
        ("sv_active_cancel", Type::Int4),
        ("sv_being_canceled", Type::Int4),
        ("sv_idle", Type::Int4),
        ("sv_used", Type::Int4),
        ("sv_tested", Type::Int4),
        ("sv_login", Type::Int4),
        ("maxwait", Type::Int4),
        ("maxwait_us", Type::Int4),
        ("pool_mode", Type::Text),
        ("load_balance_hosts", Type::Text),
        ("engine", Type::Text),
        ("queue_length", Type::Int4),
        ("avg_wait_us", Type::Int8),
        ("holder", Type::Int4),
        ("held_since", Type::Timestamp),
        ("held_state", Type::Text),
    ]);
    for database in overview::databases(gateway) {
        if database.open.is_some() {
            set.push(row(gateway, &database));
        }
    }
    set
}

fn row(gateway: &Gateway, database: &DatabaseView) -> Vec<Cell> {
    let waiting = database
        .clients
        .iter()
        .filter(|client| client.state() == ClientState::Waiting)
        .count();
    let max_wait = database
        .clients
        .iter()
        .map(|client| client.waited_micros())
        .max()
        .unwrap_or(0);
    let (sv_active, sv_idle) = database.sessions();
    let live = database.activity.live();
    let totals = database.activity.totals();
    let clock = gateway.activity.clock();
    // A pool has no one holder: SHOW SERVERS shows each session's.
    let holder = live.holder.filter(|_| !database.activity.is_pooled());
    vec![
        (&database.name).into(),
        database.engine_user().into(),
        (database.clients.len() - waiting).into(),
        waiting.into(),
        0.into(),
        0.into(),
        sv_active.into(),
        0.into(),
        0.into(),
        sv_idle.into(),
        0.into(),
        0.into(),
        0.into(),
        ((max_wait / 1_000_000) as i64).into(),
        ((max_wait % 1_000_000) as i64).into(),
        "transaction".into(),
        Cell::NULL,
        database.kind.into(),
        live.waiting.into(),
        (totals.wait_time / totals.waits.max(1)).into(),
        holder.map(|holder| holder.client).into(),
        holder.map(|holder| clock.wall(holder.since)).into(),
        holder
            .and_then(|holder| gateway.activity.client(holder.client))
            .map(|client| client.state().name())
            .into(),
    ]
}
