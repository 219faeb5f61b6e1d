//! `SHOW CLIENTS`: every connected client, the console's included, in
//! PgBouncer's columns, then pgshare's own: where its work stands
//! (`activity`: idle, waiting, running, in transaction, copy, reserved) and
//! since when.

use std::net::SocketAddr;

use crate::activity::{ClientActivity, ClientState};
use crate::gateway::Gateway;

use super::result_set::{Cell, ResultSet, Type};

/// The columns PgBouncer's `SHOW CLIENTS` and `SHOW SERVERS` share.
pub(super) const SOCKET_COLUMNS: [(&str, Type); 21] = [
    ("type", Type::Text),
    ("user", Type::Text),
    ("database", Type::Text),
    ("replication", Type::Text),
    ("state", Type::Text),
    ("addr", Type::Text),
    ("port", Type::Int4),
    ("local_addr", Type::Text),
    ("local_port", Type::Int4),
    ("connect_time", Type::Timestamp),
    ("request_time", Type::Timestamp),
    ("wait", Type::Int4),
    ("wait_us", Type::Int4),
    ("close_needed", Type::Int4),
    ("ptr", Type::Text),
    ("link", Type::Text),
    ("remote_pid", Type::Int4),
    ("tls", Type::Text),
    ("application_name", Type::Text),
    ("prepared_statements", Type::Int4),
    ("id", Type::Int4),
];

pub fn show(gateway: &Gateway) -> ResultSet {
    let mut columns = SOCKET_COLUMNS.to_vec();
    columns.extend([
        ("activity", Type::Text),
        ("activity_since", Type::Timestamp),
    ]);
    let mut set = ResultSet::new(&columns);
    for client in gateway.activity.client_list() {
        set.push(row(&client));
    }
    set
}

fn row(client: &ClientActivity) -> Vec<Cell> {
    let info = &client.info;
    let state = client.state();
    let waited = client.waited_micros();
    let (addr, port) = address(info.peer);
    let (local_addr, local_port) = address(info.local);
    let link = if state.holds_engine() {
        server_ptr(
            &info.database,
            client.database.is_pooled(),
            client.session().and_then(|session| session.backend_pid),
        )
    } else {
        String::new()
    };
    vec![
        "C".into(),
        (&info.user).into(),
        (&info.database).into(),
        "none".into(),
        pgbouncer_state(state).into(),
        addr.into(),
        port.into(),
        local_addr.into(),
        local_port.into(),
        client.connected_at.into(),
        client.last_request().into(),
        ((waited / 1_000_000) as i64).into(),
        ((waited % 1_000_000) as i64).into(),
        0.into(),
        client_ptr(info.id).into(),
        link.into(),
        0.into(),
        info.tls.clone().unwrap_or_default().into(),
        client.application_name().into(),
        0.into(),
        info.id.into(),
        state.name().into(),
        client.state_since().into(),
    ]
}

/// PgBouncer's client states: a client waits for a server, or is active
/// (linked to one, or idle with nothing to run).
fn pgbouncer_state(state: ClientState) -> &'static str {
    match state {
        ClientState::Waiting => "waiting",
        _ => "active",
    }
}

/// An address as PgBouncer shows it: IP and port, or `unix`.
fn address(addr: Option<SocketAddr>) -> (String, u16) {
    match addr {
        Some(addr) => (addr.ip().to_string(), addr.port()),
        None => ("unix".to_string(), 0),
    }
}

/// What `ptr` and `link` call a client.
pub(super) fn client_ptr(id: i32) -> String {
    format!("client:{id}")
}

/// What `ptr` and `link` call an engine session: a pooled server session by
/// its server process id, a database's one shared engine by the database.
pub(super) fn server_ptr(database: &str, pooled: bool, backend_pid: Option<i32>) -> String {
    match (pooled, backend_pid) {
        (true, Some(pid)) => format!("server:{pid}"),
        _ => format!("engine:{database}"),
    }
}
