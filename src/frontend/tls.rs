//! TLS for clients: the certificate, the handshake after an `SSLRequest` or
//! right at the start (PostgreSQL 17's direct TLS, ALPN `postgresql`), and a
//! connection that is plain or encrypted.
//!
//! Without a configured certificate, a self-signed one is generated on first
//! run and kept in the data directory, so that `sslmode=require` works out of
//! the box and `verify-full` works with that file as the root certificate.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tracing::info;

/// What the gateway asks of clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTls {
    /// Decline TLS; clients with `sslmode=prefer` continue in plaintext.
    Off,
    /// Offer TLS; plaintext clients are served too.
    On,
    /// TCP clients must use TLS; plaintext ones get 28000 (Unix sockets
    /// are exempt, as in PostgreSQL).
    Required,
}

/// The ALPN protocol name PostgreSQL clients send.
pub const ALPN: &[u8] = b"postgresql";

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    /// PEM files given by the user.
    Files { cert: PathBuf, key: PathBuf },
    /// Generated once and kept in this directory (`server.crt`,
    /// `server.key`).
    Generated(PathBuf),
    /// Generated at every start and never written (`--memory`).
    Ephemeral,
}

/// A TLS acceptor for client connections.
pub fn acceptor(source: &CertificateSource, names: &[String]) -> Result<TlsAcceptor> {
    let (certs, key) = match source {
        CertificateSource::Files { cert, key } => (read_certs(cert)?, read_key(key)?),
        CertificateSource::Generated(dir) => {
            let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
            if !cert.exists() || !key.exists() {
                let (cert_pem, key_pem) = self_signed(names)?;
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("create {}", dir.display()))?;
                write_private(&key, key_pem.as_bytes())?;
                std::fs::write(&cert, cert_pem)
                    .with_context(|| format!("write {}", cert.display()))?;
                info!(
                    "generated a self-signed TLS certificate for {} in {} (give it to clients as sslrootcert for verify-full, or configure --tls-cert and --tls-key)",
                    names.join(", "),
                    cert.display()
                );
            }
            (read_certs(&cert)?, read_key(&key)?)
        }
        CertificateSource::Ephemeral => {
            let (cert_pem, key_pem) = self_signed(names)?;
            let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .context("read the generated certificate")?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .context("read the generated key")?;
            (certs, key)
        }
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not fit together")?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A self-signed certificate and its key, PEM encoded, for `names`.
fn self_signed(names: &[String]) -> Result<(String, String)> {
    let generated =
        rcgen::generate_simple_self_signed(names.to_vec()).context("generate a certificate")?;
    Ok((generated.cert.pem(), generated.key_pair.serialize_pem()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("read TLS certificate {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("read TLS certificate {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).with_context(|| {
        format!(
            "read TLS key {} (PEM, PKCS#8, PKCS#1 or SEC1)",
            path.display()
        )
    })
}

fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("write {}", path.display()))
}

/// A client connection, plain or encrypted.
pub enum Connection<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    /// During the handshake that turns the one into the other.
    Upgrading,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Performs the TLS handshake on a plain connection.
    pub async fn upgrade(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        let Connection::Plain(plain) = std::mem::replace(self, Connection::Upgrading) else {
            return Err(io::Error::other("the connection is not plain"));
        };
        *self = Connection::Tls(Box::new(acceptor.accept(plain).await?));
        Ok(())
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Connection::Tls(_))
    }

    /// The host name the client asked for in its TLS handshake (SNI).
    pub fn server_name(&self) -> Option<&str> {
        match self {
            Connection::Tls(tls) => tls.get_ref().1.server_name(),
            _ => None,
        }
    }

    /// The TLS version and cipher suite, as `TLSv1.3/TLS13_AES_256_GCM_SHA384`.
    pub fn tls_description(&self) -> Option<String> {
        let Connection::Tls(tls) = self else {
            return None;
        };
        let session = tls.get_ref().1;
        let version = match session.protocol_version()? {
            tokio_rustls::rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
            tokio_rustls::rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
            other => format!("{other:?}"),
        };
        match session.negotiated_cipher_suite() {
            Some(suite) => Some(format!("{version}/{:?}", suite.suite())),
            None => Some(version),
        }
    }

    /// The application protocol agreed in the handshake.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Connection::Tls(tls) => tls.get_ref().1.alpn_protocol(),
            _ => None,
        }
    }
}

fn upgrading() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "TLS handshake in progress")
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Connection<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Connection::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
            Connection::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Connection<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Connection::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
            Connection::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Connection::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Connection::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Connection::Plain(stream) => stream.is_write_vectored(),
            Connection::Tls(stream) => stream.is_write_vectored(),
            Connection::Upgrading => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Connection::Tls(stream) => Pin::new(stream).poll_flush(cx),
            Connection::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Connection::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
            Connection::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

/// The database an SNI host name routes to: `<name>.<domain>` gives
/// `name`.
pub fn sni_database<'a>(server_name: Option<&'a str>, domain: Option<&str>) -> Option<&'a str> {
    let (server_name, domain) = (server_name?, domain?);
    let name = server_name
        .strip_suffix(domain.trim_start_matches('.'))?
        .strip_suffix('.')?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_names_under_the_domain_route_to_their_first_labels() {
        let domain = Some("db.example.com");
        assert_eq!(
            sni_database(Some("app.db.example.com"), domain),
            Some("app")
        );
        assert_eq!(sni_database(Some("db.example.com"), domain), None);
        assert_eq!(sni_database(Some("app.example.com"), domain), None);
        assert_eq!(sni_database(Some("appdb.example.com"), domain), None);
        assert_eq!(sni_database(Some("app.db.example.com"), None), None);
        assert_eq!(sni_database(None, domain), None);
    }
}
