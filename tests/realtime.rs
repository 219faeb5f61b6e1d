//! Live queries on real processes: `pgr.subscribe` in SQL, subscribers on
//! WebSockets and event streams, `LISTEN pgr`, and everything a subscriber
//! can be refused, on the embedded engine, an upstream PostgreSQL and a
//! Live Share host.

mod support;

use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_postgres::AsyncMessage;
use tokio_tungstenite::tungstenite::Message;

use support::live::{Ended, Events, Subscriber, refusal};
use support::process::{Pgshare, free_port};

const SECRET: &str = "a realtime secret of at least 32 characters";

/// A gateway with its HTTP port open, started with `extra` besides.
async fn gateway_with(extra: &[&str]) -> (Pgshare, u16) {
    let http = free_port();
    let http_addr = format!("127.0.0.1:{http}");
    let mut args = vec!["--http", &http_addr];
    if !extra.contains(&"--data") && !extra.contains(&"--upstream") {
        args.push("--memory");
    }
    args.extend_from_slice(extra);
    (Pgshare::start(&args, Stdio::inherit()).await, http)
}

async fn sql(gateway: &Pgshare, database: &str, statements: &str) {
    let (client, _connection) = gateway
        .connect_as("postgres", "", database)
        .await
        .expect("connect");
    client.batch_execute(statements).await.unwrap();
}

/// A client of `database` that listens on channel pgr; the payloads arrive
/// on the receiver, parsed.
async fn listen_pgr(
    gateway: &Pgshare,
    database: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<Value>,
) {
    let (listener, mut connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(gateway.port)
        .user("postgres")
        .dbname(database)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    let (notes, published) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(note) = message
                && note.channel() == "pgr"
            {
                let _ = notes.send(serde_json::from_str::<Value>(note.payload()).unwrap());
            }
        }
    });
    listener.batch_execute("LISTEN pgr").await.unwrap();
    (listener, published)
}

/// The rows of a snapshot or delta list, as `(id, v)` pairs in order.
fn pairs(rows: &Value) -> Vec<(i64, i64)> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| (row["id"].as_i64().unwrap(), row["v"].as_i64().unwrap()))
        .collect()
}

fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Subscribe, snapshot, then each committed change as a delta: inserts,
/// an update (the old row leaves, the new one enters), duplicates counted,
/// a delete; a rolled-back transaction and a commit that leaves the result
/// as it was send nothing. `LISTEN pgr` gets the same messages.
async fn deltas_follow_commits(gateway: &Pgshare, http: u16, database: &str, path: &str) {
    sql(
        gateway,
        database,
        "CREATE TABLE items (id int, v int, note text);
         INSERT INTO items VALUES (1, 10, 'a');
         SELECT pgr.subscribe('items', 'SELECT id, v FROM items WHERE v < 100 ORDER BY id');",
    )
    .await;
    let (_listener, mut published) = listen_pgr(gateway, database).await;

    let mut subscriber = Subscriber::connect(http, path, &[]).await;
    let subscribed = subscriber.next().await;
    assert_eq!(subscribed["type"], "subscribed");
    assert_eq!(subscribed["query_id"], "items");
    assert_eq!(subscribed["gen"], 1);
    let snapshot = subscriber.next().await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(pairs(&snapshot["inserted"]), [(1, 10)]);
    assert_eq!(snapshot["deleted"], json!([]));
    let first_seq = snapshot["seq"].as_i64().unwrap();

    let (writer, _connection) = gateway.connect_as("postgres", "", database).await.unwrap();
    writer
        .batch_execute("INSERT INTO items VALUES (2, 20, 'b')")
        .await
        .unwrap();
    let delta = subscriber.next().await;
    assert_eq!(delta["seq"], first_seq + 1);
    assert_eq!(delta["gen"], 1);
    assert_eq!(pairs(&delta["inserted"]), [(2, 20)]);
    assert_eq!(delta["deleted"], json!([]));
    assert!(delta.get("type").is_none(), "a delta has no type: {delta}");
    assert_eq!(
        published.recv().await.unwrap(),
        delta,
        "NOTIFY pgr carries it"
    );

    writer
        .batch_execute("BEGIN; DELETE FROM items; ROLLBACK")
        .await
        .unwrap();
    writer
        .batch_execute("UPDATE items SET note = 'changed'")
        .await
        .unwrap();
    subscriber.assert_quiet(Duration::from_millis(700)).await;

    writer
        .batch_execute("UPDATE items SET v = 11 WHERE id = 1")
        .await
        .unwrap();
    let delta = subscriber.next().await;
    assert_eq!(delta["seq"], first_seq + 2, "the rollback took no seq");
    assert_eq!(pairs(&delta["inserted"]), [(1, 11)]);
    assert_eq!(pairs(&delta["deleted"]), [(1, 10)]);
    assert_eq!(published.recv().await.unwrap(), delta);

    writer
        .batch_execute("INSERT INTO items VALUES (2, 20, 'c'), (2, 20, 'd')")
        .await
        .unwrap();
    let delta = subscriber.next().await;
    assert_eq!(
        pairs(&delta["inserted"]),
        [(2, 20), (2, 20)],
        "duplicates count"
    );
    writer
        .batch_execute("DELETE FROM items WHERE note = 'c'")
        .await
        .unwrap();
    let delta = subscriber.next().await;
    assert_eq!(pairs(&delta["inserted"]), []);
    assert_eq!(
        pairs(&delta["deleted"]),
        [(2, 20)],
        "one of three copies left"
    );
    assert_eq!(delta["seq"], first_seq + 4);

    // A second subscriber's snapshot is the result now.
    let mut second = Subscriber::connect(http, path, &[]).await;
    second.next().await;
    let snapshot = second.next().await;
    assert_eq!(snapshot["seq"], first_seq + 4);
    assert_eq!(pairs(&snapshot["inserted"]), [(1, 11), (2, 20), (2, 20)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_follow_commits_on_the_embedded_engine() {
    let (gateway, http) = gateway_with(&[]).await;
    deltas_follow_commits(&gateway, http, "postgres", "/ws/items").await;
    // Another database, by its name in the address.
    deltas_follow_commits(&gateway, http, "app", "/ws/app/items").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_follow_commits_on_an_upstream_server() {
    let postgres = support::postgres::Postgres::start();
    let upstream = postgres.url();
    let (gateway, http) = gateway_with(&["--upstream", &upstream, "--pool-size", "3"]).await;
    deltas_follow_commits(&gateway, http, "postgres", "/ws/items").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_follow_commits_on_a_live_share_host() {
    let tunnel_secret = "a tunnel secret of at least 32 characters";
    let (gateway, http) = gateway_with(&["--tunnel-secret", tunnel_secret]).await;
    let host_token = pgshare::engine::tunnel::token::issue(
        tunnel_secret,
        "shared",
        Some(Duration::from_secs(600)),
    )
    .unwrap();
    let _host = support::hosts::Host::node(http, "shared", &host_token);
    deltas_follow_commits(&gateway, http, "shared", "/ws/shared/items").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_checks_its_arguments_and_is_transactional() {
    let (gateway, _http) = gateway_with(&[]).await;
    let (client, _connection) = gateway.connect().await;
    client
        .batch_execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    for (call, sqlstate, says) in [
        (
            "pgr.subscribe('bad id', 'SELECT 1')",
            "22023",
            "invalid query_id",
        ),
        ("pgr.subscribe('q', 'DELETE FROM t')", "0A000", "one SELECT"),
        (
            "pgr.subscribe('q', 'SELECT 1; DROP TABLE t')",
            "42601",
            "syntax error",
        ),
        (
            "pgr.subscribe('q', 'WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d')",
            "0A000",
            "data-modifying",
        ),
        ("pgr.subscribe('q', 'SHOW work_mem')", "0A000", "one SELECT"),
        (
            "pgr.subscribe('q', 'SELECT * FROM t FOR UPDATE')",
            "0A000",
            "must not lock",
        ),
        (
            "pgr.subscribe('q', 'SELECT * FROM missing')",
            "42P01",
            "does not exist",
        ),
        (
            "pgr.subscribe('q', 'SELECT 1', 'sometimes')",
            "22023",
            "invalid mode",
        ),
    ] {
        let err = client
            .simple_query(&format!("SELECT {call}"))
            .await
            .expect_err(call);
        assert_eq!(support::sqlstate(&err), sqlstate, "{call}");
        let message = err.as_db_error().unwrap().message().to_string();
        assert!(message.contains(says), "{call}: {message}");
    }
    client
        .batch_execute(
            "BEGIN; SELECT pgr.subscribe('gone', 'SELECT id FROM t'); ROLLBACK;
             SELECT pgr.subscribe('kept', 'SELECT id FROM t;');",
        )
        .await
        .unwrap();
    let ids: Vec<String> = client
        .query("SELECT query_id FROM pgr.subscriptions ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ids, ["kept"]);
    let meta = client
        .query_one(
            "SELECT mode, audience, gen FROM pgr.subscription_meta('kept')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(meta.get::<_, String>(0), "delta");
    assert_eq!(meta.get::<_, i64>(2), 1);
    let again: Value = client
        .query_one(
            "SELECT pgr.subscribe('kept', 'SELECT id FROM t', 'notify', '{\"sub\":\"7\"}')::text",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0)
        .parse()
        .unwrap();
    assert_eq!(
        again,
        json!({"query_id": "kept", "gen": 2, "mode": "notify"})
    );
    let removed: bool = client
        .query_one("SELECT pgr.unsubscribe('kept')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(removed);
    let removed: bool = client
        .query_one("SELECT pgr.unsubscribe('kept')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!removed);
}

/// The first use of pgr in a database is inside a transaction (as drivers
/// that are not in autocommit mode send it): the schema comes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_is_created_inside_the_first_transaction_that_names_it() {
    let (gateway, _http) = gateway_with(&[]).await;
    let (client, _connection) = gateway.connect().await;
    // One statement per query, as drivers send them.
    for statement in [
        "CREATE TABLE t (id int)",
        "BEGIN",
        "SELECT pgr.subscribe('q', 'SELECT id FROM t')",
        "ROLLBACK",
    ] {
        client.batch_execute(statement).await.unwrap();
    }
    let schemas: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgr'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0, "rolled back with the transaction");
    client
        .batch_execute("BEGIN; SELECT pgr.subscribe('q', 'SELECT id FROM t'); COMMIT;")
        .await
        .unwrap();
    let count: i64 = client
        .query_one("SELECT count(*) FROM pgr.subscriptions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_are_refused_before_the_upgrade() {
    let (gateway, http) = gateway_with(&[
        "--realtime-secret",
        SECRET,
        "--realtime-anon-key",
        "the-anon-key",
        "--realtime-max-per-ip",
        "2",
    ])
    .await;
    sql(
        &gateway,
        "postgres",
        "CREATE TABLE t (id int);
         SELECT pgr.subscribe('open', 'SELECT id FROM t');
         SELECT pgr.subscribe('mine', 'SELECT id FROM t', 'delta', '{\"sub\": \"42\"}');",
    )
    .await;
    let good = token(json!({"sub": "42"}));
    let other = token(json!({"sub": "7"}));
    let expired = token(json!({"sub": "42", "exp": 1_000_000_000}));
    let no_sub = token(json!({"role": "x"}));
    let bearer = format!("Bearer {good}");
    for (path, headers, status) in [
        ("/ws/open".to_string(), String::new(), 401),
        (format!("/ws/open?token={expired}"), String::new(), 401),
        (format!("/ws/open?token={no_sub}"), String::new(), 401),
        ("/ws/open?token=not.a.jwt".to_string(), String::new(), 401),
        ("/ws/open?apikey=wrong".to_string(), String::new(), 401),
        (format!("/ws/mine?token={other}"), String::new(), 403),
        (
            "/ws/mine?apikey=the-anon-key".to_string(),
            String::new(),
            403,
        ),
        (
            format!("/ws/open?token={good}"),
            "Origin: https://elsewhere.example\r\n".to_string(),
            403,
        ),
        (format!("/ws/unknown?token={good}"), String::new(), 404),
        (format!("/ws/nodb/open?token={good}"), String::new(), 404),
        (format!("/sse/unknown?token={good}"), String::new(), 404),
    ] {
        let (got, body) = refusal(http, &path, &headers);
        assert_eq!(got, status, "{path} {headers}: {body}");
        assert!(
            body["error"].is_string(),
            "{path}: a JSON error body: {body}"
        );
    }
    // Admitted: a token (query or header) for a matching audience, the
    // anon key without one, the gateway's own origin.
    let own_origin = format!("http://127.0.0.1:{http}");
    let mut kept = Vec::new();
    for (path, headers) in [
        (
            "/ws/mine".to_string(),
            vec![("Authorization", bearer.clone())],
        ),
        (
            "/ws/open?apikey=the-anon-key".to_string(),
            vec![("Origin", own_origin.clone())],
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let mut subscriber = Subscriber::connect(http, &path, &headers).await;
        assert_eq!(subscriber.next().await["type"], "subscribed", "{path}");
        kept.push(subscriber);
    }
    // Two sockets from this address already: the third is refused.
    let (got, body) = refusal(http, &format!("/ws/open?token={good}"), "");
    assert_eq!(got, 503, "{body}");
    drop(kept);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut subscriber = Subscriber::connect(http, &format!("/ws/open?token={good}"), &[]).await;
    assert_eq!(subscriber.next().await["type"], "subscribed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anon_subscribers_are_refused_when_auth_is_required() {
    let (gateway, http) = gateway_with(&[
        "--realtime-secret",
        SECRET,
        "--realtime-anon-key",
        "the-anon-key",
        "--realtime-require-auth",
    ])
    .await;
    sql(
        &gateway,
        "postgres",
        "CREATE TABLE t (id int); SELECT pgr.subscribe('q', 'SELECT id FROM t');",
    )
    .await;
    let (status, _) = refusal(http, "/ws/q?apikey=the-anon-key", "");
    assert_eq!(status, 403);
    let (status, _) = refusal(http, "/ws/q", "Authorization: Bearer the-anon-key\r\n");
    assert_eq!(status, 403);
}

#[test]
fn a_short_realtime_secret_is_refused_at_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pgshare"))
        .args([
            "serve",
            "--memory",
            "--http",
            "off",
            "--realtime-secret",
            "short",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("at least 32"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_registration_closes_old_sockets_and_resumes_pick_up_missed_deltas() {
    let (gateway, http) = gateway_with(&[]).await;
    sql(
        &gateway,
        "postgres",
        "CREATE TABLE t (id int, v int);
         SELECT pgr.subscribe('q', 'SELECT id, v FROM t');",
    )
    .await;
    let (writer, _connection) = gateway.connect().await;
    let mut old = Subscriber::connect(http, "/ws/q", &[]).await;
    old.next().await;
    assert_eq!(old.next().await["seq"], 0);
    for id in 1..=3 {
        writer
            .batch_execute(&format!("INSERT INTO t VALUES ({id}, {id})"))
            .await
            .unwrap();
        assert_eq!(old.next().await["seq"], id);
    }
    // Resume after seq 1: deltas 2 and 3 again, no snapshot.
    let mut resumed = Subscriber::connect(http, "/ws/q?since=1&gen=1", &[]).await;
    assert_eq!(resumed.next().await["type"], "subscribed");
    let replayed = resumed.next().await;
    assert_eq!(replayed["seq"], 2);
    assert_eq!(pairs(&replayed["inserted"]), [(2, 2)]);
    assert_eq!(resumed.next().await["seq"], 3);
    // A resume point the ring cannot serve (another generation) gets a
    // snapshot.
    let mut stale = Subscriber::connect(http, "/ws/q?since=1&gen=9", &[]).await;
    stale.next().await;
    let snapshot = stale.next().await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["seq"], 3);

    let (_listener, mut published) = listen_pgr(&gateway, "postgres").await;
    writer
        .batch_execute("SELECT pgr.subscribe('q', 'SELECT id, v FROM t WHERE id > 1')")
        .await
        .unwrap();
    assert_eq!(
        published.recv().await.unwrap(),
        json!({"type": "resubscribed", "query_id": "q", "gen": 2}),
        "NOTIFY pgr carries it"
    );
    let message = old.next().await;
    assert_eq!(
        message,
        json!({"type": "resubscribed", "query_id": "q", "gen": 2})
    );
    assert!(matches!(old.ended().await, Ended::Closed(_)));
    let mut new = Subscriber::connect(http, "/ws/q", &[]).await;
    assert_eq!(new.next().await["gen"], 2);
    let snapshot = new.next().await;
    assert_eq!(snapshot["gen"], 2);
    assert_eq!(pairs(&snapshot["inserted"]).len(), 2);
    writer
        .batch_execute("INSERT INTO t VALUES (4, 4)")
        .await
        .unwrap();
    let delta = new.next().await;
    assert_eq!(delta["seq"], 4, "seq goes on across registrations");
    assert_eq!(delta["gen"], 2);

    writer
        .batch_execute("SELECT pgr.unsubscribe('q')")
        .await
        .unwrap();
    assert!(matches!(new.ended().await, Ended::Closed(_)));
    let (status, _) = refusal(http, "/ws/q", "");
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_carry_the_same_messages_and_resume_by_last_event_id() {
    let (gateway, http) = gateway_with(&[]).await;
    sql(
        &gateway,
        "app",
        "CREATE TABLE t (id int, v int);
         SELECT pgr.subscribe('q', 'SELECT id, v FROM t');",
    )
    .await;
    let (writer, _connection) = gateway.connect_as("postgres", "", "app").await.unwrap();
    let mut events = tokio::task::spawn_blocking(move || Events::open(http, "/sse/app/q", ""))
        .await
        .unwrap();
    let subscribed = events.next();
    assert_eq!(subscribed.data["type"], "subscribed");
    assert_eq!(subscribed.id, None);
    let snapshot = events.next();
    assert_eq!(snapshot.data["type"], "snapshot");
    assert_eq!(snapshot.id.as_deref(), Some("0"));
    for id in 1..=2 {
        writer
            .batch_execute(&format!("INSERT INTO t VALUES ({id}, 0)"))
            .await
            .unwrap();
    }
    let events = tokio::task::spawn_blocking(move || {
        let first = events.next();
        let second = events.next();
        (first, second)
    })
    .await
    .unwrap();
    assert_eq!(events.0.id.as_deref(), Some("1"));
    assert_eq!(pairs(&events.0.data["inserted"]), [(1, 0)]);
    assert_eq!(events.1.id.as_deref(), Some("2"));
    let replay = tokio::task::spawn_blocking(move || {
        let mut resumed = Events::open(http, "/sse/app/q?gen=1", "Last-Event-ID: 1\r\n");
        (resumed.next(), resumed.next())
    })
    .await
    .unwrap();
    assert_eq!(replay.0.data["type"], "subscribed");
    assert_eq!(replay.1.id.as_deref(), Some("2"), "delta 2, not a snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_notify_sends_only_invalidations() {
    let (gateway, http) = gateway_with(&[]).await;
    sql(
        &gateway,
        "postgres",
        "CREATE TABLE t (id int, v int);
         SELECT pgr.subscribe('n', 'SELECT count(*) FROM t', 'notify');",
    )
    .await;
    let (writer, _connection) = gateway.connect().await;
    let mut subscriber = Subscriber::connect(http, "/ws/n", &[]).await;
    assert_eq!(subscriber.next().await["type"], "subscribed");
    writer
        .batch_execute("INSERT INTO t VALUES (1, 1)")
        .await
        .unwrap();
    let message = subscriber.next().await;
    assert_eq!(
        message,
        json!({"type": "invalidated", "query_id": "n", "seq": 1, "gen": 1})
    );
    writer.batch_execute("UPDATE t SET v = 2").await.unwrap();
    subscriber.assert_quiet(Duration::from_millis(700)).await;
}

/// A query that starts failing (division by zero, a dropped column) tells
/// its subscribers to fetch again, once, and keeps its subscription; the
/// database goes on working, and so does the query once it works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_fails_at_recompute_invalidates_and_recovers() {
    let (gateway, http) = gateway_with(&[]).await;
    sql(
        &gateway,
        "postgres",
        "CREATE TABLE t (id int, v int, w int);
         INSERT INTO t VALUES (1, 1, 1);
         SELECT pgr.subscribe('q', 'SELECT id, 10 / v AS v FROM t');
         SELECT pgr.subscribe('cols', 'SELECT id, w AS v FROM t');",
    )
    .await;
    let (writer, _connection) = gateway.connect().await;
    let mut subscriber = Subscriber::connect(http, "/ws/q", &[]).await;
    subscriber.next().await;
    subscriber.next().await;
    writer.batch_execute("UPDATE t SET v = 0").await.unwrap();
    let message = subscriber.next().await;
    assert_eq!(message["type"], "invalidated");
    let (status, body) = refusal(http, "/ws/q", "");
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("division by zero"),
        "{body}"
    );
    writer
        .batch_execute("INSERT INTO t VALUES (2, 0, 2)")
        .await
        .unwrap();
    subscriber.assert_quiet(Duration::from_millis(500)).await;
    writer.batch_execute("UPDATE t SET v = 5").await.unwrap();
    assert_eq!(
        subscriber.next().await["type"],
        "invalidated",
        "it works again"
    );
    let mut again = Subscriber::connect(http, "/ws/q", &[]).await;
    again.next().await;
    assert_eq!(pairs(&again.next().await["inserted"]), [(1, 2), (2, 2)]);

    let mut columns = Subscriber::connect(http, "/ws/cols", &[]).await;
    columns.next().await;
    columns.next().await;
    writer
        .batch_execute("ALTER TABLE t DROP COLUMN w")
        .await
        .unwrap();
    assert_eq!(columns.next().await["type"], "invalidated");
    let count: i64 = writer
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);
    let kept: i64 = writer
        .query_one("SELECT count(*) FROM pgr.subscriptions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 2);
}

/// One subscriber that never reads does not hold up the others; once it
/// reads, it finds an overflow (fetch again) instead of everything it
/// missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_never_reads_gets_an_overflow_and_slows_no_one() {
    use std::io::{Read, Write};
    let (gateway, http) = gateway_with(&[]).await;
    sql(
        &gateway,
        "postgres",
        "CREATE TABLE t (id int, v int, pad text);
         SELECT pgr.subscribe('q', 'SELECT id, v, pad FROM t ORDER BY id DESC LIMIT 1');",
    )
    .await;
    // A small receive buffer, so that the kernel holds little of what the
    // gateway sends it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stalled = socket
        .connect(([127, 0, 0, 1], http).into())
        .await
        .unwrap()
        .into_std()
        .unwrap();
    stalled.set_nonblocking(false).unwrap();
    let mut stalled = stalled;
    write!(
        stalled,
        "GET /ws/q HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut reader = Subscriber::connect(http, "/ws/q", &[]).await;
    reader.next().await;
    reader.next().await;
    let (writer, _connection) = gateway.connect().await;
    // 60 deltas of 200 kB each (the newest row enters, the one before
    // leaves): far beyond what the stalled socket's kernel buffers and its
    // queue bound (256 KiB) hold.
    for id in 1..=60 {
        writer
            .batch_execute(&format!(
                "INSERT INTO t VALUES ({id}, {id}, repeat('x', 100000))"
            ))
            .await
            .unwrap();
        let delta = reader.next().await;
        assert_eq!(delta["seq"], id, "the reading socket gets every delta");
    }
    // What the kernel holds for it is bounded too (TCP_NOTSENT_LOWAT),
    // not megabytes of send buffer.
    let held = send_queue(http, stalled.local_addr().unwrap().port());
    assert!(
        held < 512 << 10,
        "the kernel holds {held} bytes for the stalled socket"
    );
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 1 << 16];
    while let Ok(read) = stalled.read(&mut buffer) {
        if read == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..read]);
        if String::from_utf8_lossy(&received).contains("\"overflow\"") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.contains("\"type\":\"overflow\""),
        "the stalled socket got an overflow; it got {} bytes: {}",
        received.len(),
        text.chars().take(300).collect::<String>()
    );
    assert!(
        received.len() < 8_000_000,
        "it did not get all 12 MB it missed ({} bytes)",
        received.len()
    );
}

/// The bytes the kernel holds unacknowledged or unsent on the gateway's
/// end (local port `server`) of the connection from local port `client`.
fn send_queue(server: u16, client: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |address: &str| u16::from_str_radix(address.rsplit(':').next().unwrap(), 16);
        if port(fields[1]) == Ok(server) && port(fields[2]) == Ok(client) {
            let (tx, _rx) = fields[4].split_once(':').unwrap();
            return u64::from_str_radix(tx, 16).unwrap();
        }
    }
    panic!("no connection from port {client} to port {server}");
}

/// What subscribers send is limited to pongs and a close: a text frame,
/// a binary frame or a huge frame closes that socket, and only that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_from_subscribers_close_only_their_socket() {
    let (gateway, http) = gateway_with(&[]).await;
    sql(
        &gateway,
        "postgres",
        "CREATE TABLE t (id int, v int); SELECT pgr.subscribe('q', 'SELECT id, v FROM t');",
    )
    .await;
    let mut bystander = Subscriber::connect(http, "/ws/q", &[]).await;
    bystander.next().await;
    bystander.next().await;
    for message in [
        Message::Text("hello".into()),
        Message::Binary(vec![0u8; 16].into()),
        Message::Binary(vec![7u8; 1 << 20].into()),
    ] {
        let mut rude = Subscriber::connect(http, "/ws/q", &[]).await;
        rude.next().await;
        rude.next().await;
        rude.send(message).await;
        // `ended` fails the test if the socket stays open.
        let ended = rude.ended().await;
        assert!(
            matches!(ended, Ended::Closed(_) | Ended::Error(_)),
            "{ended:?}"
        );
    }
    let (writer, _connection) = gateway.connect().await;
    writer
        .batch_execute("INSERT INTO t VALUES (1, 1)")
        .await
        .unwrap();
    assert_eq!(bystander.next().await["seq"], 1);
}

/// 10,000 connection attempts in a burst, at most 200 at a time, against a
/// limit of 50 subscribers: each is admitted or refused with 503, nothing
/// is left open afterwards, and subscribing still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_ten_thousand_connects_leaks_nothing() {
    let (gateway, http) = gateway_with(&[
        "--realtime-max-connections",
        "50",
        "--realtime-max-per-ip",
        "0",
    ])
    .await;
    sql(
        &gateway,
        "postgres",
        "CREATE TABLE t (id int); SELECT pgr.subscribe('q', 'SELECT id FROM t');",
    )
    .await;
    let pid = gateway.child.id();
    let open_files = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = open_files();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(200));
    let mut attempts = Vec::new();
    for _ in 0..10_000 {
        let permit = limit.clone().acquire_owned().await.unwrap();
        attempts.push(tokio::spawn(async move {
            let url = format!("ws://127.0.0.1:{http}/ws/q");
            let outcome = match tokio_tungstenite::connect_async(url).await {
                Ok((mut socket, _)) => {
                    let _ = socket.next().await;
                    200
                }
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                    response.status().as_u16()
                }
                Err(err) => panic!("neither admitted nor refused: {err}"),
            };
            drop(permit);
            outcome
        }));
    }
    let mut admitted = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            200 => admitted += 1,
            503 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(admitted >= 50, "admitted {admitted}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while open_files() > before + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} files open after the burst, {before} before",
            open_files()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut subscriber = Subscriber::connect(http, "/ws/q", &[]).await;
    assert_eq!(subscriber.next().await["type"], "subscribed");
}

/// Subscriptions, seq and gen live in the database: after a restart the
/// same subscribers carry on, with later seqs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_survive_a_gateway_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let http = free_port();
    let http_addr = format!("127.0.0.1:{http}");
    let args = ["--data", &data, "--http", &http_addr];
    let gateway = Pgshare::start(&args, Stdio::inherit()).await;
    sql(
        &gateway,
        "postgres",
        "CREATE TABLE t (id int, v int);
         SELECT pgr.subscribe('q', 'SELECT id, v FROM t');",
    )
    .await;
    let mut subscriber = Subscriber::connect(http, "/ws/q", &[]).await;
    subscriber.next().await;
    subscriber.next().await;
    sql(&gateway, "postgres", "INSERT INTO t VALUES (1, 1)").await;
    assert_eq!(subscriber.next().await["seq"], 1);
    gateway.signal("TERM");
    gateway.exited().await;
    // `ended` fails the test if the socket stays open.
    subscriber.ended().await;

    let gateway = Pgshare::start(&args, Stdio::inherit()).await;
    // Nothing changed meanwhile: resuming at seq 1 replays nothing.
    let mut resumed = Subscriber::connect(http, "/ws/q?since=1&gen=1", &[]).await;
    assert_eq!(resumed.next().await["gen"], 1);
    let mut fresh = Subscriber::connect(http, "/ws/q", &[]).await;
    fresh.next().await;
    let snapshot = fresh.next().await;
    assert_eq!(snapshot["seq"], 1);
    assert_eq!(pairs(&snapshot["inserted"]), [(1, 1)]);
    sql(&gateway, "postgres", "INSERT INTO t VALUES (2, 2)").await;
    let delta = resumed.next().await;
    assert_eq!(delta["seq"], 2);
    assert_eq!(pairs(&delta["inserted"]), [(2, 2)]);
    assert_eq!(fresh.next().await, delta);
}

/// Deltas too big for a notification go on channel pgr as an overflow;
/// WebSocket subscribers still get them whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_deltas_reach_sockets_whole_and_listeners_as_overflow() {
    let (gateway, http) = gateway_with(&[]).await;
    sql(
        &gateway,
        "postgres",
        "CREATE TABLE t (id int, v int, pad text);
         SELECT pgr.subscribe('q', 'SELECT id, v, pad FROM t');",
    )
    .await;
    let (_listener, mut published) = listen_pgr(&gateway, "postgres").await;
    let mut subscriber = Subscriber::connect(http, "/ws/q", &[]).await;
    subscriber.next().await;
    subscriber.next().await;
    sql(
        &gateway,
        "postgres",
        "INSERT INTO t VALUES (1, 1, repeat('y', 20000))",
    )
    .await;
    let delta = subscriber.next().await;
    assert_eq!(delta["inserted"][0]["pad"].as_str().unwrap().len(), 20000);
    let note = published.recv().await.unwrap();
    assert_eq!(
        note,
        json!({"type": "overflow", "query_id": "q", "seq": 1, "gen": 1, "fetch": true})
    );
}

/// Without a secret on a loopback HTTP port, anyone may subscribe; with
/// `--realtime off`, nothing is installed or served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_off_installs_and_serves_nothing() {
    let (gateway, http) = gateway_with(&["--realtime", "off"]).await;
    let (client, _connection) = gateway.connect().await;
    let err = client
        .simple_query("SELECT pgr.subscribe('q', 'SELECT 1')")
        .await
        .unwrap_err();
    assert_eq!(
        support::sqlstate(&err),
        "3F000",
        "schema pgr does not exist"
    );
    let (status, body) = refusal(http, "/ws/q", "");
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("off"), "{body}");
}

/// The page at /live/... in Chromium shows the rows, and a row committed
/// while it is open appears in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_shows_a_row_appear() {
    use std::io::{BufRead, BufReader};
    let (gateway, http) = gateway_with(&[]).await;
    sql(
        &gateway,
        "app",
        "CREATE TABLE notes (id int, body text);
         INSERT INTO notes VALUES (1, 'first note');
         SELECT pgr.subscribe('notes', 'SELECT id, body FROM notes ORDER BY id');",
    )
    .await;
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/live_page.mjs");
    let mut page = std::process::Command::new("node")
        .arg(script)
        .arg(format!("http://127.0.0.1:{http}/live/app/notes"))
        .arg("a note from psql")
        .env("PGSHARE_JS_DIR", support::hosts::js_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node must be installed (see the README)");
    let mut lines = BufReader::new(page.stdout.take().unwrap()).lines();
    let first = tokio::task::spawn_blocking(move || {
        let first = lines.next().unwrap().unwrap();
        (first, lines)
    });
    let (first, lines) = tokio::time::timeout(Duration::from_secs(90), first)
        .await
        .expect("the page went live")
        .unwrap();
    assert!(first.starts_with("live "), "{first}");
    assert!(
        first.contains("first note"),
        "the snapshot is shown: {first}"
    );
    sql(
        &gateway,
        "app",
        "INSERT INTO notes VALUES (2, 'a note from psql')",
    )
    .await;
    let rows = tokio::task::spawn_blocking(move || {
        let rows: Vec<String> = lines.map_while(Result::ok).collect();
        (rows, page.wait().unwrap())
    });
    let (rows, status) = tokio::time::timeout(Duration::from_secs(90), rows)
        .await
        .expect("the row appeared")
        .unwrap();
    assert!(status.success(), "the page script failed: {rows:?}");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows[0].contains("first note") && rows[1].contains("a note from psql"),
        "{rows:?}"
    );
}

/// `[realtime]` in the configuration file, reloaded on SIGHUP: a new secret
/// takes effect for new subscribers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_realtime_secret_is_read_from_the_file_and_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgshare.toml");
    let http = free_port();
    let write = |secret: &str| {
        std::fs::write(
            &path,
            format!("memory = true\n[realtime]\nsecret = \"{secret}\"\nmax_per_ip = 0\n"),
        )
        .unwrap();
    };
    write(SECRET);
    let http_addr = format!("127.0.0.1:{http}");
    let gateway = Pgshare::start(
        &["--config", path.to_str().unwrap(), "--http", &http_addr],
        Stdio::inherit(),
    )
    .await;
    sql(
        &gateway,
        "postgres",
        "CREATE TABLE t (id int); SELECT pgr.subscribe('q', 'SELECT id FROM t');",
    )
    .await;
    let old_token = token(json!({"sub": "1"}));
    let (status, _) = refusal(http, &format!("/ws/q?token={old_token}"), "");
    assert_eq!(status, 101);
    let (status, _) = refusal(http, "/ws/q", "");
    assert_eq!(status, 401);
    let new_secret = "another realtime secret, also 32 characters or more";
    write(new_secret);
    gateway.signal("HUP");
    let new_token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "1"}),
        &jsonwebtoken::EncodingKey::from_secret(new_secret.as_bytes()),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = refusal(http, &format!("/ws/q?token={new_token}"), "");
        if status == 101 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reload took effect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = refusal(http, &format!("/ws/q?token={old_token}"), "");
    assert_eq!(status, 401, "the old secret no longer signs");
}

/// After the upstream server restarts, the hub listens for changes again
/// on the new listener session and deltas carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_carry_on_after_the_upstream_server_restarts() {
    let postgres = support::postgres::Postgres::start();
    let upstream = postgres.url();
    let (gateway, http) = gateway_with(&["--upstream", &upstream, "--pool-size", "2"]).await;
    sql(
        &gateway,
        "postgres",
        "CREATE TABLE t (id int, v int);
         SELECT pgr.subscribe('q', 'SELECT id, v FROM t');",
    )
    .await;
    let mut subscriber = Subscriber::connect(http, "/ws/q", &[]).await;
    subscriber.next().await;
    subscriber.next().await;
    postgres.stop();
    postgres.start_again();
    // The first statement may meet a server session that died.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (client, _connection) = gateway.connect().await;
        if client
            .batch_execute("INSERT INTO t VALUES (1, 1)")
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway reconnected"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let delta = match subscriber.next_within(Duration::from_secs(60)).await {
        Ok(Some(delta)) => delta,
        other => panic!("no delta after the restart: {other:?}"),
    };
    assert_eq!(pairs(&delta["inserted"]), [(1, 1)]);
    assert_eq!(delta["seq"], 1);
}

/// /metrics counts live queries, their subscribers and what was published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_live_queries_subscribers_and_messages() {
    use std::io::{Read, Write};
    let (gateway, http) = gateway_with(&[]).await;
    sql(
        &gateway,
        "postgres",
        "CREATE TABLE t (id int, v int);
         SELECT pgr.subscribe('a', 'SELECT id, v FROM t');
         SELECT pgr.subscribe('b', 'SELECT count(*) FROM t', 'notify');",
    )
    .await;
    let mut subscriber = Subscriber::connect(http, "/ws/a", &[]).await;
    subscriber.next().await;
    subscriber.next().await;
    sql(&gateway, "postgres", "INSERT INTO t VALUES (1, 1)").await;
    subscriber.next().await;
    let scrape = move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    };
    let text = tokio::task::spawn_blocking(scrape).await.unwrap();
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}{{database=\"postgres\"}} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .trim()
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(value("pgshare_live_queries"), 2.0);
    assert_eq!(value("pgshare_live_query_subscribers"), 1.0);
    // One delta for a, one invalidation for b.
    assert_eq!(value("pgshare_live_query_messages_total"), 2.0);
}
