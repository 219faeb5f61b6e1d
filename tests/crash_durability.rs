//! `kill -9` of the gateway during a write load loses no acknowledged commit:
//! the clients keep a ledger of every COMMIT pgshare confirmed, the gateway
//! is killed mid-load and restarted on the same data directory, and every
//! ledger entry is there and the data is consistent.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::process::Pgshare;

async fn start(data: &Path) -> Pgshare {
    let data = data.to_str().unwrap();
    Pgshare::start(&["--ssl", "off", "--data", data], Stdio::null()).await
}

const ACCOUNTS: i64 = 10;
const BALANCE: i64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_commit_survives_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let mut gateway = start(data.path()).await;
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

    let gateway = start(data.path()).await;
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
