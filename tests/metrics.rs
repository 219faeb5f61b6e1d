//! The Prometheus metrics of a `pgshare` process, fetched over HTTP as a
//! scraper fetches them and parsed: counters grow with the work clients do,
//! errors are counted by SQLSTATE class, and the gauges show a client
//! waiting for the engine while another holds it.

mod support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::process::{Pgshare, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One sample: its labels and value.
type Samples = Vec<(String, BTreeMap<String, String>, f64)>;

/// `GET path` on the HTTP port; returns the head and the body.
async fn get(port: u16, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("the HTTP port answers")
    .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    (head.to_string(), body.to_string())
}

/// Parses Prometheus' text format; every line that is not a comment must
/// be a sample.
fn parse(text: &str) -> Samples {
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value
            .replace("+Inf", "inf")
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap();
                let labels = labels
                    .split("\",")
                    .map(|pair| {
                        let (key, value) = pair.split_once("=\"").unwrap();
                        (key.to_string(), value.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        samples.push((name, labels, value));
    }
    samples
}

async fn scrape(port: u16) -> Samples {
    let (head, body) = get(port, "/metrics").await;
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    parse(&body)
}

/// The value of `name` with (at least) `labels`; 0 when absent.
fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(sample, sample_labels, _)| {
            sample == name
                && labels
                    .iter()
                    .all(|(key, value)| sample_labels.get(*key).map(String::as_str) == Some(value))
        })
        .map(|(_, _, value)| value)
        .sum()
}

const POSTGRES: (&str, &str) = ("database", "postgres");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_clients_do() {
    let http = free_port();
    let http_addr = format!("127.0.0.1:{http}");
    let pgshare = Pgshare::start(
        &["--memory", "--ssl", "off", "--http", &http_addr],
        Stdio::null(),
    )
    .await;
    let (_, index) = get(http, "/").await;
    assert!(
        index.contains("/metrics") && index.contains("/share"),
        "{index}"
    );

    let (client, _connection) = pgshare.connect().await;
    client.batch_execute("CREATE TABLE t(x int)").await.unwrap();
    let before = scrape(http).await;
    for n in 0..3 {
        client
            .execute("INSERT INTO t VALUES ($1)", &[&n])
            .await
            .unwrap();
    }
    client
        .batch_execute("SELECT count(*) FROM t")
        .await
        .unwrap();
    let after = scrape(http).await;
    let grew = |name: &str| value(&after, name, &[POSTGRES]) - value(&before, name, &[POSTGRES]);
    assert!(
        grew("pgshare_units_total") >= 4.0,
        "{}",
        grew("pgshare_units_total")
    );
    assert!(grew("pgshare_statements_total") >= 4.0);
    assert!(grew("pgshare_received_bytes_total") > 0.0);
    assert!(grew("pgshare_sent_bytes_total") > 0.0);
    assert!(grew("pgshare_wait_seconds_count") >= 4.0);
    assert!(grew("pgshare_engine_busy_seconds_total") > 0.0);
    assert_eq!(
        value(&after, "pgshare_engines_open", &[("kind", "embedded")]),
        1.0
    );
    assert!(value(&after, "pgshare_engines_opened_total", &[]) >= 1.0);
    assert_eq!(value(&after, "pgshare_tunnel_hosts_attached", &[]), 0.0);
    assert_eq!(
        value(&after, "pgshare_clients", &[POSTGRES, ("state", "idle")]),
        1.0
    );

    // Errors, by the class of their SQLSTATE.
    let division = [POSTGRES, ("class", "22")];
    let undefined = [POSTGRES, ("class", "42")];
    assert!(client.batch_execute("SELECT 1/0").await.is_err());
    assert!(client.batch_execute("SELECT * FROM missing").await.is_err());
    let errors = scrape(http).await;
    assert_eq!(
        value(&errors, "pgshare_errors_total", &division),
        value(&after, "pgshare_errors_total", &division) + 1.0
    );
    assert_eq!(
        value(&errors, "pgshare_errors_total", &undefined),
        value(&after, "pgshare_errors_total", &undefined) + 1.0
    );

    // One client holds the engine in a transaction, another waits.
    client
        .batch_execute("BEGIN; INSERT INTO t VALUES (9)")
        .await
        .unwrap();
    let (waiter, _waiter) = pgshare.connect().await;
    let waiting = tokio::spawn(async move {
        let result = waiter.batch_execute("SELECT count(*) FROM t").await;
        (waiter, result)
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let queued = loop {
        let samples = scrape(http).await;
        if value(&samples, "pgshare_queue_length", &[POSTGRES]) > 0.0 {
            break samples;
        }
        assert!(Instant::now() < deadline, "the waiting client never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(value(&queued, "pgshare_queue_length", &[POSTGRES]), 1.0);
    assert_eq!(
        value(
            &queued,
            "pgshare_clients",
            &[POSTGRES, ("state", "waiting")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &queued,
            "pgshare_clients",
            &[POSTGRES, ("state", "in_transaction")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &queued,
            "pgshare_pool_sessions",
            &[POSTGRES, ("state", "active")]
        ),
        1.0
    );
    // The wait lasts at least this long.
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.batch_execute("COMMIT").await.unwrap();
    let (_waiter, result) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    result.unwrap();
    let done = scrape(http).await;
    assert_eq!(value(&done, "pgshare_queue_length", &[POSTGRES]), 0.0);
    let slow_waits = value(&done, "pgshare_wait_seconds_count", &[POSTGRES])
        - value(
            &done,
            "pgshare_wait_seconds_bucket",
            &[POSTGRES, ("le", "0.05")],
        );
    assert!(
        slow_waits >= 1.0,
        "the wait behind the transaction was counted"
    );
}
