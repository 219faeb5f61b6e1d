//! TLS between clients and pgshare: psql with sslmode=require and
//! verify-full, plaintext refused when TLS is required, routing by the TLS
//! host name (SNI), and PostgreSQL 17's direct TLS.

mod support;

use std::process::Command;
use std::sync::Arc;

use pgshare::engine::embedded::Storage;
use pgshare::frontend::tls::ClientTls;
use support::{Gateway, sqlstate, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Runs psql with a libpq connection string; returns success and output.
fn psql(conninfo: &str, command: &str) -> (bool, String) {
    let output = Command::new("psql")
        .args([conninfo, "-X", "-A", "-t", "-c", command])
        .output()
        .expect("run psql");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

async fn psql_async(conninfo: String, command: &'static str) -> (bool, String) {
    tokio::task::spawn_blocking(move || psql(&conninfo, command))
        .await
        .unwrap()
}

/// A gateway with client TLS in `mode`, keeping its generated certificate in
/// the returned directory.
async fn tls_gateway(mode: ClientTls, sni_domain: Option<&str>) -> (Gateway, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.storage = Storage::Directory(data.path().to_path_buf());
    config.client_tls = mode;
    config.sni_domain = sni_domain.map(str::to_string);
    (Gateway::start_with(config).await, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_connects_with_require_and_with_verify_full_against_the_generated_certificate() {
    let (gateway, data) = tls_gateway(ClientTls::On, None).await;
    let port = gateway.addr.port();
    let cert = data.path().join("server.crt");
    assert!(
        cert.exists(),
        "a certificate is generated into the data directory"
    );
    let (ok, info) = psql_async(
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=require"),
        "\\conninfo",
    )
    .await;
    assert!(ok && info.contains("SSL connection"), "{info}");
    let (ok, out) = psql_async(
        format!(
            "host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
            cert.display()
        ),
        "SELECT 'verified'",
    )
    .await;
    assert!(ok && out.trim() == "verified", "{out}");
    // Another CA's root does not vouch for pgshare's certificate.
    let other = tempfile::tempdir().unwrap();
    let other_root = other.path().join("root.crt");
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&other_root, stranger.cert.pem()).unwrap();
    let (ok, out) = psql_async(
        format!(
            "host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
            other_root.display()
        ),
        "SELECT 1",
    )
    .await;
    assert!(!ok && out.contains("certificate verify failed"), "{out}");
    // Plaintext is still served when TLS is only offered.
    let (ok, out) = psql_async(
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable"),
        "SELECT 'plain'",
    )
    .await;
    assert!(ok && out.trim() == "plain", "{out}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_refuses_plaintext_tcp_clients_with_28000() {
    let (gateway, _data) = tls_gateway(ClientTls::Required, None).await;
    let refused = gateway
        .try_connect(gateway.config_for("postgres", "postgres"))
        .await
        .expect_err("plaintext is refused");
    assert_eq!(sqlstate(&refused), "28000");
    let port = gateway.addr.port();
    let (ok, out) = psql_async(
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=require"),
        "SELECT 'encrypted'",
    )
    .await;
    assert!(ok && out.trim() == "encrypted", "{out}");
    // A Unix socket needs no TLS, as with PostgreSQL.
    let (ok, out) = psql_async(
        format!(
            "host={} port={port} user=postgres dbname=postgres",
            gateway.unix_dir.display()
        ),
        "SELECT 'local'",
    )
    .await;
    assert!(ok && out.trim() == "local", "{out}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_host_name_picks_the_database() {
    let (gateway, _data) = tls_gateway(ClientTls::On, Some("db.example.test")).await;
    let port = gateway.addr.port();
    for name in ["alpha", "beta"] {
        let (ok, out) = psql_async(
            format!(
                "host={name}.db.example.test hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=require"
            ),
            "SELECT current_database()",
        )
        .await;
        assert!(ok && out.trim() == name, "{out}");
    }
    // Without SNI the database parameter decides.
    let (ok, out) = psql_async(
        format!("host=127.0.0.1 port={port} user=postgres dbname=beta sslmode=require"),
        "SELECT current_database()",
    )
    .await;
    assert!(ok && out.trim() == "beta", "{out}");
    gateway.stop().await;
}

/// A TLS client configuration trusting the gateway's certificate, with ALPN
/// `alpn`.
fn direct_client(cert: &std::path::Path, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn startup_packet(user: &str, database: &str) -> Vec<u8> {
    let mut body = 196608i32.to_be_bytes().to_vec();
    for (key, value) in [("user", user), ("database", database)] {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_with_alpn_postgresql_logs_in_and_routes_by_sni() {
    let (gateway, data) = tls_gateway(ClientTls::Required, Some("db.example.test")).await;
    let connector = direct_client(&data.path().join("server.crt"), b"postgresql");
    let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let name = ServerName::try_from("gamma.db.example.test").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("direct TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    tls.write_all(&startup_packet("postgres", "postgres"))
        .await
        .unwrap();
    let mut first = [0u8; 9];
    tls.read_exact(&mut first).await.unwrap();
    assert_eq!(first[0], b'R', "authentication follows");
    assert_eq!(&first[5..9], &0i32.to_be_bytes(), "AuthenticationOk");
    drop(tls);
    let client = gateway
        .try_connect(gateway.config_for("postgres", "gamma"))
        .await;
    // Plaintext is refused here; that the SNI created "gamma" shows through
    // the catalog of another TLS session instead.
    assert!(client.is_err());
    let port = gateway.addr.port();
    let mut listed = String::new();
    for _ in 0..20 {
        // Other databases' catalogs learn of a new one in the background.
        let (ok, out) = psql_async(
            format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=require"),
            "SELECT count(*) FROM pg_database WHERE datname = 'gamma'",
        )
        .await;
        assert!(ok, "{out}");
        listed = out.trim().to_string();
        if listed == "1" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(listed, "1", "the direct TLS client's SNI created gamma");
    // Direct TLS naming another protocol is refused.
    let wrong = direct_client(&data.path().join("server.crt"), b"http/1.1");
    let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    assert!(wrong.connect(name, tcp).await.is_err());
    gateway.stop().await;
}
