//! The upstream engine: a real PostgreSQL server, reached over TCP or a Unix
//! socket, given by a libpq-style URL (`postgres://user:pass@host:port/db`).
//! The gateway logs in with the URL's user and password (trust, cleartext, md5
//! or SCRAM-SHA-256) and then treats the server session like any other engine
//! session.

use anyhow::{Context, Result, bail};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::{Config, Host};

use super::EngineSession;
use super::cancel::{ServerAddress, ServerCancel};
use super::tls::{SslMode, TlsSettings, Transport};

/// A parsed upstream server address.
#[derive(Debug, Clone)]
pub struct Upstream {
    config: Config,
    tls: TlsSettings,
}

impl Upstream {
    pub fn parse(url: &str) -> Result<Self> {
        let (rest, sslmode, root_cert) = take_tls_params(url);
        let config: Config = rest
            .parse()
            .with_context(|| format!("invalid upstream URL {url:?}"))?;
        if config.get_user().is_none() {
            bail!("the upstream URL {url:?} names no user");
        }
        let tls = TlsSettings {
            mode: SslMode::parse(sslmode.as_deref().unwrap_or("prefer"))?,
            root_cert: root_cert.map(Into::into),
        };
        Ok(Self { config, tls })
    }

    /// The database on the server, which clients reach under the same name.
    pub fn database(&self) -> &str {
        self.config.get_dbname().unwrap_or_else(|| self.user())
    }

    /// The role the gateway logs in as.
    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or_default()
    }

    /// The server's host name (or socket directory) and port.
    pub fn address(&self) -> (String, u16) {
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(name)) => name.clone(),
            Some(Host::Unix(dir)) => dir.display().to_string(),
            None => "localhost".to_string(),
        };
        (host, port)
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
                match self.tls.secure(stream, name).await? {
                    Transport::Plain(stream) => {
                        let (reader, writer) = stream.into_split();
                        (Box::new(reader), Box::new(writer))
                    }
                    Transport::Tls(stream) => {
                        let (reader, writer) = tokio::io::split(stream);
                        (Box::new(reader), Box::new(writer))
                    }
                }
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

/// Takes libpq's `sslmode` and `sslrootcert` out of a connection string (URL
/// or key=value form): the gateway handles TLS itself, in modes the URL
/// parser does not know.
fn take_tls_params(url: &str) -> (String, Option<String>, Option<String>) {
    let mut sslmode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            sslmode = Some(value.to_string());
            true
        }
        "sslrootcert" => {
            root_cert = Some(value.to_string());
            true
        }
        _ => false,
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        !take(key, &percent_decode(value))
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => url.to_string(),
        }
    } else {
        url.split_whitespace()
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                !take(key.trim(), value.trim())
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, sslmode, root_cert)
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = value
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_both_forms() {
        let (rest, mode, root) = take_tls_params(
            "postgres://u:p@db:5433/app?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(rest, "postgres://u:p@db:5433/app?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let (rest, mode, root) = take_tls_params("host=db user=u sslmode=require");
        assert_eq!(rest, "host=db user=u");
        assert_eq!(mode.as_deref(), Some("require"));
        assert_eq!(root, None);
        let (rest, mode, _) = take_tls_params("postgres://u@db/app");
        assert_eq!((rest.as_str(), mode), ("postgres://u@db/app", None));
    }

    #[test]
    fn unknown_sslmodes_are_refused() {
        assert!(Upstream::parse("postgres://u@db/app?sslmode=sometimes").is_err());
        assert!(Upstream::parse("postgres://u@db/app?sslmode=verify-full").is_ok());
    }
}
