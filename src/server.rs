//! The running gateway: its engines opened and its sockets bound, the loops
//! that accept connections, and the shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::net::{TcpListener, UnixListener};
use tracing::{info, warn};

use crate::config::{Config, UpstreamPool};
use crate::database::{Database, EmbeddedOptions, Registry};
use crate::engine::connect::Connect;
use crate::engine::upstream::Upstream;
use crate::frontend::login::{Peer, serve_connection, serve_tcp};
use crate::frontend::tls::Connection;
use crate::gateway::Gateway;
use crate::pool::PoolLimits;
use crate::realtime::Realtime;
use crate::scheduler::{Reopen, Scheduler};
use crate::session::listen::Notifier;
use crate::session::statements::SessionStatements;

/// A gateway whose engine is open and whose sockets are bound.
pub struct Server {
    gateway: Arc<Gateway>,
    tcp: Vec<TcpListener>,
    unix: Option<(UnixListener, PathBuf)>,
    /// The HTTP port for hosts and the share page.
    http: Option<TcpListener>,
}

impl Server {
    /// Opens the engine and binds every listener; fails before serving anyone
    /// when a port is taken or the data directory is unusable.
    pub async fn start(config: Config) -> Result<Self> {
        config.validate()?;
        let mut tcp = Vec::new();
        for addr in &config.listen {
            let listener = TcpListener::bind(addr).await.with_context(|| {
                format!("listen on {addr} (is another server using the port? choose another with --listen)")
            })?;
            tcp.push(listener);
        }
        let port = match tcp.first() {
            Some(listener) => listener.local_addr()?.port(),
            None => 5432,
        };
        let unix = match &config.unix_dir {
            Some(dir) => Some(bind_unix(dir, port).await?),
            None => None,
        };
        let http = match config.http {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "listen for HTTP on {addr} (choose another address with --http, or --http off)"
                )
            })?),
            None => None,
        };
        let mut upstream_databases = Vec::new();
        if let Some(upstream) = &config.upstream {
            upstream_databases.push(
                upstream_database(
                    upstream,
                    upstream.database(),
                    UpstreamPool {
                        size: config.pool_size,
                        lifetime: config.server_lifetime,
                        idle_timeout: config.server_idle_timeout,
                    },
                    config.max_prepared_statements,
                )
                .await?,
            );
        }
        for (name, served) in &config.upstream_databases {
            upstream_databases.push(
                upstream_database(
                    &served.upstream,
                    name,
                    served.pool,
                    config.max_prepared_statements,
                )
                .await?,
            );
        }
        // A gateway in front of one server (--upstream) serves only it.
        let embedded = config.upstream.is_none().then(|| EmbeddedOptions {
            storage: config.storage.clone(),
            relaxed_durability: config.relaxed_durability,
            max_prepared_statements: config.max_prepared_statements,
            auto_create: config.auto_create,
            idle_timeout: config.engine_idle_timeout,
            max_open: config.max_open_engines,
        });
        let registry = Registry::new(
            embedded,
            upstream_databases,
            &config.embedded_databases,
            &config.tunnel_databases,
            config.tunnel.host_wait,
        )
        .await?;
        let gateway = Gateway::new(config, registry)?;
        Ok(Self {
            gateway,
            tcp,
            unix,
            http,
        })
    }

    /// The running gateway, to reload its configuration.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.clone()
    }

    /// The TCP addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The HTTP address actually bound, if any.
    pub fn local_http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves clients until `shutdown` completes with a grace period (or
    /// the admin console's `SHUTDOWN` asks, with `shutdown_timeout`), then
    /// shuts down: no new connections; idle and waiting clients are
    /// disconnected with 57P01 at once, running units of work may finish
    /// within the grace period (then they are rolled back and their clients
    /// disconnected with 57P01); finally every engine is flushed and closed.
    pub async fn run(self, shutdown: impl Future<Output = Duration>) -> Result<()> {
        let postgres_addr = self.local_addrs().first().copied();
        let Server {
            gateway,
            tcp,
            unix,
            http,
        } = self;
        let mut accept_tasks = Vec::new();
        let realtime = Realtime::start(&gateway);
        // The HTTP port has a thread of its own: fanning a change out to
        // thousands of live-query sockets never holds up SQL clients, nor
        // they the sockets.
        let http_runtime = HttpThread(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("pgshare-http")
                .enable_all()
                .build()
                .context("could not start the HTTP port's thread")?,
        ));
        if let Some(listener) = http {
            if let Ok(addr) = listener.local_addr() {
                info!(
                    "Live Share: hosts attach at ws://{addr}/tunnel/<database>; the share page is http://{addr}/share; Prometheus metrics are at http://{addr}/metrics"
                );
                if realtime.is_some() {
                    info!(
                        "live queries: SELECT pgr.subscribe('<id>', 'SELECT ...') in any database, then ws://{addr}/ws/[<database>/]<id> or the page http://{addr}/live/[<database>/]<id>"
                    );
                }
            }
            accept_tasks.push(http_runtime.spawn(crate::http::serve(
                listener,
                gateway.clone(),
                realtime,
                postgres_addr,
            )));
        }
        for listener in tcp {
            if let Ok(addr) = listener.local_addr() {
                info!("listening on {addr}");
            }
            let gateway = gateway.clone();
            accept_tasks.push(tokio::spawn(accept_tcp(listener, gateway)));
        }
        let socket_path = match unix {
            Some((listener, path)) => {
                info!("listening on Unix socket {}", path.display());
                accept_tasks.push(tokio::spawn(accept_unix(listener, gateway.clone())));
                Some(path)
            }
            None => None,
        };
        let grace = tokio::select! {
            grace = shutdown => grace,
            () = gateway.shutdown_requested() => gateway.config().shutdown_timeout,
        };
        for task in accept_tasks {
            task.abort();
        }
        if let Some(path) = socket_path {
            let _ = std::fs::remove_file(path);
        }
        let connected = |gateway: &Gateway| {
            gateway.config().max_client_conn - gateway.connections.available_permits()
        };
        info!(
            "shutting down: no new connections; {} clients connected; running units of work may finish within {}s",
            connected(&gateway),
            grace.as_secs_f32()
        );
        let deadline = Instant::now() + grace;
        gateway.shutdown.send_replace(Some(deadline));
        gateway.activity.shut_down(deadline);
        // Clients leave at once or by the deadline; rolling back and
        // cleaning up after them takes a moment more.
        let give_up = deadline + Duration::from_secs(5);
        while connected(&gateway) > 0 && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if connected(&gateway) > 0 {
            warn!(
                "{} clients were still connected after the grace period; closing the engines anyway",
                connected(&gateway)
            );
        }
        gateway.registry.close_all().await;
        info!("all engines closed; committed data is on disk");
        // Hosts and subscribers still connected go with the HTTP thread.
        drop(http_runtime);
        Ok(())
    }
}

/// The HTTP port's runtime, stopped without waiting when dropped (which
/// may happen inside another runtime).
struct HttpThread(Option<tokio::runtime::Runtime>);

impl HttpThread {
    fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0
            .as_ref()
            .expect("the HTTP thread runs until dropped")
            .spawn(task)
    }
}

impl Drop for HttpThread {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Database `name` served by the upstream server `upstream`: one session
/// opened now (to fail early and learn the parameters), the others when the
/// load needs them.
async fn upstream_database(
    upstream: &Upstream,
    name: &str,
    pool: UpstreamPool,
    max_prepared_statements: usize,
) -> Result<Database> {
    let limit = max_prepared_statements;
    let mut session = upstream.connect().await?;
    session.statements = SessionStatements::with_limit(limit);
    info!(
        "serving database \"{name}\" from the upstream server's database \"{}\" with up to {} server sessions",
        upstream.database(),
        pool.size
    );
    let parameters = session.parameters.clone();
    let connector = upstream.clone();
    let connect: Connect = Arc::new(move || {
        let upstream = connector.clone();
        Box::pin(async move {
            let mut session = upstream.connect().await?;
            session.statements = SessionStatements::with_limit(limit);
            Ok(session)
        })
    });
    let notifier = Arc::new(Notifier::default());
    let scheduler = if pool.size > 1 {
        Scheduler::pooled(
            session,
            connect,
            PoolLimits {
                size: pool.size,
                lifetime: pool.lifetime,
                idle_timeout: pool.idle_timeout,
            },
            notifier.clone(),
        )
    } else {
        Scheduler::start(Some(session), notifier.clone(), Reopen::Retrying(connect))
    };
    Ok(Database::new(
        name.to_string(),
        parameters,
        scheduler,
        notifier,
        None,
    ))
}

async fn bind_unix(dir: &std::path::Path, port: u16) -> Result<(UnixListener, PathBuf)> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("create socket directory {}", dir.display()))?;
    let path = dir.join(format!(".s.PGSQL.{port}"));
    if path.exists() {
        if tokio::net::UnixStream::connect(&path).await.is_ok() {
            anyhow::bail!("another server is listening on {}", path.display());
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(&path).with_context(|| format!("listen on {}", path.display()))?;
    Ok((listener, path))
}

async fn accept_tcp(listener: TcpListener, gateway: Arc<Gateway>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_tcp(stream, peer, gateway.clone()));
            }
            Err(err) => {
                warn!("accepting a TCP connection failed: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accept_unix(listener: UnixListener, gateway: Arc<Gateway>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(
                    Connection::Plain(stream),
                    Peer::Unix,
                    gateway.clone(),
                ));
            }
            Err(err) => {
                warn!("accepting a Unix socket connection failed: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
