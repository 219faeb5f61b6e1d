//! A `pgshare serve` process, for what only a real process shows: signals,
//! crashes, the command line and its configuration file.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// A TCP port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `pgshare serve`, killed when dropped.
pub struct Pgshare {
    pub child: Child,
    pub port: u16,
}

impl Pgshare {
    /// Starts `pgshare serve --listen 127.0.0.1:<free port> <args>` with its
    /// log going to `stderr`, and waits until it accepts connections. The
    /// HTTP port is off unless `args` give `--http`.
    pub async fn start(args: &[&str], stderr: Stdio) -> Self {
        let port = free_port();
        let http_off: &[&str] = if args.contains(&"--http") {
            &[]
        } else {
            &["--http", "off"]
        };
        let child = Command::new(env!("CARGO_BIN_EXE_pgshare"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(http_off)
            .args(args)
            .stderr(stderr)
            .spawn()
            .expect("start pgshare");
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "pgshare did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Pgshare { child, port }
    }

    /// A client as `user` with `password` on `database`, and its connection
    /// task, which ends with the error that closed it.
    pub async fn connect_as(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<
        (
            tokio_postgres::Client,
            JoinHandle<Result<(), tokio_postgres::Error>>,
        ),
        tokio_postgres::Error,
    > {
        let (client, connection) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(database)
            .connect(tokio_postgres::NoTls)
            .await?;
        Ok((client, tokio::spawn(connection)))
    }

    /// A client as `postgres` on database `postgres`.
    pub async fn connect(
        &self,
    ) -> (
        tokio_postgres::Client,
        JoinHandle<Result<(), tokio_postgres::Error>>,
    ) {
        self.connect_as("postgres", "", "postgres")
            .await
            .expect("connect to pgshare")
    }

    /// Sends the signal `name` (`TERM`, `INT`, `HUP`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-s", name, &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// SIGKILL: no shutdown, no flush beyond what each commit did.
    pub fn kill_hard(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits for the process to exit by itself, successfully; returns how
    /// long that took.
    pub async fn exited(mut self) -> Duration {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "pgshare exited with {status}");
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "pgshare did not exit"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Pgshare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
