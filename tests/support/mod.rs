//! Starts a gateway in-process on a free loopback port for one test.

#![allow(dead_code)]

pub mod hosts;
pub mod live;
pub mod postgres;
pub mod process;
pub mod programs;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pgshare::config::{AuthMethod, Config, Secret};
use pgshare::engine::embedded::Storage;
use pgshare::protocol::frame::DEFAULT_MAX_MESSAGE_LEN;
use pgshare::server::Server;
use tokio::sync::oneshot;
use tokio_postgres::{Client, NoTls};

pub struct Gateway {
    pub addr: SocketAddr,
    pub unix_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// Settings for a test gateway: trust auth, an in-memory database, short limits.
pub fn test_config() -> Config {
    let mut users = HashMap::new();
    users.insert("postgres".to_string(), None);
    Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        unix_dir: None,
        storage: Storage::Memory,
        upstream: None,
        upstream_databases: Vec::new(),
        embedded_databases: Vec::new(),
        tunnel_databases: Vec::new(),
        http: None,
        tunnel: pgshare::config::TunnelSettings::default(),
        realtime: pgshare::config::RealtimeSettings::default(),
        pool_size: 1,
        server_lifetime: None,
        max_prepared_statements: 200,
        auto_create: true,
        engine_idle_timeout: None,
        max_open_engines: 16,
        client_tls: pgshare::frontend::tls::ClientTls::Off,
        tls_cert: None,
        tls_key: None,
        sni_domain: None,
        server_idle_timeout: None,
        relaxed_durability: true,
        auth: AuthMethod::Trust,
        users,
        admin_users: vec!["postgres".to_string()],
        max_client_conn: 100,
        max_message_len: DEFAULT_MAX_MESSAGE_LEN,
        idle_in_transaction_timeout: Some(Duration::from_secs(30)),
        query_wait_timeout: Some(Duration::from_secs(60)),
        client_login_timeout: Some(Duration::from_secs(10)),
        shutdown_timeout: Duration::from_secs(5),
    }
}

pub fn with_password(mut config: Config, auth: AuthMethod, user: &str, password: &str) -> Config {
    config.auth = auth;
    config.users.clear();
    config
        .users
        .insert(user.to_string(), Some(Secret::Plain(password.to_string())));
    config
}

impl Gateway {
    pub async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(mut config: Config) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let unix_dir = dir.path().to_path_buf();
        config.unix_dir = Some(unix_dir.clone());
        let server = Server::start(config).await.expect("gateway starts");
        let addr = server.local_addrs()[0];
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
            Duration::from_secs(5)
        }));
        Self {
            addr,
            unix_dir,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@{}/postgres", self.addr)
    }

    pub fn config_for(&self, user: &str, database: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(self.addr.ip().to_string())
            .port(self.addr.port())
            .user(user)
            .dbname(database);
        config
    }

    pub async fn connect(&self) -> Client {
        self.try_connect(self.config_for("postgres", "postgres"))
            .await
            .expect("connect to the gateway")
    }

    pub async fn try_connect(
        &self,
        config: tokio_postgres::Config,
    ) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// A client whose asynchronous messages (notifications, notices) arrive on
    /// the returned channel.
    pub async fn connect_with_messages(
        &self,
    ) -> (
        Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>,
    ) {
        let (client, mut connection) = self
            .config_for("postgres", "postgres")
            .connect(NoTls)
            .await
            .expect("connect to the gateway");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = futures_util::StreamExt::next(&mut messages).await {
                if tx.send(message).is_err() {
                    break;
                }
            }
        });
        (client, rx)
    }

    /// Stops the gateway and waits until its engine is closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// The SQLSTATE of a failed call.
pub fn sqlstate(err: &tokio_postgres::Error) -> String {
    err.code()
        .map(|code| code.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {err}"))
}
