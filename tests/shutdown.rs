//! Graceful shutdown of a `pgshare` process: SIGTERM lets running units of
//! work finish within --shutdown-timeout and disconnects idle clients at
//! once with 57P01; SIGINT does the same within a second; whatever is still
//! open then is rolled back, and committed data is on disk.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::process::Pgshare;
use tokio::task::JoinHandle;

async fn start(data: &Path, shutdown_timeout: u64) -> Pgshare {
    let timeout = shutdown_timeout.to_string();
    let data = data.to_str().unwrap();
    Pgshare::start(
        &[
            "--ssl",
            "off",
            "--shutdown-timeout",
            &timeout,
            "--data",
            data,
        ],
        Stdio::null(),
    )
    .await
}

/// The SQLSTATE that closed a connection.
async fn closed_with(connection: JoinHandle<Result<(), tokio_postgres::Error>>) -> String {
    let ended = tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the connection was closed")
        .unwrap();
    let err = ended.expect_err("closed by an error");
    err.code()
        .map(|code| code.code().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_unit_finish_and_disconnects_idle_clients() {
    let data = tempfile::tempdir().unwrap();
    let gateway = start(data.path(), 10).await;
    let (setup, _) = gateway.connect().await;
    setup.batch_execute("CREATE TABLE t(x text)").await.unwrap();
    let (idle, idle_connection) = gateway.connect().await;
    idle.batch_execute("SELECT 1").await.unwrap();
    let (busy, _) = gateway.connect().await;
    let running = tokio::spawn(async move {
        busy.batch_execute("BEGIN; INSERT INTO t VALUES ('finished'); SELECT pg_sleep(1.5); COMMIT")
            .await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let signalled = Instant::now();
    gateway.signal("TERM");
    assert_eq!(closed_with(idle_connection).await, "57P01");
    assert!(
        signalled.elapsed() < Duration::from_secs(1),
        "idle clients go at once"
    );
    running
        .await
        .unwrap()
        .expect("the unit that was running finished");
    gateway.exited().await;

    let gateway = start(data.path(), 10).await;
    let (client, _) = gateway.connect().await;
    let rows = client.query("SELECT x FROM t", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_rolls_back_an_open_transaction_within_a_second() {
    let data = tempfile::tempdir().unwrap();
    let gateway = start(data.path(), 60).await;
    let (setup, _) = gateway.connect().await;
    setup.batch_execute("CREATE TABLE t(x text)").await.unwrap();
    drop(setup);
    let (open, open_connection) = gateway.connect().await;
    open.batch_execute("BEGIN; INSERT INTO t VALUES ('rolled back')")
        .await
        .unwrap();
    gateway.signal("INT");
    assert_eq!(closed_with(open_connection).await, "57P01");
    let took = gateway.exited().await;
    assert!(
        took < Duration::from_secs(8),
        "SIGINT does not wait 60s: {took:?}"
    );

    let gateway = start(data.path(), 10).await;
    let (client, _) = gateway.connect().await;
    let rows = client.query("SELECT x FROM t", &[]).await.unwrap();
    assert!(rows.is_empty(), "the open transaction was rolled back");
}
