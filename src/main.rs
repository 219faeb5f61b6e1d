//! The `pgshare` command line.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use pgshare::config::ConfigSource;
use pgshare::config::{
    AuthMethod, Config, RealtimeSettings, Secret, TunnelSettings, read_users_file,
};
use pgshare::config_file::ConfigFile;
use pgshare::engine::embedded::Storage;
use pgshare::engine::tunnel::token;
use pgshare::engine::upstream::Upstream;
use pgshare::frontend::tls::ClientTls;
use pgshare::protocol::frame::DEFAULT_MAX_MESSAGE_LEN;
use pgshare::reload;
use pgshare::run_command::RunCommand;
use pgshare::server::Server;
use std::sync::Arc;

use pgshare::gateway::Gateway;
use tracing::error;

#[derive(Parser)]
#[command(
    name = "pgshare",
    version,
    about = "A Postgres gateway: many clients share embedded PostgreSQL engines (WASIX, in-process), a pooled PostgreSQL server, or a PGlite in a browser tab or Node process, each as if it had its own connection"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve embedded databases, PostgreSQL servers, and PGlite hosts
    /// that attach over WebSockets to Postgres clients: psql, pgbench,
    /// drivers, ORMs, IDEs. Every flag can also be set by its PGSHARE_*
    /// variable or in the --config file.
    Serve(Box<ServeArgs>),
    /// Print a token that lets a host (a browser tab or a Node process with
    /// pgshare-host) serve DATABASE through `pgshare serve --tunnel-secret`:
    /// an HS256 JSON Web Token whose claim `db` is DATABASE.
    Token(TokenArgs),
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The database the host will serve.
    database: String,

    /// The secret `pgshare serve` was given (at least 32 characters).
    #[arg(
        long,
        env = "PGSHARE_TUNNEL_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    tunnel_secret: String,

    /// Seconds the token is valid for; 0 = no expiry.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    expires_in: u64,
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// Configuration file (TOML; see pgshare.example.toml). Flags and
    /// PGSHARE_* variables override it. SIGHUP reloads it.
    #[arg(long, env = "PGSHARE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// TCP address to listen on; repeat the flag for several.
    #[arg(
        long,
        env = "PGSHARE_LISTEN",
        value_delimiter = ',',
        default_value = "127.0.0.1:5432"
    )]
    listen: Vec<SocketAddr>,

    /// Also listen on a Unix socket in this directory, named .s.PGSQL.<port> so
    /// that `psql -h DIR` finds it (the port is that of the first --listen).
    #[arg(long, env = "PGSHARE_UNIX_DIR", value_name = "DIR")]
    unix_dir: Option<PathBuf>,

    /// Directory holding the database files, one directory per database
    /// under DIR/databases; created on first run.
    #[arg(
        long,
        env = "PGSHARE_DATA",
        value_name = "DIR",
        default_value = "./pgshare-data"
    )]
    data: PathBuf,

    /// Keep databases in memory, gone when pgshare stops (ignores --data).
    #[arg(long, env = "PGSHARE_MEMORY")]
    memory: bool,

    /// Once the gateway is ready, run CMD through `sh -c` with DATABASE_URL
    /// (postgres://postgres@HOST:PORT/postgres, for the first --listen
    /// address, loopback for 0.0.0.0 or [::]) and PGHOST, PGPORT, PGUSER,
    /// PGDATABASE, PGSSLMODE and, with a password, PGPASSWORD set for it.
    /// SIGINT and SIGTERM are passed on to it; when it exits, the gateway
    /// shuts down and pgshare exits with its status.
    #[arg(long, env = "PGSHARE_RUN", value_name = "CMD")]
    run: Option<String>,

    /// Serve this PostgreSQL server (postgres://user:password@host:port/db,
    /// or host=/socket/dir for a Unix socket) instead of the embedded engine;
    /// clients reach it under its database name, through --pool-size server
    /// sessions.
    #[arg(
        long,
        env = "PGSHARE_UPSTREAM",
        value_name = "URL",
        hide_env_values = true
    )]
    upstream: Option<String>,

    /// With --upstream: server sessions opened at most, each shared by clients
    /// one transaction (or one statement) at a time; above 1, LISTEN gets one
    /// more session of its own.
    #[arg(long, env = "PGSHARE_POOL_SIZE", default_value_t = 1)]
    pool_size: usize,

    /// With --pool-size above 1: seconds after which a server session is
    /// closed (when next idle) and replaced; 0 = never.
    #[arg(
        long,
        env = "PGSHARE_SERVER_LIFETIME",
        value_name = "SECONDS",
        default_value_t = 3600
    )]
    server_lifetime: u64,

    /// Prepared statements kept on each engine session; beyond this, the least
    /// recently used are closed and prepared again when next used. Clients
    /// preparing the same query share one.
    #[arg(
        long,
        env = "PGSHARE_MAX_PREPARED_STATEMENTS",
        value_name = "COUNT",
        default_value_t = pgshare::session::statements::DEFAULT_LIMIT
    )]
    max_prepared_statements: usize,

    /// With --pool-size above 1: seconds a server session may stay idle
    /// before it is closed; 0 = never.
    #[arg(
        long,
        env = "PGSHARE_SERVER_IDLE_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 600
    )]
    server_idle_timeout: u64,

    /// Do not sync the embedded engine's files to disk (fsync = off): faster
    /// commits; a killed pgshare still loses none, but a power loss or a
    /// crash of the machine can lose the most recent ones.
    #[arg(long, env = "PGSHARE_RELAXED_DURABILITY")]
    relaxed_durability: bool,

    /// Create a database when a client connects to one that does not exist
    /// (each database is an engine of its own, under DIR/databases/<name>).
    /// With false, only CREATE DATABASE makes one, and other names get 3D000.
    #[arg(
        long,
        env = "PGSHARE_AUTO_CREATE",
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    auto_create: bool,

    /// Seconds after its last client leaves that an embedded database is
    /// closed (flushed to disk, memory freed); the next client opens it
    /// again. 0 = never. With --memory, databases stay open.
    #[arg(
        long,
        env = "PGSHARE_ENGINE_IDLE_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 600
    )]
    engine_idle_timeout: u64,

    /// Embedded databases open at once at most; opening another closes the
    /// one idle the longest, and with none idle the client gets 53000.
    #[arg(
        long,
        env = "PGSHARE_MAX_OPEN_ENGINES",
        value_name = "COUNT",
        default_value_t = 16
    )]
    max_open_engines: usize,

    /// TLS for clients: off (decline), on (offer; plaintext still served) or
    /// required (TCP clients without TLS get 28000; Unix sockets are exempt).
    /// PostgreSQL 17's direct TLS (sslnegotiation=direct) works too.
    #[arg(long, env = "PGSHARE_SSL", value_name = "MODE", value_enum, default_value_t = ClientTls::On)]
    ssl: ClientTls,

    /// PEM certificate (chain) for client TLS. Without it, a self-signed
    /// certificate is generated into DIR/server.crt on first run.
    #[arg(long, env = "PGSHARE_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "PGSHARE_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,

    /// Route TLS clients by the host name they connect to: one that asked for
    /// <name>.DOMAIN is served database <name>, whatever its database
    /// parameter says (use a certificate for *.DOMAIN).
    #[arg(long, env = "PGSHARE_SNI_DOMAIN", value_name = "DOMAIN")]
    sni_domain: Option<String>,

    /// How clients authenticate. Default: trust when every --listen address is
    /// loopback, scram-sha-256 otherwise.
    #[arg(long, env = "PGSHARE_AUTH", value_enum)]
    auth: Option<AuthMethod>,

    /// Password of the role "postgres" (for md5 and scram-sha-256).
    #[arg(long, env = "PGSHARE_PASSWORD", hide_env_values = true)]
    password: Option<String>,

    /// More roles, one per line as "name" "password" (PgBouncer's userlist.txt
    /// form); the password may be a SCRAM-SHA-256$... secret.
    #[arg(long, env = "PGSHARE_USERS_FILE", value_name = "FILE")]
    users_file: Option<PathBuf>,

    /// Roles that may open the admin console: connect to database
    /// "pgshare" (psql -d pgshare) for SHOW CLIENTS, SHOW POOLS, SHOW STATS,
    /// PAUSE, RESUME, KILL, RELOAD, SHUTDOWN and more, as in PgBouncer's
    /// console. They log in like any client.
    #[arg(
        long,
        env = "PGSHARE_ADMIN_USERS",
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "postgres"
    )]
    admin_users: Vec<String>,

    /// Most clients connected at once; the next gets "too many clients" (53300).
    #[arg(long, env = "PGSHARE_MAX_CLIENT_CONN", default_value_t = 100)]
    max_client_conn: usize,

    /// Seconds a client may hold the engine inside a transaction without sending
    /// anything before it is disconnected (25P03) and rolled back; 0 = never.
    #[arg(
        long,
        env = "PGSHARE_IDLE_IN_TRANSACTION_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 60
    )]
    idle_in_transaction_timeout: u64,

    /// Seconds a client may wait for the engine while others use it before its
    /// statement is cancelled (57014); 0 = wait forever.
    #[arg(
        long,
        env = "PGSHARE_QUERY_WAIT_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 120
    )]
    query_wait_timeout: u64,

    /// Seconds a new connection may take to log in; 0 = no limit.
    #[arg(
        long,
        env = "PGSHARE_CLIENT_LOGIN_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 60
    )]
    client_login_timeout: u64,

    /// Largest message a client may send, in bytes; longer ones end its
    /// connection with 08P01.
    #[arg(long, env = "PGSHARE_MAX_MESSAGE_LEN", value_name = "BYTES", default_value_t = DEFAULT_MAX_MESSAGE_LEN)]
    max_message_len: usize,

    /// Threads that serve clients. One thread does the most work per CPU
    /// second (no hand-offs between threads, as PgBouncer); more let a
    /// gateway with many busy clients use more cores. The embedded engine
    /// always runs on a thread of its own.
    #[arg(
        long,
        env = "PGSHARE_THREADS",
        value_name = "COUNT",
        default_value_t = 1
    )]
    threads: usize,

    /// Seconds that running units of work (transactions, COPY) may take to
    /// finish at SIGTERM before they are rolled back and their clients
    /// disconnected with 57P01; idle clients go at once. SIGINT (Ctrl-C)
    /// allows at most one second.
    #[arg(
        long,
        env = "PGSHARE_SHUTDOWN_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 30
    )]
    shutdown_timeout: u64,

    /// HTTP address for Live Share: hosts (a browser tab, a Node process)
    /// attach their PGlite at ws://ADDR/tunnel/<database>, and ADDR/share is a
    /// page that shares a PGlite running in the tab. `off` serves nothing.
    #[arg(
        long,
        env = "PGSHARE_HTTP",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080"
    )]
    http: String,

    /// Secret (at least 32 characters) that signs the tokens hosts present:
    /// HS256 JSON Web Tokens whose claim `db` names the database they serve
    /// (and `exp`, when present, is in the future). `pgshare token` makes
    /// them. Without it, only databases with a tunnel_secret in the
    /// configuration file accept hosts.
    #[arg(
        long,
        env = "PGSHARE_TUNNEL_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    tunnel_secret: Option<String>,

    /// Seconds between heartbeats to a host; a host silent for three of them
    /// while idle is disconnected.
    #[arg(
        long,
        env = "PGSHARE_TUNNEL_HEARTBEAT",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    tunnel_heartbeat: u64,

    /// Largest WebSocket frame to or from a host, in bytes; longer requests
    /// and replies are split.
    #[arg(
        long,
        env = "PGSHARE_TUNNEL_MAX_FRAME",
        value_name = "BYTES",
        default_value_t = 1 << 20
    )]
    tunnel_max_frame: usize,

    /// Most bytes of COPY FROM STDIN data for one statement on a host's
    /// database: a host's PGlite takes a COPY with all its data at once, so
    /// the gateway holds it until it is complete. Larger COPYs fail with
    /// 54000.
    #[arg(
        long,
        env = "PGSHARE_TUNNEL_MAX_COPY",
        value_name = "BYTES",
        default_value_t = 256 << 20
    )]
    tunnel_max_copy: usize,

    /// Seconds a host may go without running anything before it is
    /// disconnected (it reconnects by itself); 0 = never.
    #[arg(
        long,
        env = "PGSHARE_TUNNEL_IDLE_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 0
    )]
    tunnel_idle_timeout: u64,

    /// Seconds after which a host is disconnected, once no transaction is
    /// open, so that it reconnects with a fresh token; 0 = never.
    #[arg(
        long,
        env = "PGSHARE_TUNNEL_LIFETIME",
        value_name = "SECONDS",
        default_value_t = 0
    )]
    tunnel_lifetime: u64,

    /// Seconds a query waits for a host that went away to attach again
    /// before it fails with 57P03.
    #[arg(
        long,
        env = "PGSHARE_TUNNEL_HOST_WAIT",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    tunnel_host_wait: u64,

    /// Serve PGlite to the share page from this directory (the `dist`
    /// directory of the @electric-sql/pglite npm package) instead of loading
    /// it from the jsDelivr CDN.
    #[arg(long, env = "PGSHARE_PGLITE_DIST", value_name = "DIR")]
    pglite_dist: Option<PathBuf>,

    /// Live queries: `SELECT pgr.subscribe('id', 'SELECT ...')` in any
    /// database registers one (pgshare creates schema pgr there the first
    /// time a statement names it), and browsers follow its rows at
    /// ws://HTTP/ws/[DATABASE/]ID, HTTP/sse/[DATABASE/]ID and the page
    /// HTTP/live/[DATABASE/]ID; every change is also sent with NOTIFY pgr.
    /// `off` installs and serves nothing.
    #[arg(
        long,
        env = "PGSHARE_REALTIME",
        value_name = "on|off",
        default_value = "on",
        value_parser = on_off,
        action = clap::ArgAction::Set
    )]
    realtime: bool,

    /// Secret (at least 32 characters) that signs the tokens subscribers
    /// present: HS256 JSON Web Tokens with a `sub` claim (`exp` honoured),
    /// as ?token= or Authorization: Bearer. Without it, live queries are
    /// open to anyone while --http listens on loopback only, and not served
    /// at all on other addresses.
    #[arg(
        long,
        env = "PGSHARE_REALTIME_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    realtime_secret: Option<String>,

    /// A key that admits subscribers as role anon (as ?apikey= or
    /// Authorization: Bearer); an audience the subscription names still
    /// has to match.
    #[arg(
        long,
        env = "PGSHARE_REALTIME_ANON_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    realtime_anon_key: Option<String>,

    /// Refuse the anon key (403): only signed tokens subscribe.
    #[arg(long, env = "PGSHARE_REALTIME_REQUIRE_AUTH")]
    realtime_require_auth: bool,

    /// Origins (scheme://host[:port], comma-separated) whose pages may
    /// subscribe; a browser request from any other gets 403. Empty: the
    /// gateway's own origin only. Requests without an Origin header (not
    /// from a browser) are admitted.
    #[arg(
        long,
        env = "PGSHARE_REALTIME_ALLOWED_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    realtime_allowed_origins: Vec<String>,

    /// Subscriber sockets and event streams open at once at most; more get
    /// 503.
    #[arg(
        long,
        env = "PGSHARE_REALTIME_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 10_000
    )]
    realtime_max_connections: usize,

    /// Subscriber sockets one address may hold at once (0: no limit).
    #[arg(
        long,
        env = "PGSHARE_REALTIME_MAX_PER_IP",
        value_name = "N",
        default_value_t = 10
    )]
    realtime_max_per_ip: usize,

    /// Longest delta sent to subscribers, in bytes; a longer one reaches
    /// them as an overflow (fetch again). NOTIFY pgr carries deltas under
    /// 8000 bytes, and an overflow for longer ones.
    #[arg(
        long,
        env = "PGSHARE_REALTIME_MAX_MESSAGE",
        value_name = "BYTES",
        default_value_t = 1 << 20
    )]
    realtime_max_message: usize,
}

/// `on` or `off` (also true/false, yes/no, 1/0).
fn on_off(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("expected on or off, not {value:?}")),
    }
}

fn seconds(value: u64) -> Option<Duration> {
    (value > 0).then(|| Duration::from_secs(value))
}

impl ServeArgs {
    fn into_config(self) -> Result<Config> {
        let auth = self
            .auth
            .unwrap_or(if self.listen.iter().all(|a| a.ip().is_loopback()) {
                AuthMethod::Trust
            } else {
                AuthMethod::ScramSha256
            });
        let mut users: HashMap<String, Option<Secret>> = HashMap::new();
        users.insert("postgres".to_string(), self.password.map(Secret::Plain));
        if let Some(path) = &self.users_file {
            for (name, secret) in read_users_file(path)? {
                users.insert(name, Some(secret));
            }
        }
        let storage = if self.memory {
            Storage::Memory
        } else {
            Storage::Directory(self.data)
        };
        let upstream = self.upstream.as_deref().map(Upstream::parse).transpose()?;
        Ok(Config {
            listen: self.listen,
            upstream,
            pool_size: self.pool_size,
            server_lifetime: seconds(self.server_lifetime),
            max_prepared_statements: self.max_prepared_statements.max(1),
            server_idle_timeout: seconds(self.server_idle_timeout),
            unix_dir: self.unix_dir,
            storage,
            relaxed_durability: self.relaxed_durability,
            auto_create: self.auto_create,
            engine_idle_timeout: seconds(self.engine_idle_timeout),
            max_open_engines: self.max_open_engines.max(1),
            client_tls: self.ssl,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            sni_domain: self.sni_domain,
            auth,
            users,
            max_client_conn: self.max_client_conn,
            max_message_len: self.max_message_len,
            idle_in_transaction_timeout: seconds(self.idle_in_transaction_timeout),
            query_wait_timeout: seconds(self.query_wait_timeout),
            client_login_timeout: seconds(self.client_login_timeout),
            admin_users: self.admin_users,
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout),
            upstream_databases: Vec::new(),
            embedded_databases: Vec::new(),
            tunnel_databases: Vec::new(),
            http: pgshare::config_file::parse_http(&self.http)?,
            tunnel: TunnelSettings {
                secret: self.tunnel_secret,
                heartbeat: Duration::from_secs(self.tunnel_heartbeat),
                max_frame: self.tunnel_max_frame,
                max_copy: self.tunnel_max_copy,
                idle_timeout: seconds(self.tunnel_idle_timeout),
                lifetime: seconds(self.tunnel_lifetime),
                host_wait: Duration::from_secs(self.tunnel_host_wait),
                pglite_dist: self.pglite_dist,
            },
            realtime: RealtimeSettings {
                enabled: self.realtime,
                secret: self.realtime_secret,
                anon_key: self.realtime_anon_key,
                require_auth: self.realtime_require_auth,
                allowed_origins: self.realtime_allowed_origins,
                max_connections: self.realtime_max_connections,
                max_per_ip: self.realtime_max_per_ip,
                max_message: self.realtime_max_message,
            },
        })
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "info,wasmer=warn,wasmer_wasix=warn,oliphaunt_wasix=warn".into()
            }),
        )
        .init();
    let matches = Cli::command().get_matches();
    let args = match Cli::from_arg_matches(&matches) {
        Ok(Cli {
            command: Command::Serve(args),
        }) => *args,
        Ok(Cli {
            command: Command::Token(args),
        }) => return print_token(args),
        Err(err) => err.exit(),
    };
    // Flags given on the command line or by environment variable win over
    // the configuration file.
    let explicit: HashSet<String> = matches
        .subcommand_matches("serve")
        .map(|serve| {
            serve
                .ids()
                .filter(|id| {
                    matches!(
                        serve.value_source(id.as_str()),
                        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                    )
                })
                .map(|id| id.as_str().to_string())
                .collect()
        })
        .unwrap_or_default();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let result = runtime
        .context("could not start the runtime")
        .and_then(|runtime| runtime.block_on(serve(args, explicit)));
    match result {
        Ok(code) => code,
        Err(err) => {
            error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_token(args: TokenArgs) -> ExitCode {
    if args.tunnel_secret.chars().count() < token::MIN_SECRET_LEN {
        error!(
            "the tunnel secret must have at least {} characters",
            token::MIN_SECRET_LEN
        );
        return ExitCode::FAILURE;
    }
    match token::issue(
        &args.tunnel_secret,
        &args.database,
        seconds(args.expires_in),
    ) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            error!("could not make a token: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs, explicit: HashSet<String>) -> Result<ExitCode> {
    let config = load_config(&args, &explicit)?;
    let grace = Duration::from_secs(args.shutdown_timeout);
    let run = args
        .run
        .clone()
        .map(|command| RunCommand::new(command, &config))
        .transpose()?;
    let server = Server::start(config)
        .await
        .context("pgshare could not start")?;
    if let Some(path) = args.config.clone() {
        server.gateway().set_config_source(ConfigSource {
            path,
            load: Box::new(move || load_config(&args, &explicit)),
        });
    }
    tokio::spawn(reload_on_hangup(server.gateway()));
    match run {
        Some(run) => run.serve(server, grace).await,
        None => server
            .run(shutdown_signal(grace))
            .await
            .map(|()| ExitCode::SUCCESS),
    }
}

/// The configuration from the flags and, with --config, the file.
fn load_config(args: &ServeArgs, explicit: &HashSet<String>) -> Result<Config> {
    let mut config = args.clone().into_config()?;
    if let Some(path) = &args.config {
        ConfigFile::read(path)?.apply(&mut config, |name| explicit.contains(name))?;
    }
    Ok(config)
}

/// Reloads the configuration file on SIGHUP, for new connections (as the
/// admin console's RELOAD does).
async fn reload_on_hangup(gateway: Arc<Gateway>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangups.recv().await.is_some() {
        // The outcome is logged.
        let _ = reload::reload(&gateway, "SIGHUP");
    }
}

/// Waits for SIGTERM or SIGINT and returns how long running units of work
/// may take to finish: `grace` for SIGTERM, at most a second for SIGINT
/// (Ctrl-C).
async fn shutdown_signal(grace: Duration) -> Duration {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => grace.min(Duration::from_secs(1)),
        _ = term.recv() => grace,
    }
}
