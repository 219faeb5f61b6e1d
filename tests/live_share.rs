//! Live Share: a PGlite in a Node process or a browser tab attaches to the
//! gateway as the host of a database, and real clients (psql, pgbench,
//! pg_dump, tokio-postgres) use it at once through the gateway.

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use pgshare::engine::tunnel::token;
use support::hosts::{Host, pg_dump};
use support::process::{Pgshare, free_port};
use support::programs::{failed_transactions, psql, run};

const SECRET: &str = "a tunnel secret of at least 32 characters";

/// A gateway with its HTTP port open for hosts that present tokens signed
/// with `SECRET`, started with the flags `extra` besides.
async fn gateway_with(extra: &[&str]) -> (Pgshare, u16) {
    let http = free_port();
    let http_addr = format!("127.0.0.1:{http}");
    let mut args = vec!["--memory", "--http", &http_addr, "--tunnel-secret", SECRET];
    args.extend_from_slice(extra);
    (Pgshare::start(&args, Stdio::inherit()).await, http)
}

/// A gateway without TLS whose queries wait one second for a host that left,
/// serving PGlite to the share page.
async fn gateway() -> (Pgshare, u16) {
    let dist = support::hosts::js_dir().join("node_modules/@electric-sql/pglite/dist");
    gateway_with(&[
        "--ssl",
        "off",
        "--tunnel-host-wait",
        "1",
        "--pglite-dist",
        dist.to_str().unwrap(),
    ])
    .await
}

fn token_for(database: &str) -> String {
    token::issue(SECRET, database, Some(Duration::from_secs(600))).unwrap()
}

fn url(gateway: &Pgshare, database: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{}/{database}", gateway.port)
}

/// psql creates a table and pgbench loads its tables (COPY FROM STDIN); then,
/// while 8 select-only pgbench clients run, pg_dump dumps it all and psql
/// writes and reads.
async fn clients_share_the_host(url: String) {
    psql(&url, "CREATE TABLE notes (id int PRIMARY KEY, body text)");
    psql(&url, "INSERT INTO notes VALUES (1, 'shared')");
    run("pgbench", &["-i", "-s", "1", "-q", &url]);
    let bench_url = url.clone();
    let bench = tokio::task::spawn_blocking(move || {
        run(
            "pgbench",
            &["-S", "-c", "8", "-j", "2", "-T", "15", "-n", &bench_url],
        )
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dump_url = url.clone();
    let dump = tokio::task::spawn_blocking(move || run(pg_dump().to_str().unwrap(), &[&dump_url]))
        .await
        .unwrap();
    let psql_url = url.clone();
    let written = tokio::task::spawn_blocking(move || {
        psql(
            &psql_url,
            "INSERT INTO notes VALUES (2, 'during the load'); SELECT count(*) FROM notes",
        )
    })
    .await
    .unwrap();
    assert!(
        !bench.is_finished(),
        "pg_dump and psql ran while pgbench ran"
    );
    let output = bench.await.unwrap();
    let failed = failed_transactions(&output);
    assert!(failed.contains(": 0 "), "{failed}");
    let processed: u64 = output
        .lines()
        .find_map(|line| line.strip_prefix("number of transactions actually processed: "))
        .and_then(|count| count.split('/').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("pgbench printed no count:\n{output}"));
    assert!(processed > 0, "{output}");
    assert!(dump.contains("CREATE TABLE public.notes"), "{dump}");
    assert!(dump.contains("1\tshared"), "the dump holds the row");
    assert!(
        dump.contains("COPY public.pgbench_accounts"),
        "the dump holds pgbench's tables"
    );
    assert!(written.trim().ends_with('2'), "{written}");
    assert_eq!(
        psql(&url, "SELECT count(*) FROM pgbench_accounts").trim(),
        "100000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_process_shares_its_pglite_with_psql_pgbench_and_pg_dump() {
    let (gateway, http) = gateway().await;
    let _host = Host::node(http, "app", &token_for("app"));
    clients_share_the_host(url(&gateway, "app")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_tab_shares_its_pglite_with_psql_pgbench_and_pg_dump() {
    let (gateway, http) = gateway().await;
    let _tab = Host::browser(http, "tab", &token_for("tab"));
    clients_share_the_host(url(&gateway, "tab")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_host_keep_their_own_sessions() {
    let (gateway, http) = gateway().await;
    let _host = Host::node(http, "app", &token_for("app"));
    let (a, _) = gateway.connect_as("postgres", "", "app").await.unwrap();
    let (b, _) = gateway.connect_as("postgres", "", "app").await.unwrap();
    let (listener, mut connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(gateway.port)
        .user("postgres")
        .dbname("app")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    let (heard, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures_util::StreamExt::next(&mut messages).await {
            if let tokio_postgres::AsyncMessage::Notification(notification) = message {
                let _ = heard.send(notification.payload().to_string());
            }
        }
    });
    listener.batch_execute("LISTEN news").await.unwrap();

    // Each client's first statement is named s0 by tokio-postgres.
    let default_path: String = b.query_one("SHOW search_path", &[]).await.unwrap().get(0);
    let on_a = a.prepare("SELECT 'a'").await.unwrap();
    let on_b = b.prepare("SELECT 'b'").await.unwrap();
    a.batch_execute("CREATE TABLE t (n int); SET search_path = nowhere, public")
        .await
        .unwrap();
    let mine: String = a.query_one(&on_a, &[]).await.unwrap().get(0);
    let theirs: String = b.query_one(&on_b, &[]).await.unwrap().get(0);
    assert_eq!((mine.as_str(), theirs.as_str()), ("a", "b"));
    let path: String = b.query_one("SHOW search_path", &[]).await.unwrap().get(0);
    assert_eq!(path, default_path, "a's setting stays a's");
    let path: String = a.query_one("SHOW search_path", &[]).await.unwrap().get(0);
    assert_eq!(path, "nowhere, public");

    // A transaction is a's alone: b waits for it, then sees its result.
    a.batch_execute("BEGIN; INSERT INTO t VALUES (1); NOTIFY news, 'from a'")
        .await
        .unwrap();
    let count = tokio::spawn(async move {
        let count: i64 = b
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .unwrap()
            .get(0);
        count
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!count.is_finished(), "b ran inside a's transaction");
    assert!(
        notifications.try_recv().is_err(),
        "a notification before its commit"
    );
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(count.await.unwrap(), 1);
    let heard = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
        .await
        .expect("the idle listener hears the notification");
    assert_eq!(heard.as_deref(), Some("from a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_host_name_reaches_a_hosts_database() {
    let (gateway, http) = gateway_with(&["--sni-domain", "db.example.test"]).await;
    let _host = Host::node(http, "app", &token_for("app"));
    psql(
        &url(&gateway, "app"),
        "CREATE TABLE marker AS SELECT 'in the host' AS here",
    );
    let by_name = format!(
        "host=app.db.example.test hostaddr=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require",
        gateway.port
    );
    assert_eq!(
        psql(&by_name, "SELECT here FROM marker").trim(),
        "in the host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_survive_a_host_reconnect() {
    let (gateway, http) = gateway().await;
    let mut host = Host::node(http, "app", &token_for("app"));
    let (idle, _) = gateway.connect_as("postgres", "", "app").await.unwrap();
    let (busy, busy_connection) = gateway.connect_as("postgres", "", "app").await.unwrap();
    idle.batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)")
        .await
        .unwrap();
    idle.batch_execute("SET application_name = 'idle one'")
        .await
        .unwrap();
    let statement = idle.prepare("SELECT n FROM kept").await.unwrap();
    busy.batch_execute("BEGIN; INSERT INTO kept VALUES (2)")
        .await
        .unwrap();

    host.kill();
    // The client inside a transaction loses its connection...
    let err = busy.simple_query("COMMIT").await.unwrap_err();
    let closed = busy_connection.await.unwrap().err();
    let code = match (err.code(), &closed) {
        (Some(_), _) | (None, None) => support::sqlstate(&err),
        (None, Some(closed)) => support::sqlstate(closed),
    };
    assert_eq!(code, "57P01", "{err:?} / {closed:?}");
    // ...the idle one stays, and hears that the host is away.
    let err = idle.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(support::sqlstate(&err), "57P03", "{err}");
    // New clients are refused until the host is back.
    let err = gateway
        .connect_as("postgres", "", "app")
        .await
        .err()
        .unwrap();
    assert_eq!(support::sqlstate(&err), "57P03");

    // A host for the same database: here a new PGlite (the old one died
    // with its process), so the table is gone but everything else of the
    // idle client's session works again.
    let _host = Host::node(http, "app", &token_for("app"));
    let name: String = idle
        .query_one("SHOW application_name", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "idle one", "the client's settings are restored");
    idle.batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
        .await
        .unwrap();
    let rows = idle.query(&statement, &[]).await.unwrap();
    let values: Vec<i32> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(
        values,
        [7],
        "its prepared statement is prepared again on the new session"
    );
    let (fresh, _) = gateway.connect_as("postgres", "", "app").await.unwrap();
    let one: i32 = fresh.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_tunnel_database_waits_for_its_host() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgshare.toml");
    std::fs::write(
        &config,
        "[databases.tab]\ntunnel = true\ntunnel_secret = \"this database's own secret\"\n",
    )
    .unwrap();
    let (gateway, http) =
        gateway_with(&["--ssl", "off", "--config", config.to_str().unwrap()]).await;
    let Err(err) = gateway.connect_as("postgres", "", "tab").await else {
        panic!("no host is attached yet");
    };
    assert_eq!(support::sqlstate(&err), "57P03", "{err}");
    let err = gateway
        .connect_as("postgres", "", "tab")
        .await
        .err()
        .unwrap();
    assert_eq!(
        support::sqlstate(&err),
        "57P03",
        "still no database of that name"
    );
    assert_eq!(upgrade_status(http, "/tunnel/tab?token=wrong", ""), 401);
    let _host = Host::node(http, "tab", "this database's own secret");
    let (client, _) = gateway.connect_as("postgres", "", "tab").await.unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_pglite_reconnecting_keeps_its_data_and_its_clients() {
    let (gateway, http) = gateway_with(&["--ssl", "off", "--tunnel-lifetime", "2"]).await;
    let _host = Host::node(http, "app", &token_for("app"));
    let (client, _) = gateway.connect_as("postgres", "", "app").await.unwrap();
    client
        .batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1); SET search_path = pg_catalog, public")
        .await
        .unwrap();
    let statement = client
        .prepare("SELECT sum(n)::int FROM kept")
        .await
        .unwrap();
    // A transaction open across the lifetime keeps the host attached until
    // it ends.
    client
        .batch_execute("BEGIN; INSERT INTO kept VALUES (2)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    client.batch_execute("COMMIT").await.unwrap();
    // Now the host is disconnected (lifetime reached) and attaches again
    // with the same PGlite, more than once in these seconds.
    let mut sums = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let sum: i32 = client.query_one(&statement, &[]).await.unwrap().get(0);
        sums.push(sum);
    }
    assert_eq!(sums, [3; 6], "committed rows survive every reconnect");
    let path: String = client
        .query_one("SHOW search_path", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        path, "pg_catalog, public",
        "the client's settings survive too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_the_host_cannot_take_fails_alone() {
    let (gateway, http) = gateway_with(&["--ssl", "off", "--tunnel-max-copy", "100000"]).await;
    let _host = Host::node(http, "app", &token_for("app"));
    let url = url(&gateway, "app");
    psql(&url, "CREATE TABLE numbers (n int)");
    // About 590 kB of data: more than the host is sent at once.
    let output = Command::new("psql")
        .args([
            &url,
            "-X",
            "-v",
            "VERBOSITY=verbose",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(["-c", "\\copy numbers from program 'seq 1 100000'"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("54000") && stderr.contains("larger than 100000 bytes"),
        "{stderr}"
    );
    psql(&url, "\\copy numbers from program 'seq 1 1000'");
    assert_eq!(
        psql(&url, "SELECT count(*) FROM numbers").trim(),
        "1000",
        "a smaller COPY goes through, and the refused one left nothing"
    );

    // Drivers that send COPY over the extended protocol get 0A000 and can
    // go on.
    let (client, _) = gateway.connect_as("postgres", "", "app").await.unwrap();
    let err = client
        .copy_in::<_, bytes::Bytes>("COPY numbers FROM STDIN")
        .await
        .err()
        .expect("extended-protocol COPY FROM STDIN is refused");
    assert_eq!(support::sqlstate(&err), "0A000", "{err}");
    let count: i64 = client
        .query_one("SELECT count(*) FROM numbers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1000);
}

/// Sends a WebSocket upgrade request for `path` and returns the HTTP status.
fn upgrade_status(http: u16, path: &str, extra_headers: &str) -> u16 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_without_a_valid_token_are_refused_before_the_upgrade() {
    let (_gateway, http) = gateway().await;
    assert_eq!(upgrade_status(http, "/tunnel/app", ""), 401, "no token");
    assert_eq!(upgrade_status(http, "/tunnel/app?token=nonsense", ""), 401);
    let other = token_for("other");
    assert_eq!(
        upgrade_status(http, &format!("/tunnel/app?token={other}"), ""),
        401,
        "a token for another database"
    );
    let forged = token::issue("another secret, also 32 characters long", "app", None).unwrap();
    assert_eq!(
        upgrade_status(http, &format!("/tunnel/app?token={forged}"), ""),
        401
    );
    let expired = token::issue(SECRET, "app", Some(Duration::ZERO)).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        upgrade_status(http, &format!("/tunnel/app?token={expired}"), ""),
        401
    );
    assert_eq!(
        upgrade_status(
            http,
            "/tunnel/postgres",
            &format!("Authorization: Bearer {}\r\n", token_for("postgres"))
        ),
        409,
        "a database pgshare serves itself cannot be taken over"
    );
    let _host = Host::node(http, "app", &token_for("app"));
    assert_eq!(
        upgrade_status(
            http,
            "/tunnel/app",
            &format!("Authorization: Bearer {}\r\n", token_for("app"))
        ),
        409,
        "a second host for the same database"
    );
    assert_eq!(
        upgrade_status(
            http,
            "/tunnel/free",
            &format!("Authorization: Bearer {}\r\n", token_for("free"))
        ),
        101,
        "a valid token in the header is accepted"
    );
}

#[test]
fn a_short_tunnel_secret_is_refused_at_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_pgshare"))
        .args([
            "serve",
            "--memory",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "off",
        ])
        .args(["--tunnel-secret", "too short"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("at least 32"), "{log}");
}
