//! `SHOW SERVERS`: the engine sessions, in PgBouncer's columns: each session
//! of an upstream pool, idle or lent to a client, and the one shared engine
//! of every other open database. pgshare's own columns follow: what serves
//! the database, and the client that holds the session, since when and in
//! which state.

use std::time::SystemTime;

use crate::activity::{Clock, SessionSeen};
use crate::gateway::Gateway;

use super::overview::{self, DatabaseView};
use super::result_set::{Cell, ResultSet, Type};
use super::show_clients::{SOCKET_COLUMNS, client_ptr, server_ptr};

/// A session and who holds it.
struct Server<'a> {
    database: &'a DatabaseView,
    active: bool,
    backend_pid: Option<i32>,
    connect_time: Option<SystemTime>,
    request_time: Option<SystemTime>,
    prepared_statements: usize,
    holder: Option<(i32, SystemTime)>,
}

pub fn show(gateway: &Gateway) -> ResultSet {
    let mut columns = SOCKET_COLUMNS.to_vec();
    columns.extend([
        ("engine", Type::Text),
        ("holder", Type::Int4),
        ("held_since", Type::Timestamp),
        ("held_state", Type::Text),
    ]);
    let mut set = ResultSet::new(&columns);
    let clock = gateway.activity.clock();
    let databases = overview::databases(gateway);
    for database in &databases {
        for server in servers(database, clock) {
            set.push(row(gateway, &server));
        }
    }
    set
}

fn servers(database: &DatabaseView, clock: Clock) -> Vec<Server<'_>> {
    let Some(open) = &database.open else {
        return Vec::new();
    };
    let wall = |micros: u64| clock.wall(micros);
    let Some(pool) = open.scheduler.pool() else {
        if !open.engine_present() {
            return Vec::new();
        }
        let live = database.activity.live();
        let session: Option<SessionSeen> = live.session;
        return vec![Server {
            database,
            active: live.active > 0,
            backend_pid: session.and_then(|session| session.backend_pid),
            connect_time: session.map(|session| wall(session.opened_at)),
            request_time: live.holder.map(|holder| wall(holder.since)),
            prepared_statements: 0,
            holder: live
                .holder
                .map(|holder| (holder.client, wall(holder.since))),
        }];
    };
    let mut servers: Vec<Server<'_>> = database
        .clients
        .iter()
        .filter(|client| client.state().holds_engine())
        .map(|client| {
            let session = client.session();
            Server {
                database,
                active: true,
                backend_pid: session.and_then(|session| session.backend_pid),
                connect_time: session.map(|session| wall(session.opened_at)),
                request_time: Some(client.state_since()),
                prepared_statements: 0,
                holder: Some((client.info.id, client.state_since())),
            }
        })
        .collect();
    servers.extend(pool.idle_sessions().into_iter().map(|idle| Server {
        database,
        active: false,
        backend_pid: idle.backend_pid,
        connect_time: Some(wall(clock.at(idle.opened_at))),
        request_time: Some(wall(clock.at(idle.idle_since))),
        prepared_statements: idle.prepared_statements,
        holder: None,
    }));
    servers
}

fn row(gateway: &Gateway, server: &Server<'_>) -> Vec<Cell> {
    let database = server.database;
    let (host, port) = match &database.upstream {
        Some((upstream, _)) => {
            let (host, port) = upstream.address();
            (Some(host), Some(port))
        }
        None => (None, None),
    };
    let holder = server
        .holder
        .and_then(|(id, since)| Some((gateway.activity.client(id)?, since)));
    let pooled = database
        .open
        .as_ref()
        .is_some_and(|open| open.scheduler.pool().is_some());
    vec![
        "S".into(),
        database.engine_user().into(),
        (&database.name).into(),
        "none".into(),
        if server.active { "active" } else { "idle" }.into(),
        host.into(),
        port.into(),
        Cell::NULL,
        Cell::NULL,
        server.connect_time.into(),
        server.request_time.into(),
        0.into(),
        0.into(),
        0.into(),
        server_ptr(&database.name, pooled, server.backend_pid).into(),
        holder
            .as_ref()
            .map(|(client, _)| client_ptr(client.info.id))
            .unwrap_or_default()
            .into(),
        server.backend_pid.unwrap_or(0).into(),
        "".into(),
        holder
            .as_ref()
            .map(|(client, _)| client.application_name())
            .unwrap_or_default()
            .into(),
        server.prepared_statements.into(),
        server.backend_pid.unwrap_or(0).into(),
        database.kind.into(),
        holder.as_ref().map(|(client, _)| client.info.id).into(),
        holder.as_ref().map(|(_, since)| *since).into(),
        holder
            .as_ref()
            .map(|(client, _)| client.state().name())
            .into(),
    ]
}
