//! The configuration file (`--config pgshare.toml`): the same settings as the
//! command line, grouped, plus a table per database. Every value is optional;
//! flags and `PGSHARE_*` variables given explicitly override it, and what
//! neither gives takes the flag's default. `pgshare.example.toml` in the
//! repository documents every key.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::config::{AuthMethod, Config, Secret, UpstreamDatabase, UpstreamPool, read_users_file};
use crate::engine::embedded::Storage;
use crate::engine::upstream::Upstream;
use crate::frontend::tls::ClientTls;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub listen: Option<Vec<SocketAddr>>,
    pub unix_dir: Option<PathBuf>,
    pub data: Option<PathBuf>,
    pub memory: Option<bool>,
    pub relaxed_durability: Option<bool>,
    pub auto_create: Option<bool>,
    pub threads: Option<usize>,
    pub max_prepared_statements: Option<usize>,
    /// The one upstream server the gateway fronts (as `--upstream`).
    pub upstream: Option<String>,
    pub pool_size: Option<usize>,
    pub server_lifetime: Option<u64>,
    pub server_idle_timeout: Option<u64>,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub tls: TlsSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub databases: BTreeMap<String, DatabaseSection>,
    #[serde(default)]
    pub tunnel: TunnelSection,
    #[serde(default)]
    pub realtime: RealtimeSection,
}

/// `[realtime]`: live queries (see the `--realtime-*` flags).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealtimeSection {
    pub enabled: Option<bool>,
    pub secret: Option<String>,
    pub anon_key: Option<String>,
    pub require_auth: Option<bool>,
    pub allowed_origins: Option<Vec<String>>,
    pub max_connections: Option<usize>,
    pub max_per_ip: Option<usize>,
    pub max_message: Option<usize>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub method: Option<AuthMethod>,
    /// Password of the role `postgres`.
    pub password: Option<String>,
    pub users_file: Option<PathBuf>,
    /// More roles: name = password (plain or a SCRAM-SHA-256 secret).
    #[serde(default)]
    pub users: HashMap<String, String>,
    /// Roles that may open the admin console.
    pub admin_users: Option<Vec<String>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub ssl: Option<ClientTls>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub sni_domain: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_client_conn: Option<usize>,
    pub max_message_len: Option<usize>,
    pub idle_in_transaction_timeout: Option<u64>,
    pub query_wait_timeout: Option<u64>,
    pub client_login_timeout: Option<u64>,
    pub engine_idle_timeout: Option<u64>,
    pub max_open_engines: Option<usize>,
}

/// One `[databases.<name>]` table. Without `upstream`, the database is
/// embedded (and opened at startup, so it exists even without
/// `auto_create`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    pub upstream: Option<String>,
    /// Served by a host that attaches over the tunnel.
    #[serde(default)]
    pub tunnel: bool,
    /// A token (besides the tunnel secret's) for this database's host.
    pub tunnel_secret: Option<String>,
    pub pool_size: Option<usize>,
    pub server_lifetime: Option<u64>,
    pub server_idle_timeout: Option<u64>,
}

/// `[tunnel]`: hosts attaching over WebSockets (see `--http`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelSection {
    pub http: Option<String>,
    pub secret: Option<String>,
    pub heartbeat: Option<u64>,
    pub max_frame: Option<usize>,
    pub max_copy: Option<usize>,
    pub idle_timeout: Option<u64>,
    pub lifetime: Option<u64>,
    pub host_wait: Option<u64>,
    pub pglite_dist: Option<PathBuf>,
}

impl ConfigFile {
    /// Reads and parses `path`; relative paths inside it are taken from the
    /// file's directory.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read configuration file {}", path.display()))?;
        let mut file: Self = toml::from_str(&text)
            .with_context(|| format!("in configuration file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let relative = |value: &mut Option<PathBuf>| {
            if let Some(path) = value.as_mut()
                && path.is_relative()
            {
                *path = base.join(&*path);
            }
        };
        relative(&mut file.unix_dir);
        relative(&mut file.data);
        relative(&mut file.auth.users_file);
        relative(&mut file.tls.cert);
        relative(&mut file.tls.key);
        relative(&mut file.tunnel.pglite_dist);
        Ok(file)
    }
}

/// An HTTP address, or `off`.
pub fn parse_http(value: &str) -> Result<Option<std::net::SocketAddr>> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .with_context(|| format!("invalid HTTP address {value:?}: give IP:PORT or off"))
}

impl ConfigFile {
    /// Applies the file to `config`, which holds the command line's values:
    /// a setting is taken from the file unless `explicit` says the command
    /// line or the environment gave it (by the flag's name, as `listen`).
    pub fn apply(self, config: &mut Config, explicit: impl Fn(&str) -> bool) -> Result<()> {
        let take = |name: &str| !explicit(name);
        macro_rules! set {
            ($flag:literal, $target:expr, $value:expr) => {
                if let Some(value) = $value
                    && take($flag)
                {
                    $target = value;
                }
            };
        }
        let seconds = |value: Option<u64>| value.map(|s| (s > 0).then(|| Duration::from_secs(s)));
        set!("listen", config.listen, self.listen);
        set!("unix_dir", config.unix_dir, self.unix_dir.map(Some));
        if self.memory == Some(true) && take("memory") {
            config.storage = Storage::Memory;
        } else if let Some(data) = self.data
            && take("data")
            && matches!(config.storage, Storage::Directory(_))
        {
            config.storage = Storage::Directory(data);
        }
        set!(
            "relaxed_durability",
            config.relaxed_durability,
            self.relaxed_durability
        );
        set!("auto_create", config.auto_create, self.auto_create);
        set!(
            "max_prepared_statements",
            config.max_prepared_statements,
            self.max_prepared_statements
        );
        if let Some(url) = self.upstream
            && take("upstream")
        {
            config.upstream = Some(Upstream::parse(&url)?);
        }
        set!("pool_size", config.pool_size, self.pool_size);
        set!(
            "server_lifetime",
            config.server_lifetime,
            seconds(self.server_lifetime)
        );
        set!(
            "server_idle_timeout",
            config.server_idle_timeout,
            seconds(self.server_idle_timeout)
        );

        if take("auth") {
            config.auth = self.auth.method.unwrap_or(
                if config.listen.iter().all(|addr| addr.ip().is_loopback()) {
                    AuthMethod::Trust
                } else {
                    AuthMethod::ScramSha256
                },
            );
        }
        if let Some(password) = self.auth.password
            && take("password")
        {
            config
                .users
                .insert("postgres".to_string(), Some(Secret::Plain(password)));
        }
        if let Some(path) = &self.auth.users_file
            && take("users_file")
        {
            for (name, secret) in read_users_file(path)? {
                config.users.insert(name, Some(secret));
            }
        }
        set!("admin_users", config.admin_users, self.auth.admin_users);
        for (name, password) in self.auth.users {
            let secret = Secret::parse(&password)
                .with_context(|| format!("in [auth.users], role \"{name}\""))?;
            config.users.insert(name, Some(secret));
        }

        set!("ssl", config.client_tls, self.tls.ssl);
        set!("tls_cert", config.tls_cert, self.tls.cert.map(Some));
        set!("tls_key", config.tls_key, self.tls.key.map(Some));
        set!(
            "sni_domain",
            config.sni_domain,
            self.tls.sni_domain.map(Some)
        );

        let limits = self.limits;
        set!(
            "max_client_conn",
            config.max_client_conn,
            limits.max_client_conn
        );
        set!(
            "max_message_len",
            config.max_message_len,
            limits.max_message_len
        );
        set!(
            "idle_in_transaction_timeout",
            config.idle_in_transaction_timeout,
            seconds(limits.idle_in_transaction_timeout)
        );
        set!(
            "query_wait_timeout",
            config.query_wait_timeout,
            seconds(limits.query_wait_timeout)
        );
        set!(
            "client_login_timeout",
            config.client_login_timeout,
            seconds(limits.client_login_timeout)
        );
        set!(
            "engine_idle_timeout",
            config.engine_idle_timeout,
            seconds(limits.engine_idle_timeout)
        );
        set!(
            "max_open_engines",
            config.max_open_engines,
            limits.max_open_engines
        );

        let tunnel = self.tunnel;
        if let Some(http) = tunnel.http
            && take("http")
        {
            config.http = parse_http(&http)?;
        }
        set!(
            "tunnel_secret",
            config.tunnel.secret,
            tunnel.secret.map(Some)
        );
        set!(
            "tunnel_heartbeat",
            config.tunnel.heartbeat,
            tunnel.heartbeat.map(Duration::from_secs)
        );
        set!(
            "tunnel_max_frame",
            config.tunnel.max_frame,
            tunnel.max_frame
        );
        set!("tunnel_max_copy", config.tunnel.max_copy, tunnel.max_copy);
        set!(
            "tunnel_idle_timeout",
            config.tunnel.idle_timeout,
            seconds(tunnel.idle_timeout)
        );
        set!(
            "tunnel_lifetime",
            config.tunnel.lifetime,
            seconds(tunnel.lifetime)
        );
        set!(
            "tunnel_host_wait",
            config.tunnel.host_wait,
            tunnel.host_wait.map(Duration::from_secs)
        );
        set!(
            "pglite_dist",
            config.tunnel.pglite_dist,
            tunnel.pglite_dist.map(Some)
        );

        let realtime = self.realtime;
        set!("realtime", config.realtime.enabled, realtime.enabled);
        set!(
            "realtime_secret",
            config.realtime.secret,
            realtime.secret.map(Some)
        );
        set!(
            "realtime_anon_key",
            config.realtime.anon_key,
            realtime.anon_key.map(Some)
        );
        set!(
            "realtime_require_auth",
            config.realtime.require_auth,
            realtime.require_auth
        );
        set!(
            "realtime_allowed_origins",
            config.realtime.allowed_origins,
            realtime.allowed_origins
        );
        set!(
            "realtime_max_connections",
            config.realtime.max_connections,
            realtime.max_connections
        );
        set!(
            "realtime_max_per_ip",
            config.realtime.max_per_ip,
            realtime.max_per_ip
        );
        set!(
            "realtime_max_message",
            config.realtime.max_message,
            realtime.max_message
        );

        for (name, database) in self.databases {
            crate::database::validate_name(&name)
                .map_err(|err| anyhow::anyhow!("[databases.{name}]: {}", err.message))?;
            if database.tunnel || database.tunnel_secret.is_some() {
                if database.upstream.is_some() {
                    bail!(
                        "[databases.{name}]: a database has an upstream or a tunnel host, not both"
                    );
                }
                config.tunnel_databases.push((name, database.tunnel_secret));
                continue;
            }
            let Some(url) = database.upstream else {
                config.embedded_databases.push(name);
                continue;
            };
            let upstream =
                Upstream::parse(&url).with_context(|| format!("[databases.{name}] upstream"))?;
            let pool = UpstreamPool {
                size: database.pool_size.unwrap_or(config.pool_size).max(1),
                lifetime: seconds(database.server_lifetime).unwrap_or(config.server_lifetime),
                idle_timeout: seconds(database.server_idle_timeout)
                    .unwrap_or(config.server_idle_timeout),
            };
            config
                .upstream_databases
                .push((name, UpstreamDatabase { upstream, pool }));
        }
        Ok(())
    }
}
