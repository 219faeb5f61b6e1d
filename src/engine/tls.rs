//! TLS to an upstream server with libpq's `sslmode` meanings: `disable` never,
//! `prefer` when the server offers it, `require` always (without checking the
//! certificate, as libpq does without a root certificate), `verify-full`
//! always, checking the certificate against `sslrootcert` and the host name.
//! `verify-ca` is taken as `verify-full`, which is stricter.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            "disable" | "allow" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => bail!("invalid sslmode {other:?}"),
        })
    }
}

/// How to secure connections to one server.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// The CA certificates (PEM) that `verify-ca`/`verify-full` trust.
    pub root_cert: Option<PathBuf>,
}

/// A server connection, encrypted or not.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl TlsSettings {
    /// Asks the server for TLS (`SSLRequest`) when the mode wants it and
    /// secures `stream`, or returns it as it is.
    pub async fn secure(&self, mut stream: TcpStream, host: &str) -> Result<Transport> {
        if self.mode == SslMode::Disable {
            return Ok(Transport::Plain(stream));
        }
        let mut request = 8i32.to_be_bytes().to_vec();
        request.extend_from_slice(&80877103i32.to_be_bytes());
        stream.write_all(&request).await?;
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await?;
        match answer[0] {
            b'S' => {}
            b'N' if self.mode == SslMode::Prefer => return Ok(Transport::Plain(stream)),
            b'N' => bail!(
                "the upstream server does not support TLS, but sslmode is {:?}",
                self.mode
            ),
            other => bail!("unexpected answer {other} to SSLRequest from the upstream server"),
        }
        let connector = TlsConnector::from(Arc::new(self.client_config()?));
        let name = ServerName::try_from(host.to_string())
            .with_context(|| format!("{host:?} is not a valid server name for TLS"))?;
        let tls = connector
            .connect(name, stream)
            .await
            .context("TLS handshake with the upstream server")?;
        Ok(Transport::Tls(Box::new(tls)))
    }

    fn client_config(&self) -> Result<ClientConfig> {
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let config = match self.mode {
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let path = self.root_cert.clone().or_else(default_root_cert).context(
                    "sslmode verify-ca/verify-full needs sslrootcert (or ~/.postgresql/root.crt)",
                )?;
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(&path)
                    .with_context(|| format!("read {}", path.display()))?
                {
                    roots.add(cert.with_context(|| format!("parse {}", path.display()))?)?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
        };
        Ok(config)
    }
}

fn default_root_cert() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("HOME")?).join(".postgresql/root.crt");
    path.exists().then_some(path)
}

/// `require`/`prefer`: encryption without authenticating the server, as
/// libpq does in those modes. Handshake signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
