//! psql and pgbench, run as processes against the gateway, as a user would.

mod support;

use support::Gateway;
use support::programs::{failed_transactions, psql, run};

async fn run_async(program: &'static str, args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(program, &args)
    })
    .await
    .unwrap()
}

fn balance_sums(url: &str) -> Vec<String> {
    psql(
        url,
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(tbalance) FROM pgbench_tellers), \
         (SELECT sum(bbalance) FROM pgbench_branches), (SELECT sum(delta) FROM pgbench_history)",
    )
    .trim()
    .split('|')
    .map(str::to_string)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tpcb_and_select_only_run_without_failures_and_balances_agree() {
    let gateway = Gateway::start().await;
    let url = gateway.url();
    run_async(
        "pgbench",
        vec!["-i".into(), "-s".into(), "1".into(), url.clone()],
    )
    .await;
    let tpcb = run_async(
        "pgbench",
        ["-c", "16", "-j", "2", "-t", "40", &url]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert!(
        failed_transactions(&tpcb).starts_with("number of failed transactions: 0 "),
        "{tpcb}"
    );
    let sums = balance_sums(&url);
    assert_eq!(sums.len(), 4);
    assert!(
        sums.iter().all(|sum| sum == &sums[0]),
        "balances disagree: {sums:?}"
    );
    assert_ne!(sums[0], "", "the history table must not be empty");
    for mode in ["simple", "extended", "prepared"] {
        let select = run_async(
            "pgbench",
            ["-S", "-M", mode, "-c", "32", "-j", "2", "-t", "50", &url]
                .map(String::from)
                .to_vec(),
        )
        .await;
        assert!(
            failed_transactions(&select).starts_with("number of failed transactions: 0 "),
            "{select}"
        );
        assert!(
            select.contains("number of transactions actually processed: 1600/1600"),
            "{select}"
        );
    }
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_in_and_out_in_text_csv_and_binary() {
    let gateway = Gateway::start().await;
    let url = gateway.url();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("rows.txt");
    let csv = dir.path().join("rows.csv");
    let binary = dir.path().join("rows.bin");
    std::fs::write(&text, "1\tone\n2\ttwo\n3\tthree\n").unwrap();
    std::fs::write(&csv, "4,\"four, with comma\"\n5,five\n").unwrap();
    let (text, csv, binary) = (
        text.display().to_string(),
        csv.display().to_string(),
        binary.display().to_string(),
    );
    let url2 = url.clone();
    tokio::task::spawn_blocking(move || {
        psql(&url2, "CREATE TABLE words(n int, word text)");
        assert!(psql(&url2, &format!("\\copy words FROM '{text}'")).contains("COPY 3"));
        assert!(
            psql(
                &url2,
                &format!("\\copy words FROM '{csv}' WITH (FORMAT csv)")
            )
            .contains("COPY 2")
        );
        assert!(
            psql(
                &url2,
                &format!("\\copy words TO '{binary}' WITH (FORMAT binary)")
            )
            .contains("COPY 5")
        );
        psql(&url2, "CREATE TABLE words_copy(n int, word text)");
        assert!(
            psql(
                &url2,
                &format!("\\copy words_copy FROM '{binary}' WITH (FORMAT binary)")
            )
            .contains("COPY 5")
        );
        let out = psql(
            &url2,
            "COPY (SELECT * FROM words_copy ORDER BY n) TO STDOUT WITH (FORMAT csv)",
        );
        assert_eq!(
            out,
            "1,one\n2,two\n3,three\n4,\"four, with comma\"\n5,five\n"
        );
    })
    .await
    .unwrap();
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_reaches_the_gateway_over_its_unix_socket() {
    let gateway = Gateway::start().await;
    let dir = gateway.unix_dir.display().to_string();
    let port = gateway.addr.port().to_string();
    let out = run_async(
        "psql",
        [
            "-X",
            "-A",
            "-t",
            "-h",
            &dir,
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            "SELECT 'over unix'",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_eq!(out.trim(), "over unix");
    gateway.stop().await;
}

/// `pg_dump -j` needs sessions of its own: on a shared engine its snapshot
/// export is refused at once with the reason, and a dump without `-j`
/// works. (Behind an upstream pool it works: see `upstream.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_pg_dump_is_refused_at_once_with_the_reason() {
    let gateway = Gateway::start().await;
    let url = gateway.url();
    psql(
        &url,
        "CREATE TABLE one(x int); CREATE TABLE two(y int); INSERT INTO one VALUES (1)",
    );
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("parallel");
    let pg_dump = support::hosts::pg_dump();
    let started = std::time::Instant::now();
    let output = tokio::task::spawn_blocking({
        let (pg_dump, url) = (pg_dump.clone(), url.clone());
        move || {
            std::process::Command::new(pg_dump)
                .args(["-Fd", "-j", "2", "-f"])
                .arg(&target)
                .arg(&url)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("pg_export_snapshot() is not supported here")
            && stderr.contains("without -j"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "refused at once, not after a timeout"
    );
    let plain = dir.path().join("plain.sql");
    let dumped = tokio::task::spawn_blocking({
        let plain = plain.clone();
        move || {
            std::process::Command::new(pg_dump)
                .arg("-f")
                .arg(&plain)
                .arg(&url)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        dumped.status.success(),
        "{}",
        String::from_utf8_lossy(&dumped.stderr)
    );
    let dump = std::fs::read_to_string(plain).unwrap();
    assert!(dump.contains("CREATE TABLE public.two"), "{dump}");
    gateway.stop().await;
}
