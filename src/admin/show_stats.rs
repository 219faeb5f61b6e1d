//! `SHOW STATS` and `SHOW STATS_TOTALS`: each database's totals since
//! pgshare started and its averages over the last stats period (60 s), in
//! PgBouncer's columns and units (bytes, microseconds). A transaction is a
//! unit of work; a query is a statement the engine completed; the server
//! time is the time a unit held the engine.

use crate::activity::{Averages, Totals};
use crate::gateway::Gateway;

use super::overview;
use super::result_set::{Cell, ResultSet, Type};

/// The totals, as PgBouncer names them after `total_` (STATS) or alone
/// (STATS_TOTALS).
const TOTALS: [(&str, &str); 11] = [
    ("total_server_assignment_count", "server_assignment_count"),
    ("total_xact_count", "xact_count"),
    ("total_query_count", "query_count"),
    ("total_received", "bytes_received"),
    ("total_sent", "bytes_sent"),
    ("total_xact_time", "xact_time"),
    ("total_query_time", "query_time"),
    ("total_wait_time", "wait_time"),
    ("total_client_parse_count", "client_parse_count"),
    ("total_server_parse_count", "server_parse_count"),
    ("total_bind_count", "bind_count"),
];

const AVERAGES: [&str; 11] = [
    "avg_server_assignment_count",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
    "avg_client_parse_count",
    "avg_server_parse_count",
    "avg_bind_count",
];

pub fn show_stats(gateway: &Gateway) -> ResultSet {
    let mut columns = vec![("database", Type::Text)];
    columns.extend(TOTALS.iter().map(|(name, _)| (*name, Type::Numeric)));
    columns.extend(AVERAGES.iter().map(|name| (*name, Type::Numeric)));
    let mut set = ResultSet::new(&columns);
    for database in overview::databases(gateway) {
        let mut row: Vec<Cell> = vec![(&database.name).into()];
        row.extend(totals(&database.activity.totals()));
        row.extend(averages(&database.activity.averages()));
        set.push(row);
    }
    set
}

pub fn show_totals(gateway: &Gateway) -> ResultSet {
    let mut columns = vec![("database", Type::Text)];
    columns.extend(TOTALS.iter().map(|(_, name)| (*name, Type::Numeric)));
    let mut set = ResultSet::new(&columns);
    for database in overview::databases(gateway) {
        let mut row: Vec<Cell> = vec![(&database.name).into()];
        row.extend(totals(&database.activity.totals()));
        set.push(row);
    }
    set
}

fn totals(totals: &Totals) -> Vec<Cell> {
    [
        totals.assignments,
        totals.units,
        totals.statements,
        totals.bytes_received,
        totals.bytes_sent,
        totals.xact_time,
        totals.query_time,
        totals.wait_time,
        totals.parses,
        // The gateway's own Parse messages to sessions are not counted.
        0,
        totals.binds,
    ]
    .into_iter()
    .map(Cell::from)
    .collect()
}

fn averages(averages: &Averages) -> Vec<Cell> {
    [
        averages.assignments_per_second,
        averages.units_per_second,
        averages.statements_per_second,
        averages.received_per_second,
        averages.sent_per_second,
        averages.xact_time,
        averages.query_time,
        averages.wait_time,
        averages.parses_per_second,
        0,
        averages.binds_per_second,
    ]
    .into_iter()
    .map(Cell::from)
    .collect()
}
