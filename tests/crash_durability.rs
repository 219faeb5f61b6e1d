//! `kill -9` of the gateway during a write load loses no acknowledged commit:
//! the clients keep a ledger of every COMMIT pgshare confirmed, the gateway
//! is killed mid-load and restarted on the same data directory, and every
//! ledger entry is there and the data is consistent.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `pgshare serve` on `data`, killed when dropped.
struct Gateway(Child);

impl Gateway {
    async fn start(data: &Path, port: u16) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_pgshare"))
            .args([
                "serve",
                "--ssl",
                "off",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--data")
            .arg(data)
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgshare");
        let deadline = Instant::now() + Duration::from_secs(60);
        while connect(port).await.is_err() {
            assert!(Instant::now() < deadline, "pgshare did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Gateway(child)
    }

    fn kill_hard(&mut self) {
        // SIGKILL: no shutdown, no flush beyond what each commit did.
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn connect(port: u16) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(connection);
    Ok(client)
}

const ACCOUNTS: i64 = 10;
const BALANCE: i64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_commit_survives_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut gateway = Gateway::start(data.path(), port).await;
    let setup = connect(port).await.unwrap();
    setup
        .batch_execute(&format!(
            "CREATE TABLE ledger(id bigint PRIMARY KEY, writer int); \
             CREATE TABLE accounts(id bigint PRIMARY KEY, balance bigint); \
             INSERT INTO accounts SELECT i, {BALANCE} FROM generate_series(1, {ACCOUNTS}) i"
        ))
        .await
        .unwrap();
    drop(setup);

    // Writers: autocommit inserts, and transfers between two accounts in an
    // explicit transaction that also records a ledger row.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for writer in 0..4i64 {
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            let Ok(client) = connect(port).await else {
                return;
            };
            for n in 0.. {
                let id = writer * 1_000_000 + n;
                let done = if n % 2 == 0 {
                    client
                        .execute(
                            "INSERT INTO ledger VALUES ($1, $2)",
                            &[&id, &(writer as i32)],
                        )
                        .await
                        .map(drop)
                } else {
                    let (from, to) = (n % ACCOUNTS + 1, (n + writer + 1) % ACCOUNTS + 1);
                    client
                        .batch_execute(&format!(
                            "BEGIN; \
                             UPDATE accounts SET balance = balance - 7 WHERE id = {from}; \
                             UPDATE accounts SET balance = balance + 7 WHERE id = {to}; \
                             INSERT INTO ledger VALUES ({id}, {writer}); COMMIT"
                        ))
                        .await
                };
                match done {
                    // The commit was acknowledged: it must survive.
                    Ok(()) => acknowledged.lock().unwrap().push(id),
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    gateway.kill_hard();
    for writer in writers {
        let _ = writer.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 20,
        "the load ran: {} commits",
        acknowledged.len()
    );

    let _gateway = Gateway::start(data.path(), port).await;
    let client = connect(port).await.unwrap();
    let present: Vec<i64> = client
        .query("SELECT id FROM ledger", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let present: std::collections::HashSet<i64> = present.into_iter().collect();
    let lost: Vec<&i64> = acknowledged
        .iter()
        .filter(|id| !present.contains(id))
        .collect();
    assert!(lost.is_empty(), "acknowledged commits lost: {lost:?}");
    let total: i64 = client
        .query_one("SELECT sum(balance)::int8 FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, ACCOUNTS * BALANCE, "transfers are all or nothing");
}
