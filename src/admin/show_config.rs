//! `SHOW CONFIG`: every setting as PgBouncer lists its own (key, value,
//! default, changeable), under the names of pgshare's flags and
//! configuration keys. Times are in seconds (0: never), sizes in bytes,
//! switches 0 or 1; `changeable` says whether `RELOAD` applies a new value.
//! Passwords and secrets are not shown.

use std::time::Duration;

use crate::config::Config;
use crate::engine::embedded::Storage;
use crate::gateway::Gateway;

use super::result_set::{ResultSet, Type};

/// Settings `RELOAD` cannot change (see `Config::needs_restart_for`), and
/// those only the command line sets.
const RESTART_ONLY: &[&str] = &[
    "listen",
    "unix_dir",
    "data",
    "memory",
    "upstream",
    "pool_size",
    "server_lifetime",
    "server_idle_timeout",
    "max_prepared_statements",
    "relaxed_durability",
    "auto_create",
    "engine_idle_timeout",
    "max_open_engines",
    "max_client_conn",
    "http",
    "tunnel_host_wait",
    "shutdown_timeout",
];

pub fn show(gateway: &Gateway) -> ResultSet {
    let config = gateway.config();
    let mut set = ResultSet::new(&[
        ("key", Type::Text),
        ("value", Type::Text),
        ("default", Type::Text),
        ("changeable", Type::Text),
    ]);
    for (key, value, default) in settings(&config) {
        let changeable = if RESTART_ONLY.contains(&key) {
            "no"
        } else {
            "yes"
        };
        set.push(vec![
            key.into(),
            value.into(),
            default.into(),
            changeable.into(),
        ]);
    }
    set
}

/// Each setting's key, value and default.
fn settings(config: &Config) -> Vec<(&'static str, String, &'static str)> {
    let seconds = |value: Option<Duration>| value.map_or(0, |value| value.as_secs()).to_string();
    let switch = |value: bool| u8::from(value).to_string();
    let path = |value: &Option<std::path::PathBuf>| {
        value
            .as_ref()
            .map(|path| path.display().to_string())
            .unwrap_or_default()
    };
    let (data, memory) = match &config.storage {
        Storage::Directory(dir) => (dir.display().to_string(), false),
        Storage::Memory => (String::new(), true),
    };
    let upstream = config
        .upstream
        .as_ref()
        .map(|upstream| {
            let (host, port) = upstream.address();
            format!(
                "postgres://{}@{host}:{port}/{}",
                upstream.user(),
                upstream.database()
            )
        })
        .unwrap_or_default();
    let listen: Vec<String> = config.listen.iter().map(ToString::to_string).collect();
    let mut admin_users = config.admin_users.clone();
    admin_users.sort();
    vec![
        ("listen", listen.join(","), "127.0.0.1:5432"),
        ("unix_dir", path(&config.unix_dir), ""),
        ("data", data, "./pgshare-data"),
        ("memory", switch(memory), "0"),
        ("upstream", upstream, ""),
        ("pool_size", config.pool_size.to_string(), "1"),
        ("server_lifetime", seconds(config.server_lifetime), "3600"),
        (
            "server_idle_timeout",
            seconds(config.server_idle_timeout),
            "600",
        ),
        (
            "max_prepared_statements",
            config.max_prepared_statements.to_string(),
            "200",
        ),
        ("relaxed_durability", switch(config.relaxed_durability), "0"),
        ("auto_create", switch(config.auto_create), "1"),
        (
            "engine_idle_timeout",
            seconds(config.engine_idle_timeout),
            "600",
        ),
        (
            "max_open_engines",
            config.max_open_engines.to_string(),
            "16",
        ),
        ("ssl", value_name(config.client_tls), "on"),
        ("tls_cert", path(&config.tls_cert), ""),
        ("tls_key", path(&config.tls_key), ""),
        (
            "sni_domain",
            config.sni_domain.clone().unwrap_or_default(),
            "",
        ),
        ("auth", value_name(config.auth), ""),
        ("admin_users", admin_users.join(","), "postgres"),
        ("max_client_conn", config.max_client_conn.to_string(), "100"),
        (
            "max_message_len",
            config.max_message_len.to_string(),
            "67108864",
        ),
        (
            "idle_in_transaction_timeout",
            seconds(config.idle_in_transaction_timeout),
            "60",
        ),
        (
            "query_wait_timeout",
            seconds(config.query_wait_timeout),
            "120",
        ),
        (
            "client_login_timeout",
            seconds(config.client_login_timeout),
            "60",
        ),
        (
            "shutdown_timeout",
            config.shutdown_timeout.as_secs().to_string(),
            "30",
        ),
        (
            "http",
            config
                .http
                .map_or("off".to_string(), |addr| addr.to_string()),
            "127.0.0.1:8080",
        ),
        (
            "tunnel_heartbeat",
            config.tunnel.heartbeat.as_secs().to_string(),
            "10",
        ),
        (
            "tunnel_max_frame",
            config.tunnel.max_frame.to_string(),
            "1048576",
        ),
        (
            "tunnel_max_copy",
            config.tunnel.max_copy.to_string(),
            "268435456",
        ),
        (
            "tunnel_idle_timeout",
            seconds(config.tunnel.idle_timeout),
            "0",
        ),
        ("tunnel_lifetime", seconds(config.tunnel.lifetime), "0"),
        (
            "tunnel_host_wait",
            config.tunnel.host_wait.as_secs().to_string(),
            "10",
        ),
        ("pglite_dist", path(&config.tunnel.pglite_dist), ""),
    ]
}

/// A setting's name on the command line (`scram-sha-256`, `required`).
fn value_name(value: impl clap::ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|value| value.get_name().to_string())
        .unwrap_or_default()
}
