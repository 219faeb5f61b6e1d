//! A throwaway PostgreSQL server for tests of the upstream engine: initdb in a
//! temporary directory, started on a free loopback port with SCRAM over TCP
//! and trust on its Unix socket, stopped when dropped. PostgreSQL refuses to
//! run as root, so as root it runs as the `postgres` user.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const PASSWORD: &str = "upstream-secret";

pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// The server options `pg_ctl start` gets.
    options: String,
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (Debian package postgresql)")
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// Runs a PostgreSQL program, as `postgres` when we are root.
fn run(program: &Path, args: &[&str]) {
    let mut command = if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    };
    let output = command
        .args(args)
        .output()
        .expect("run a PostgreSQL program");
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{}{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Postgres {
    pub fn start() -> Self {
        Self::start_with(|_| String::new())
    }

    /// A server that also accepts TLS, with a certificate for `localhost`
    /// signed by a test CA; returns the server and the CA's PEM file.
    pub fn start_tls() -> (Self, PathBuf) {
        let mut ca_path = PathBuf::new();
        let server = Self::start_with(|dir| {
            let (ca, server_cert, server_key) = test_certificates();
            ca_path = dir.join("ca.pem");
            std::fs::write(&ca_path, ca).unwrap();
            std::fs::write(dir.join("server.crt"), server_cert).unwrap();
            std::fs::write(dir.join("server.key"), server_key).unwrap();
            for file in ["server.crt", "server.key"] {
                if is_root() {
                    Command::new("chown")
                        .args(["postgres"])
                        .arg(dir.join(file))
                        .status()
                        .unwrap();
                }
            }
            Command::new("chmod")
                .arg("600")
                .arg(dir.join("server.key"))
                .status()
                .unwrap();
            format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                dir.join("server.crt").display(),
                dir.join("server.key").display()
            )
        });
        (server, ca_path)
    }

    /// Starts a server; `extra` may write files into its directory and
    /// returns more server options.
    fn start_with(extra: impl FnOnce(&Path) -> String) -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(dir.path().join("pwfile"), PASSWORD).unwrap();
        if is_root() {
            Command::new("chown")
                .args(["postgres", &path("pwfile")])
                .status()
                .unwrap();
        }
        run(
            &bin.join("initdb"),
            &[
                "-D",
                &path("data"),
                "-U",
                "postgres",
                "--pwfile",
                &path("pwfile"),
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
            dir.path().display()
        );
        options.push_str(&extra(dir.path()));
        let server = Self {
            port,
            bin,
            dir,
            options,
        };
        server.start_again();
        server
    }

    /// Starts the server (again, after `stop`).
    pub fn start_again(&self) {
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        run(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                &path("data"),
                "-o",
                &self.options,
                "-l",
                &path("log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server, disconnecting every session.
    pub fn stop(&self) {
        let data = self.dir.path().join("data").display().to_string();
        run(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-m", "fast", "-w", "stop"],
        );
    }

    /// The server over TCP with SCRAM.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// The server over its Unix socket with trust.
    pub fn socket_url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.path().display(),
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        let pg_ctl = self.bin.join("pg_ctl");
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            command
        } else {
            Command::new(&pg_ctl)
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

/// A CA, and a certificate and key for `localhost` it signed, all PEM.
pub fn test_certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pgshare test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}
