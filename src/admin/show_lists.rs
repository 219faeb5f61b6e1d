//! `SHOW LISTS`: counts of what pgshare holds, one row per list, in
//! PgBouncer's names (those of a pooler's internals pgshare has none of,
//! such as the DNS cache, are 0).

use crate::gateway::Gateway;

use super::overview;
use super::result_set::{ResultSet, Type};

pub fn show(gateway: &Gateway) -> ResultSet {
    let config = gateway.config();
    let databases = overview::databases(gateway);
    let clients = gateway.activity.client_list().len();
    let connections = config
        .max_client_conn
        .saturating_sub(gateway.connections.available_permits());
    let servers: usize = databases
        .iter()
        .map(|database| {
            let (active, idle) = database.sessions();
            active + idle
        })
        .sum();
    let mut set = ResultSet::new(&[("list", Type::Text), ("items", Type::Int4)]);
    for (list, items) in [
        ("databases", databases.len()),
        ("users", config.users.len()),
        ("peers", 0),
        (
            "pools",
            databases
                .iter()
                .filter(|database| database.open.is_some())
                .count(),
        ),
        ("peer_pools", 0),
        ("free_clients", 0),
        ("used_clients", clients),
        ("login_clients", connections.saturating_sub(clients)),
        ("free_servers", 0),
        ("used_servers", servers),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ] {
        set.push(vec![list.into(), items.into()]);
    }
    set
}
