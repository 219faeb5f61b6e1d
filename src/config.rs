//! The gateway's settings, validated once at startup.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::engine::embedded::Storage;
use crate::engine::upstream::Upstream;
use crate::frontend::scram::ScramSecret;
use crate::frontend::tls::ClientTls;

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// Anyone who can reach the port may log in as any known role.
    Trust,
    /// MD5 challenge-response against a configured password.
    Md5,
    /// SCRAM-SHA-256 against a configured password (PostgreSQL's default).
    #[value(name = "scram-sha-256")]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
}

/// A role's password as the gateway keeps it.
#[derive(Debug, Clone)]
pub enum Secret {
    Plain(String),
    Scram(ScramSecret),
}

impl Secret {
    /// A plain password, or a `SCRAM-SHA-256$...` secret.
    pub fn parse(password: &str) -> Result<Self> {
        if password.starts_with("SCRAM-SHA-256$") {
            Ok(Secret::Scram(
                ScramSecret::parse(password).context("malformed SCRAM secret")?,
            ))
        } else {
            Ok(Secret::Plain(password.to_string()))
        }
    }
}

/// The pool of server sessions for one upstream database.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamPool {
    /// Server sessions at most.
    pub size: usize,
    /// A pooled server session is closed after this long, once idle.
    pub lifetime: Option<Duration>,
    /// A pooled server session idle for this long is closed.
    pub idle_timeout: Option<Duration>,
}

/// Hosts that attach over the tunnel (see `engine::tunnel`) and the limits
/// they are held to.
#[derive(Debug, Clone)]
pub struct TunnelSettings {
    /// Signs the JSON Web Tokens hosts present.
    pub secret: Option<String>,
    pub heartbeat: Duration,
    pub max_frame: usize,
    /// The most COPY FROM STDIN data sent to a host in one request.
    pub max_copy: usize,
    pub idle_timeout: Option<Duration>,
    pub lifetime: Option<Duration>,
    /// How long a unit of work waits for a host that left to come back.
    pub host_wait: Duration,
    /// PGlite's `dist` directory, served to the share page.
    pub pglite_dist: Option<PathBuf>,
}

impl Default for TunnelSettings {
    fn default() -> Self {
        Self {
            secret: None,
            heartbeat: Duration::from_secs(10),
            max_frame: 1 << 20,
            max_copy: 256 << 20,
            idle_timeout: None,
            lifetime: None,
            host_wait: Duration::from_secs(10),
            pglite_dist: None,
        }
    }
}

/// Live queries over WebSockets and Server-Sent Events (see `realtime`).
#[derive(Debug, Clone)]
pub struct RealtimeSettings {
    /// Live queries are served at all: schema pgr is installed where a
    /// statement names it, and changes are published.
    pub enabled: bool,
    /// Signs the JSON Web Tokens (HS256) subscribers present.
    pub secret: Option<String>,
    /// A key that admits subscribers as role `anon`.
    pub anon_key: Option<String>,
    /// Refuse the anon key: only real tokens subscribe.
    pub require_auth: bool,
    /// Origins whose pages may subscribe; empty: the gateway's own only.
    pub allowed_origins: Vec<String>,
    /// Sockets and event streams open at once at most.
    pub max_connections: usize,
    /// Of those, from one address at most (0: no limit).
    pub max_per_ip: usize,
    /// Deltas longer than this reach subscribers as an `overflow`.
    pub max_message: usize,
}

/// The shortest realtime secret accepted, as for pg_reactive's proxy.
pub const MIN_REALTIME_SECRET_LEN: usize = 32;

impl Default for RealtimeSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            secret: None,
            anon_key: None,
            require_auth: false,
            allowed_origins: Vec::new(),
            max_connections: 10_000,
            max_per_ip: 10,
            max_message: 1 << 20,
        }
    }
}

/// A database served by an upstream server (from the configuration file).
#[derive(Debug, Clone)]
pub struct UpstreamDatabase {
    pub upstream: Upstream,
    pub pool: UpstreamPool,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub unix_dir: Option<PathBuf>,
    pub storage: Storage,
    /// Serve a real PostgreSQL server instead of the embedded engine.
    pub upstream: Option<Upstream>,
    /// More databases served by upstream servers, by the name clients use.
    pub upstream_databases: Vec<(String, UpstreamDatabase)>,
    /// Embedded databases opened (and created) at startup.
    pub embedded_databases: Vec<String>,
    /// Databases served by hosts, with their own tunnel secrets.
    pub tunnel_databases: Vec<(String, Option<String>)>,
    /// The HTTP address for hosts and the share page; `None`: not served.
    pub http: Option<SocketAddr>,
    pub tunnel: TunnelSettings,
    pub realtime: RealtimeSettings,
    /// Server sessions opened to the upstream server at most.
    pub pool_size: usize,
    /// A pooled server session is closed after this long, once idle.
    pub server_lifetime: Option<Duration>,
    /// A pooled server session idle for this long is closed.
    pub server_idle_timeout: Option<Duration>,
    /// Prepared statements kept on each engine session.
    pub max_prepared_statements: usize,
    pub relaxed_durability: bool,
    /// Create a database a client asks for when it does not exist.
    pub auto_create: bool,
    /// An embedded database without clients for this long is closed.
    pub engine_idle_timeout: Option<Duration>,
    /// Embedded databases open at once at most.
    pub max_open_engines: usize,
    /// TLS for clients: off, offered, or required on TCP.
    pub client_tls: ClientTls,
    /// The certificate and key for client TLS; generated when not given.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A TLS client that asked for `<name>.<sni_domain>` is served database
    /// `<name>`.
    pub sni_domain: Option<String>,
    pub auth: AuthMethod,
    /// Roles clients may log in as, with their passwords when they have one.
    pub users: HashMap<String, Option<Secret>>,
    /// Roles that may open the admin console (database `pgshare`).
    pub admin_users: Vec<String>,
    pub max_client_conn: usize,
    pub max_message_len: usize,
    pub idle_in_transaction_timeout: Option<Duration>,
    pub query_wait_timeout: Option<Duration>,
    pub client_login_timeout: Option<Duration>,
    /// At shutdown, how long running units of work may take to finish.
    pub shutdown_timeout: Duration,
}

impl Config {
    /// Checks that every role can authenticate with the chosen method.
    pub fn validate(&self) -> Result<()> {
        if self.listen.is_empty() && self.unix_dir.is_none() {
            bail!("nothing to listen on: give --listen or --unix-dir");
        }
        if self.upstream.is_some() && !self.embedded_databases.is_empty() {
            bail!(
                "a gateway in front of one upstream server (upstream) serves no embedded databases, but the configuration lists {}; give them an upstream each",
                self.embedded_databases.join(", ")
            );
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!(
                "give both --tls-cert and --tls-key, or neither (a certificate is then generated)"
            );
        }
        if let Some(secret) = &self.tunnel.secret
            && secret.chars().count() < crate::engine::tunnel::token::MIN_SECRET_LEN
        {
            bail!(
                "the tunnel secret is {} characters long; it must have at least {} (try: openssl rand -hex 32)",
                secret.chars().count(),
                crate::engine::tunnel::token::MIN_SECRET_LEN
            );
        }
        if let Some(secret) = &self.realtime.secret
            && secret.chars().count() < MIN_REALTIME_SECRET_LEN
        {
            bail!(
                "the realtime secret is {} characters long; it must have at least {MIN_REALTIME_SECRET_LEN} (try: openssl rand -hex 32)",
                secret.chars().count(),
            );
        }
        if self.realtime.require_auth && self.realtime.secret.is_none() {
            bail!(
                "--realtime-require-auth needs --realtime-secret: without one there are no tokens to require"
            );
        }
        if self.tunnel.max_frame < 1024 {
            bail!("--tunnel-max-frame must be at least 1024 bytes");
        }
        if self.tunnel.heartbeat.is_zero() {
            bail!("--tunnel-heartbeat must be at least one second");
        }
        if self.sni_domain.is_some() && self.client_tls == ClientTls::Off {
            bail!("--sni-domain routes TLS clients, but --ssl is off");
        }
        if self.auth != AuthMethod::Trust {
            for (user, secret) in &self.users {
                match (secret, self.auth) {
                    (None, _) => bail!(
                        "role \"{user}\" has no password, but --auth is {:?}; set --password (or [auth] password in the configuration file) or add it to the users file",
                        self.auth
                    ),
                    (Some(Secret::Scram(_)), AuthMethod::Md5) => bail!(
                        "role \"{user}\" has a SCRAM secret, which cannot answer md5 authentication; give its plain password or use --auth scram-sha-256"
                    ),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

impl Config {
    /// The settings that differ in `new` but can only change with a
    /// restart.
    pub fn needs_restart_for(&self, new: &Config) -> Vec<&'static str> {
        let differs =
            |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
        let mut changed = Vec::new();
        for (name, old, new) in [
            (
                "listen",
                &self.listen as &dyn std::fmt::Debug,
                &new.listen as &dyn std::fmt::Debug,
            ),
            ("unix_dir", &self.unix_dir, &new.unix_dir),
            ("data", &self.storage, &new.storage),
            ("upstream", &self.upstream, &new.upstream),
            ("pool_size", &self.pool_size, &new.pool_size),
            (
                "server_lifetime",
                &self.server_lifetime,
                &new.server_lifetime,
            ),
            (
                "server_idle_timeout",
                &self.server_idle_timeout,
                &new.server_idle_timeout,
            ),
            (
                "databases",
                &self.upstream_databases,
                &new.upstream_databases,
            ),
            (
                "databases",
                &self.embedded_databases,
                &new.embedded_databases,
            ),
            (
                "relaxed_durability",
                &self.relaxed_durability,
                &new.relaxed_durability,
            ),
            ("auto_create", &self.auto_create, &new.auto_create),
            (
                "engine_idle_timeout",
                &self.engine_idle_timeout,
                &new.engine_idle_timeout,
            ),
            (
                "max_open_engines",
                &self.max_open_engines,
                &new.max_open_engines,
            ),
            (
                "max_prepared_statements",
                &self.max_prepared_statements,
                &new.max_prepared_statements,
            ),
            (
                "max_client_conn",
                &self.max_client_conn,
                &new.max_client_conn,
            ),
            ("http", &self.http, &new.http),
            ("realtime", &self.realtime.enabled, &new.realtime.enabled),
            (
                "realtime_max_connections",
                &self.realtime.max_connections,
                &new.realtime.max_connections,
            ),
            ("databases", &self.tunnel_databases, &new.tunnel_databases),
            (
                "tunnel_host_wait",
                &self.tunnel.host_wait,
                &new.tunnel.host_wait,
            ),
        ] {
            if differs(old, new) && !changed.contains(&name) {
                changed.push(name);
            }
        }
        changed
    }

    /// Takes from `old` what a reload cannot change.
    pub fn keep_unreloadable(&mut self, old: &Config) {
        self.listen = old.listen.clone();
        self.unix_dir = old.unix_dir.clone();
        self.storage = old.storage.clone();
        self.upstream = old.upstream.clone();
        self.pool_size = old.pool_size;
        self.server_lifetime = old.server_lifetime;
        self.server_idle_timeout = old.server_idle_timeout;
        self.upstream_databases = old.upstream_databases.clone();
        self.embedded_databases = old.embedded_databases.clone();
        self.relaxed_durability = old.relaxed_durability;
        self.auto_create = old.auto_create;
        self.engine_idle_timeout = old.engine_idle_timeout;
        self.max_open_engines = old.max_open_engines;
        self.max_prepared_statements = old.max_prepared_statements;
        self.max_client_conn = old.max_client_conn;
        self.http = old.http;
        self.tunnel_databases = old.tunnel_databases.clone();
        self.tunnel.host_wait = old.tunnel.host_wait;
        self.realtime.enabled = old.realtime.enabled;
        self.realtime.max_connections = old.realtime.max_connections;
    }
}

/// Reads a users file: one role per line as `"name" "password"` (PgBouncer's
/// `userlist.txt` form), the password plain or a `SCRAM-SHA-256$...` secret.
/// Blank lines and lines starting with `#` or `;` are ignored.
pub fn read_users_file(path: &std::path::Path) -> Result<HashMap<String, Secret>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read users file {}", path.display()))?;
    parse_users(&text).with_context(|| format!("in users file {}", path.display()))
}

fn parse_users(text: &str) -> Result<HashMap<String, Secret>> {
    let mut users = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields = quoted_fields(line)
            .with_context(|| format!("line {}: expected \"name\" \"password\"", number + 1))?;
        let [name, password] = fields.as_slice() else {
            bail!("line {}: expected \"name\" \"password\"", number + 1);
        };
        let secret = Secret::parse(password).with_context(|| format!("line {}", number + 1))?;
        users.insert(name.clone(), secret);
    }
    Ok(users)
}

/// Splits `"a" "b"` into its fields; `""` inside a field stands for one `"`.
fn quoted_fields(line: &str) -> Result<Vec<String>> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.next() {
            None => return Ok(fields),
            Some('"') => {}
            Some(_) => bail!("fields must be in double quotes"),
        }
        let mut field = String::new();
        loop {
            match chars.next() {
                None => bail!("unterminated quote"),
                Some('"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                Some('"') => break,
                Some(c) => field.push(c),
            }
        }
        fields.push(field);
    }
}

/// Where a reload reads the configuration from: the `--config` file, under
/// the flags and `PGSHARE_*` variables given at start.
pub struct ConfigSource {
    pub path: PathBuf,
    pub load: Box<dyn Fn() -> anyhow::Result<Config> + Send + Sync>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_accepts_plain_passwords_comments_and_quotes() {
        let users =
            parse_users("# roles\n\"alice\" \"s3cret\"\n\n\"bob\" \"say \"\"hi\"\"\"\n").unwrap();
        assert!(matches!(users.get("alice"), Some(Secret::Plain(p)) if p == "s3cret"));
        assert!(matches!(users.get("bob"), Some(Secret::Plain(p)) if p == "say \"hi\""));
    }

    #[test]
    fn users_file_rejects_bad_lines() {
        assert!(parse_users("alice s3cret\n").is_err());
        assert!(parse_users("\"alice\"\n").is_err());
        assert!(parse_users("\"alice\" \"open\n").is_err());
    }
}
