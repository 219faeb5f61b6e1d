//! The upstream engine: a real PostgreSQL server, reached over TCP or a Unix
//! socket, given by a libpq-style URL (`postgres://user:pass@host:port/db`).
//! The gateway logs in with the URL's user and password (trust, cleartext, md5
//! or SCRAM-SHA-256) and then treats the server session like any other engine
//! session.

use anyhow::{Context, Result, bail};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::{Config, Host, SslMode};

use super::EngineSession;
use super::cancel::{ServerAddress, ServerCancel};

/// A parsed upstream server address.
#[derive(Debug, Clone)]
pub struct Upstream {
    config: Config,
}

impl Upstream {
    pub fn parse(url: &str) -> Result<Self> {
        let config: Config = url
            .parse()
            .with_context(|| format!("invalid upstream URL {url:?}"))?;
        if config.get_user().is_none() {
            bail!("the upstream URL {url:?} names no user");
        }
        if config.get_ssl_mode() == SslMode::Require {
            bail!(
                "sslmode=require: TLS to the upstream server is not supported yet; use sslmode=disable or prefer"
            );
        }
        Ok(Self { config })
    }

    /// The database on the server, which clients reach under the same name.
    pub fn database(&self) -> &str {
        self.config.get_dbname().unwrap_or_else(|| self.user())
    }

    fn user(&self) -> &str {
        self.config.get_user().unwrap_or_default()
    }

    /// Opens one server session.
    pub async fn connect(&self) -> Result<EngineSession> {
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let host = self
            .config
            .get_hosts()
            .first()
            .cloned()
            .unwrap_or(Host::Tcp("localhost".into()));
        let address = match &host {
            Host::Tcp(name) => ServerAddress::Tcp(name.clone(), port),
            Host::Unix(dir) => ServerAddress::Unix(dir.join(format!(".s.PGSQL.{port}"))),
        };
        let (reader, writer): (
            Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
        ) = match &host {
            Host::Tcp(name) => {
                let stream = TcpStream::connect((name.as_str(), port))
                    .await
                    .with_context(|| format!("connect to the upstream server {name}:{port}"))?;
                stream.set_nodelay(true)?;
                let (reader, writer) = stream.into_split();
                (Box::new(reader), Box::new(writer))
            }
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                let stream = UnixStream::connect(&path).await.with_context(|| {
                    format!("connect to the upstream server at {}", path.display())
                })?;
                let (reader, writer) = stream.into_split();
                (Box::new(reader), Box::new(writer))
            }
        };
        let mut session = EngineSession::start(
            reader,
            writer,
            self.user(),
            self.database(),
            self.config.get_password(),
        )
        .await
        .context("log in to the upstream server")?;
        session.cancel = session
            .backend_key
            .map(|(process_id, secret_key)| ServerCancel {
                address,
                process_id,
                secret_key,
            });
        Ok(session)
    }
}
