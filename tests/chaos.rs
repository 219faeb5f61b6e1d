//! Chaos: 32 clients run TPC-B-like transactions through the gateway while
//! others misbehave: clients vanish mid-transaction, cancel requests fly,
//! extra connections send garbage, some clients idle inside a transaction
//! past the timeout. Afterwards the balances agree, a new client is answered
//! within a second, and no engine session is left inside a transaction. For
//! the embedded engine and for an upstream server.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::postgres::Postgres;
use support::{Gateway, test_config};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

const CLIENTS: usize = 32;
const RUN: Duration = Duration::from_secs(8);

fn pgbench_init(url: &str) {
    let output = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q", url])
        .output()
        .expect("run pgbench");
    assert!(
        output.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// What each client does, picked at random per transaction.
#[derive(Clone, Copy)]
enum Behaviour {
    Commit,
    /// Disconnects between two statements of its transaction.
    Vanish,
    /// Sleeps inside its transaction past the idle timeout.
    Idle,
}

async fn tpcb(
    client: &tokio_postgres::Client,
    rng: &mut StdRng,
    behaviour: Behaviour,
) -> Result<(), tokio_postgres::Error> {
    let aid: i32 = rng.gen_range(1..=100_000);
    let tid: i32 = rng.gen_range(1..=10);
    let delta: i32 = rng.gen_range(-5000..=5000);
    client.batch_execute("BEGIN").await?;
    client
        .execute(
            "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
            &[&delta, &aid],
        )
        .await?;
    match behaviour {
        Behaviour::Vanish => return Ok(()),
        Behaviour::Idle => tokio::time::sleep(Duration::from_millis(1500)).await,
        Behaviour::Commit => {}
    }
    client
        .execute(
            "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2",
            &[&delta, &tid],
        )
        .await?;
    client
        .execute(
            "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = 1",
            &[&delta],
        )
        .await?;
    client
        .execute(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, 1, $2, $3, now())",
            &[&tid, &aid, &delta],
        )
        .await?;
    client.batch_execute("COMMIT").await
}

/// Runs the chaos against `url` (a gateway) and checks the outcome.
async fn chaos(gateway: &Gateway) {
    let url = gateway.url();
    let init_url = url.clone();
    tokio::task::spawn_blocking(move || pgbench_init(&init_url))
        .await
        .unwrap();
    let deadline = Instant::now() + RUN;
    let cancel_tokens = Arc::new(Mutex::new(Vec::new()));
    let committed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for n in 0..CLIENTS {
        let (cancel_tokens, committed) = (cancel_tokens.clone(), committed.clone());
        let config = gateway.config_for("postgres", "postgres");
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(n as u64);
            while Instant::now() < deadline {
                let Ok((client, connection)) = config.connect(tokio_postgres::NoTls).await else {
                    continue;
                };
                let connection = tokio::spawn(connection);
                cancel_tokens.lock().await.push(client.cancel_token());
                for _ in 0..rng.gen_range(1..20) {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let behaviour = match rng.gen_range(0..100) {
                        0..5 => Behaviour::Vanish,
                        5..8 => Behaviour::Idle,
                        _ => Behaviour::Commit,
                    };
                    let done = tpcb(&client, &mut rng, behaviour).await;
                    match (behaviour, done) {
                        (Behaviour::Commit, Ok(())) => {
                            committed.fetch_add(1, Ordering::Relaxed);
                        }
                        // Cancelled statements and deadlock-free retries:
                        // roll back and go on.
                        (Behaviour::Commit, Err(_)) if !client.is_closed() => {
                            let _ = client.batch_execute("ROLLBACK").await;
                        }
                        _ => break,
                    }
                }
                // Vanishing: the socket closes with the transaction open.
                drop(client);
                connection.abort();
            }
        }));
    }
    // Cancel requests for random clients.
    let cancels = {
        let cancel_tokens = cancel_tokens.clone();
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(1000);
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let token = {
                    let tokens = cancel_tokens.lock().await;
                    if tokens.is_empty() {
                        continue;
                    }
                    tokens[rng.gen_range(0..tokens.len())].clone()
                };
                let _ = token.cancel_query(tokio_postgres::NoTls).await;
            }
        })
    };
    // Garbage on extra connections: before login and after it.
    let garbage = {
        let addr = gateway.addr;
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(2000);
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(30)).await;
                let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                    continue;
                };
                let mut bytes = vec![0u8; rng.gen_range(1..300)];
                rng.fill(&mut bytes[..]);
                if rng.gen_bool(0.5) {
                    // A valid startup packet, then a frame that lies.
                    let mut packet =
                        b"\0\0\0\x29\0\x03\0\0user\0postgres\0database\0postgres\0\0".to_vec();
                    packet.extend_from_slice(b"Q\x7f\xff\xff\xff");
                    packet.extend_from_slice(&bytes);
                    bytes = packet;
                }
                let _ = stream.write_all(&bytes).await;
            }
        })
    };
    for task in tasks {
        task.await.unwrap();
    }
    cancels.await.unwrap();
    garbage.await.unwrap();
    assert!(committed.load(Ordering::Relaxed) > 50, "the load ran");

    // A new client is served within a second, outside any transaction.
    let started = Instant::now();
    let client = tokio::time::timeout(Duration::from_secs(1), gateway.connect())
        .await
        .expect("a new client is answered within a second");
    // In a simple query outside a transaction block, the transaction starts
    // with the statement.
    let answer = client
        .simple_query("SELECT now() = statement_timestamp()")
        .await
        .unwrap();
    let outside = answer.iter().any(|message| {
        matches!(message, tokio_postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("t"))
    });
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        outside,
        "the new client's statement is not inside someone's transaction"
    );
    let sums = client
        .query_one(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts)::int8, (SELECT sum(tbalance) FROM pgbench_tellers)::int8, \
             (SELECT sum(bbalance) FROM pgbench_branches)::int8, (SELECT coalesce(sum(delta), 0) FROM pgbench_history)::int8",
            &[],
        )
        .await
        .unwrap();
    let sums: Vec<i64> = (0..4).map(|i| sums.get(i)).collect();
    assert!(
        sums.iter().all(|sum| *sum == sums[0]),
        "balances disagree: {sums:?}"
    );
}

fn chaos_config() -> pgshare::config::Config {
    let mut config = test_config();
    config.idle_in_transaction_timeout = Some(Duration::from_secs(1));
    config.max_client_conn = 200;
    config.query_wait_timeout = Some(Duration::from_secs(30));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_the_embedded_engine() {
    let gateway = Gateway::start_with(chaos_config()).await;
    chaos(&gateway).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_an_upstream_pool() {
    let server = Postgres::start();
    let mut config = chaos_config();
    config.upstream = Some(pgshare::engine::upstream::Upstream::parse(&server.url()).unwrap());
    config.pool_size = 4;
    let gateway = Gateway::start_with(config).await;
    chaos(&gateway).await;
    gateway.stop().await;
    // No server session was left inside a transaction.
    let url = server.url();
    let stuck = tokio::task::spawn_blocking(move || {
        let output = Command::new("psql")
            .args([
                url.as_str(),
                "-X",
                "-A",
                "-t",
                "-c",
                "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    })
    .await
    .unwrap();
    assert_eq!(stuck, "0");
}
