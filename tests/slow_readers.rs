//! A client that asks for a large answer and never reads it cannot make the
//! gateway buffer without limit, nor hold the engine for everyone else: it is
//! disconnected and the others carry on.

mod support;

use std::time::{Duration, Instant};

use support::{Gateway, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Logs in over a raw socket (trust) and returns it after ReadyForQuery.
async fn raw_login(gateway: &Gateway) -> TcpStream {
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let mut body = 196608i32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0postgres\0database\0postgres\0\0");
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    stream.write_all(&packet).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(6).any(|w| w == b"Z\0\0\0\x05I") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "login answered");
        seen.extend_from_slice(&buf[..n]);
    }
    stream
}

fn query(sql: &str) -> Vec<u8> {
    let mut out = vec![b'Q'];
    out.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
    out.extend_from_slice(sql.as_bytes());
    out.push(0);
    out
}

/// Reads until the gateway closes the socket; returns the bytes read.
async fn drain(mut stream: TcpStream) -> usize {
    let mut total = 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return total,
            Ok(Ok(n)) => total += n,
            Err(_) => panic!("the gateway never closed the slow reader's socket"),
        }
    }
}

/// About 128 MB of answer.
const BIG: &str = "SELECT repeat('x', 1048576) FROM generate_series(1, 128)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_answer_nobody_reads_is_cut_off() {
    let gateway = Gateway::start().await;
    let mut slow = raw_login(&gateway).await;
    slow.write_all(&query(BIG)).await.unwrap();
    // Others are served meanwhile.
    let other = gateway.connect().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let one: i32 = other.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let read = drain(slow).await;
    assert!(
        read < 100 << 20,
        "the gateway dropped the rest of the answer ({read} bytes reached the client)"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holding_the_engine_that_does_not_read_is_disconnected() {
    let mut config = test_config();
    config.idle_in_transaction_timeout = Some(Duration::from_secs(2));
    let gateway = Gateway::start_with(config).await;
    let mut slow = raw_login(&gateway).await;
    // Inside a transaction the answer comes straight from the engine.
    slow.write_all(&query(&format!("BEGIN; {BIG}")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other = gateway.connect().await;
    let started = Instant::now();
    let one: i32 = tokio::time::timeout(Duration::from_secs(20), other.query_one("SELECT 1", &[]))
        .await
        .expect("the engine is released")
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it waited for the slow client"
    );
    drain(slow).await;
    gateway.stop().await;
}
