//! What every connection task shares: the settings new connections get
//! (replaced by a reload), the databases, cancel keys, the connection limit,
//! the shutdown signal and the activity record. `server` binds the sockets
//! and runs it.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use anyhow::Result;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::activity::Activity;
use crate::cancel::CancelRegistry;
use crate::config::{Config, ConfigSource};
use crate::database::Registry;
use crate::engine::embedded::Storage;
use crate::frontend::tls::{self, CertificateSource, ClientTls};

/// What every connection task shares.
pub struct Gateway {
    /// The settings new connections get; replaced by a reload.
    current: RwLock<Current>,
    pub registry: Arc<Registry>,
    pub cancels: CancelRegistry,
    /// One permit per logged-in client, up to `max_client_conn`.
    pub connections: Arc<Semaphore>,
    /// Set when the gateway shuts down: running units of work may finish
    /// until this instant; then every client is disconnected with 57P01.
    pub shutdown: watch::Sender<Option<Instant>>,
    /// What clients and databases do, for the admin console and metrics.
    pub activity: Arc<Activity>,
    /// Where `RELOAD` and SIGHUP read the configuration from.
    config_source: OnceLock<ConfigSource>,
    /// The admin console's `SHUTDOWN`.
    shutdown_requested: Notify,
}

/// What a reload may replace.
struct Current {
    config: Arc<Config>,
    /// Accepts client TLS, unless it is off.
    tls: Option<TlsAcceptor>,
}

impl Gateway {
    /// The shared state of a gateway serving `registry` with `config`.
    pub fn new(config: Config, registry: Arc<Registry>) -> Result<Arc<Self>> {
        let tls = match config.client_tls {
            ClientTls::Off => None,
            ClientTls::On | ClientTls::Required => Some(client_tls_acceptor(&config)?),
        };
        Ok(Arc::new(Self {
            connections: Arc::new(Semaphore::new(config.max_client_conn)),
            current: RwLock::new(Current {
                config: Arc::new(config),
                tls,
            }),
            registry,
            cancels: CancelRegistry::new(),
            shutdown: watch::Sender::new(None),
            activity: Activity::new(),
            config_source: OnceLock::new(),
            shutdown_requested: Notify::new(),
        }))
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<Config> {
        self.current().config.clone()
    }

    /// The TLS acceptor for a new connection, unless TLS is off.
    pub fn tls(&self) -> Option<TlsAcceptor> {
        self.current().tls.clone()
    }

    /// Takes on a reloaded configuration for new connections: roles and
    /// passwords, authentication, timeouts and TLS. Returns the settings that
    /// changed but need a restart, which keep their old values.
    pub fn reload(&self, mut new: Config) -> Result<Vec<&'static str>> {
        new.validate()?;
        let old = self.config();
        let needs_restart = old.needs_restart_for(&new);
        new.keep_unreloadable(&old);
        let tls = match new.client_tls {
            ClientTls::Off => None,
            ClientTls::On | ClientTls::Required => Some(client_tls_acceptor(&new)?),
        };
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Current {
            config: Arc::new(new),
            tls,
        };
        Ok(needs_restart)
    }

    /// Says where reloads read the configuration from (once, at start).
    pub fn set_config_source(&self, source: ConfigSource) {
        let _ = self.config_source.set(source);
    }

    pub fn config_source(&self) -> Option<&ConfigSource> {
        self.config_source.get()
    }

    /// Starts the same graceful shutdown as SIGTERM, with the configured
    /// `shutdown_timeout`.
    pub fn request_shutdown(&self) {
        self.shutdown_requested.notify_one();
    }

    /// Completes when the admin console asks for a shutdown.
    pub async fn shutdown_requested(&self) {
        self.shutdown_requested.notified().await;
    }

    fn current(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The acceptor for client TLS, with the configured certificate or one
/// generated for the listen addresses, `localhost` and the SNI domain.
fn client_tls_acceptor(config: &Config) -> Result<TlsAcceptor> {
    let source = match (&config.tls_cert, &config.tls_key, &config.storage) {
        (Some(cert), Some(key), _) => CertificateSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        (_, _, Storage::Directory(dir)) => CertificateSource::Generated(dir.clone()),
        (_, _, Storage::Memory) => CertificateSource::Ephemeral,
    };
    let mut names = vec!["localhost".to_string()];
    names.extend(
        config
            .listen
            .iter()
            .map(|addr| addr.ip())
            .filter(|ip| !ip.is_unspecified())
            .map(|ip| ip.to_string()),
    );
    if let Some(domain) = &config.sni_domain {
        names.push(domain.clone());
        names.push(format!("*.{domain}"));
    }
    names.dedup();
    tls::acceptor(&source, &names)
}
