//! `kill -9` of the gateway during a write load loses no acknowledged commit:
//! the clients keep a ledger of every COMMIT pgshare confirmed, the gateway
//! is killed mid-load and restarted on the same data directory, and every
//! ledger entry is there and the data is consistent. Under strace, every
//! acknowledgement follows a sync of the WAL; and a database recovers from a
//! crash after a CHECKPOINT.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::process::Pgshare;

async fn start(data: &Path) -> Pgshare {
    start_with(data, &[]).await
}

async fn start_with(data: &Path, options: &[&str]) -> Pgshare {
    let data = data.to_str().unwrap();
    let mut args = vec!["--ssl", "off", "--data", data];
    args.extend_from_slice(options);
    Pgshare::start(&args, Stdio::null()).await
}

const ACCOUNTS: i64 = 10;
const BALANCE: i64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_commit_survives_kill_9() {
    survives_kill_9(&[]).await;
}

/// Without fsync the engine's writes still reach the files (the kernel's
/// cache) before the acknowledgement: only the machine's crash can lose them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_relaxed_durability_every_acknowledged_commit_survives_kill_9() {
    survives_kill_9(&["--relaxed-durability"]).await;
}

async fn survives_kill_9(options: &[&str]) {
    let data = tempfile::tempdir().unwrap();
    let mut gateway = start_with(data.path(), options).await;
    let port = gateway.port;
    let (setup, _) = gateway.connect().await;
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
            let url = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
            let Ok((client, connection)) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await
            else {
                return;
            };
            tokio::spawn(connection);
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

    let gateway = start_with(data.path(), options).await;
    let (client, _) = gateway.connect().await;
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

/// A persistent database syncs its WAL before pgshare acknowledges a
/// commit: under strace, every `INSERT 0 1` written to the client's socket
/// comes after an fsync or fdatasync of a file in `pg_wal` that completed
/// since the previous acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_insert_follows_a_sync_of_the_wal() {
    let data = tempfile::tempdir().unwrap();
    let trace = data.path().join("trace");
    let port = support::process::free_port();
    let mut traced = std::process::Command::new("strace")
        .args([
            "-f",
            "-yy",
            "-s",
            "48",
            "-e",
            "trace=fsync,fdatasync,sendto,write,writev",
            "-o",
        ])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_pgshare"))
        .args(["serve", "--ssl", "off", "--http", "off", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data")
        .arg(data.path().join("data"))
        .stderr(Stdio::null())
        .spawn()
        .expect("strace (Debian package strace) runs pgshare");
    let url = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let client = loop {
        if let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            break client;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pgshare did not start under strace"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let fsync: String = client.query_one("SHOW fsync", &[]).await.unwrap().get(0);
    assert_eq!(fsync, "on", "fsync on a persistent database");
    client
        .batch_execute("CREATE TABLE acked (n int)")
        .await
        .unwrap();
    const INSERTS: usize = 20;
    for n in 0..INSERTS as i32 {
        client
            .simple_query(&format!("INSERT INTO acked VALUES ({n})"))
            .await
            .unwrap();
    }
    drop(client);
    traced.kill().unwrap();
    traced.wait().unwrap();

    let trace = std::fs::read_to_string(&trace).unwrap();
    // Lines are "<pid> <call>(...) = <result>"; a call that blocks is split
    // into "<unfinished ...>" and "<... call resumed>" lines of its pid.
    let mut syncing = std::collections::HashSet::new();
    let mut synced_since_ack = false;
    let mut acknowledged = 0;
    for line in trace.lines() {
        let pid = line.split_whitespace().next().unwrap_or_default();
        let is_sync = line.contains("fsync(") || line.contains("fdatasync(");
        if is_sync && line.contains("/pg_wal/") {
            if line.contains("<unfinished") {
                syncing.insert(pid.to_string());
            } else if line.ends_with(" = 0") {
                synced_since_ack = true;
            }
        } else if line.contains("sync resumed>") && syncing.remove(pid) && line.ends_with(" = 0") {
            synced_since_ack = true;
        }
        if line.contains("TCP:") && line.contains("INSERT 0 1") {
            assert!(
                synced_since_ack,
                "INSERT {acknowledged} was acknowledged before its WAL was synced:\n{line}"
            );
            acknowledged += 1;
            synced_since_ack = false;
        }
    }
    assert_eq!(acknowledged, INSERTS, "acknowledgements seen in the trace");
}

/// Rows committed before a CHECKPOINT and after it all survive `kill -9`,
/// and the reopened database recovers to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_then_a_crash_recovers_every_acknowledged_row() {
    let data = tempfile::tempdir().unwrap();
    let mut gateway = start(data.path()).await;
    let (client, _) = gateway.connect().await;
    client
        .batch_execute(
            "CREATE TABLE kept (n int PRIMARY KEY); \
             INSERT INTO kept SELECT generate_series(1, 500); CHECKPOINT; \
             INSERT INTO kept SELECT generate_series(501, 600)",
        )
        .await
        .unwrap();
    client
        .execute("INSERT INTO kept VALUES (601)", &[])
        .await
        .unwrap();
    gateway.kill_hard();

    let gateway = start(data.path()).await;
    let (client, _) = gateway.connect().await;
    let row = client
        .query_one("SELECT count(*), sum(n)::int8 FROM kept", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (601, 601 * 602 / 2)
    );
}
