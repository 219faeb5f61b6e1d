//! The admin console of a `pgshare` process, through psql as an operator
//! uses it: every SHOW answers in PgBouncer's columns and types with the
//! values that must be there; PAUSE, RESUME, KILL, KILL_CLIENT, RELOAD and
//! SHUTDOWN act on the gateway; roles that are not admin users are refused.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::postgres::Postgres;
use support::process::Pgshare;
use support::sqlstate;
use tokio::task::JoinHandle;

/// A row of a console answer, by column name.
type Row = BTreeMap<String, String>;

/// Runs `command` on the console of the gateway at `port` with psql and
/// returns its column names and rows (NULL as an empty string).
async fn console(port: u16, command: &str) -> (Vec<String>, Vec<Row>) {
    let command = command.to_string();
    let output = tokio::task::spawn_blocking(move || {
        support::programs::run(
            "psql",
            &[
                &format!("postgres://postgres@127.0.0.1:{port}/pgshare"),
                "-X",
                "-A",
                "-F",
                "\x1f",
                "-P",
                "footer=off",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                &command,
            ],
        )
    })
    .await
    .unwrap();
    let mut lines = output.lines();
    let columns: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split('\x1f')
        .map(str::to_string)
        .collect();
    let rows = lines
        .filter(|line| line.contains('\x1f') || columns.len() == 1)
        .map(|line| {
            columns
                .iter()
                .cloned()
                .zip(line.split('\x1f').map(str::to_string))
                .collect()
        })
        .collect();
    (columns, rows)
}

/// The rows of `command` whose `column` is `value`.
async fn rows_where(port: u16, command: &str, column: &str, value: &str) -> Vec<Row> {
    console(port, command)
        .await
        .1
        .into_iter()
        .filter(|row| row.get(column).map(String::as_str) == Some(value))
        .collect()
}

/// Waits until `command` has a row where `column` is `value` and `check`
/// holds, and returns it.
async fn wait_for_row(
    port: u16,
    command: &str,
    column: &str,
    value: &str,
    check: impl Fn(&Row) -> bool,
) -> Row {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = rows_where(port, command, column, value).await;
        if let Some(row) = rows.iter().find(|row| check(row)) {
            return row.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{command} never showed the row wanted: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client of database `database` named `application_name`, and its
/// connection task.
async fn client(
    pgshare: &Pgshare,
    database: &str,
    application_name: &str,
) -> (
    tokio_postgres::Client,
    JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(pgshare.port)
        .user("postgres")
        .dbname(database)
        .application_name(application_name)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect to pgshare");
    (client, tokio::spawn(connection))
}

/// The id SHOW CLIENTS gives the client named `application_name`.
async fn client_id(port: u16, application_name: &str) -> String {
    let rows = rows_where(port, "SHOW CLIENTS", "application_name", application_name).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0]["id"].clone()
}

/// The SQLSTATE that closed a connection.
async fn closed_with(connection: JoinHandle<Result<(), tokio_postgres::Error>>) -> String {
    let ended = tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the connection was closed")
        .unwrap();
    sqlstate(&ended.expect_err("closed by an error"))
}

/// The column names and type OIDs of `command`'s answer, read from the
/// `RowDescription` itself.
fn column_types(port: u16, command: &str) -> Vec<(String, u32)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut body = 196608i32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0postgres\0database\0pgshare\0\0");
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend(body);
    stream.write_all(&packet).unwrap();
    while read_message(&mut stream).0 != b'Z' {}
    let mut query = vec![b'Q'];
    query.extend_from_slice(&((command.len() + 5) as i32).to_be_bytes());
    query.extend_from_slice(command.as_bytes());
    query.push(0);
    stream.write_all(&query).unwrap();
    loop {
        let (tag, body) = read_message(&mut stream);
        assert_ne!(tag, b'E', "{command} failed");
        if tag != b'T' {
            continue;
        }
        let count = i16::from_be_bytes([body[0], body[1]]) as usize;
        let mut rest = &body[2..];
        let mut columns = Vec::new();
        for _ in 0..count {
            let end = rest.iter().position(|&b| b == 0).unwrap();
            let name = String::from_utf8(rest[..end].to_vec()).unwrap();
            let oid = u32::from_be_bytes(rest[end + 7..end + 11].try_into().unwrap());
            columns.push((name, oid));
            rest = &rest[end + 19..];
        }
        return columns;
    }
}

/// One backend message: its tag and body.
fn read_message(stream: &mut std::net::TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).unwrap();
    let len = i32::from_be_bytes(header[1..].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).unwrap();
    (header[0], body)
}

const TEXT: u32 = 25;
const INT4: u32 = 23;
const NUMERIC: u32 = 1700;

/// PgBouncer 1.24's columns of SHOW CLIENTS and SHOW SERVERS.
const SOCKET_COLUMNS: [&str; 21] = [
    "type",
    "user",
    "database",
    "replication",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
    "prepared_statements",
    "id",
];

async fn start(args: &[&str]) -> Pgshare {
    let mut all = vec!["--memory", "--ssl", "off"];
    all.extend_from_slice(args);
    Pgshare::start(&all, Stdio::null()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_show_answers_in_pgbouncer_columns_with_the_values_that_must_be_there() {
    let pgshare = start(&[]).await;
    let port = pgshare.port;
    let (reporting, _reporting) = client(&pgshare, "postgres", "reporting").await;
    reporting.batch_execute("SELECT 1; SELECT 2").await.unwrap();

    let (columns, _) = console(port, "SHOW CLIENTS").await;
    assert_eq!(columns[..21], SOCKET_COLUMNS);
    assert_eq!(columns[21..], ["activity", "activity_since"]);
    let row = wait_for_row(
        port,
        "show clients;",
        "application_name",
        "reporting",
        |row| row["activity"] == "idle",
    )
    .await;
    assert_eq!(row["type"], "C");
    assert_eq!(row["user"], "postgres");
    assert_eq!(row["database"], "postgres");
    assert_eq!(row["state"], "active");
    assert_eq!(row["addr"], "127.0.0.1");
    assert_eq!(row["local_port"], port.to_string());
    assert!(row["connect_time"].ends_with(" UTC"), "{row:?}");
    assert!(row["id"].parse::<i32>().unwrap() >= 1000);
    // The console's own client is listed too.
    assert!(
        !rows_where(port, "SHOW CLIENTS", "database", "pgshare")
            .await
            .is_empty()
    );

    // A client holding the engine in a transaction, another waiting.
    let (holder, _holder) = client(&pgshare, "postgres", "holder").await;
    holder
        .batch_execute("CREATE TABLE t(x int); BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let (waiter, _waiter) = client(&pgshare, "postgres", "waiter").await;
    let waiting = tokio::spawn(async move {
        let result = waiter.batch_execute("SELECT count(*) FROM t").await;
        (waiter, result)
    });
    let holder_id = client_id(port, "holder").await;
    let pool = wait_for_row(port, "SHOW POOLS", "database", "postgres", |row| {
        row["cl_waiting"] == "1"
    })
    .await;
    assert_eq!(pool["sv_active"], "1");
    assert_eq!(pool["pool_mode"], "transaction");
    assert_eq!(pool["engine"], "embedded");
    assert_eq!(pool["queue_length"], "1");
    assert_eq!(pool["holder"], holder_id);
    assert_eq!(pool["held_state"], "in transaction");
    let waiting_row = rows_where(port, "SHOW CLIENTS", "application_name", "waiter").await;
    assert_eq!(waiting_row[0]["state"], "waiting");
    assert_eq!(waiting_row[0]["activity"], "waiting");
    let servers = rows_where(port, "SHOW SERVERS", "database", "postgres").await;
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(servers[0]["type"], "S");
    assert_eq!(servers[0]["state"], "active");
    assert_eq!(servers[0]["holder"], holder_id);
    assert_eq!(servers[0]["link"], format!("client:{holder_id}"));
    assert_eq!(servers[0]["application_name"], "holder");
    holder.batch_execute("COMMIT").await.unwrap();
    let (_waiter, result) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiter runs once the transaction ends")
        .unwrap();
    result.unwrap();

    let (columns, rows) = console(port, "SHOW DATABASES").await;
    assert_eq!(
        columns,
        [
            "name",
            "host",
            "port",
            "database",
            "force_user",
            "pool_size",
            "min_pool_size",
            "reserve_pool_size",
            "server_lifetime",
            "pool_mode",
            "load_balance_hosts",
            "max_connections",
            "current_connections",
            "max_client_connections",
            "current_client_connections",
            "paused",
            "disabled",
            "engine",
        ]
    );
    let postgres = rows.iter().find(|row| row["name"] == "postgres").unwrap();
    assert_eq!(postgres["paused"], "0");
    assert_eq!(postgres["current_client_connections"], "3");
    assert_eq!(postgres["engine"], "embedded");

    let (columns, _) = console(port, "SHOW STATS").await;
    let stats = rows_where(port, "SHOW STATS", "database", "postgres").await;
    assert_eq!(columns.len(), 23);
    assert_eq!(
        columns[..9],
        [
            "database",
            "total_server_assignment_count",
            "total_xact_count",
            "total_query_count",
            "total_received",
            "total_sent",
            "total_xact_time",
            "total_query_time",
            "total_wait_time",
        ]
    );
    assert_eq!(columns[22], "avg_bind_count");
    let number = |row: &Row, column: &str| row[column].parse::<u64>().unwrap();
    // reporting's two statements, the holder's transaction, the waiter's.
    assert!(number(&stats[0], "total_query_count") >= 6, "{stats:?}");
    assert!(number(&stats[0], "total_xact_count") >= 3, "{stats:?}");
    assert!(number(&stats[0], "total_wait_time") > 0, "{stats:?}");
    assert!(number(&stats[0], "total_received") > 0, "{stats:?}");
    assert!(number(&stats[0], "total_sent") > 0, "{stats:?}");
    let (columns, _) = console(port, "SHOW STATS_TOTALS").await;
    assert_eq!(
        columns[..4],
        [
            "database",
            "server_assignment_count",
            "xact_count",
            "query_count"
        ]
    );

    let (columns, config) = console(port, "SHOW CONFIG").await;
    assert_eq!(columns, ["key", "value", "default", "changeable"]);
    let max_client_conn = config
        .iter()
        .find(|row| row["key"] == "max_client_conn")
        .unwrap();
    assert_eq!(max_client_conn["value"], "100");
    assert_eq!(max_client_conn["changeable"], "no");
    assert!(config.iter().any(|row| row["key"] == "admin_users"
        && row["value"] == "postgres"
        && row["changeable"] == "yes"));

    let (columns, lists) = console(port, "SHOW LISTS").await;
    assert_eq!(columns, ["list", "items"]);
    let items: BTreeMap<&str, &str> = lists
        .iter()
        .map(|row| (row["list"].as_str(), row["items"].as_str()))
        .collect();
    assert_eq!(items["databases"], "1");
    assert_eq!(items["pools"], "1");
    // Three clients of postgres and the console's (a console client that
    // just left may still be counted).
    assert!(
        items["used_clients"].parse::<u32>().unwrap() >= 4,
        "{items:?}"
    );
    assert_eq!(items["used_servers"], "1");
    assert!(items.contains_key("dns_pending"));

    let (columns, version) = console(port, "SHOW VERSION").await;
    assert_eq!(columns, ["version"]);
    assert!(version[0]["version"].starts_with("pgshare "), "{version:?}");

    let help = tokio::task::spawn_blocking(move || {
        support::programs::psql(
            &format!("postgres://postgres@127.0.0.1:{port}/pgshare"),
            "SHOW HELP",
        )
    })
    .await
    .unwrap();
    assert!(
        help.contains("Console usage") && help.contains("KILL_CLIENT"),
        "{help}"
    );

    // The types PgBouncer's exporters rely on.
    let types = tokio::task::spawn_blocking(move || {
        (
            column_types(port, "SHOW STATS"),
            column_types(port, "SHOW POOLS"),
            column_types(port, "SHOW LISTS"),
        )
    })
    .await
    .unwrap();
    assert_eq!(types.0[0], ("database".to_string(), TEXT));
    assert!(
        types.0[1..].iter().all(|(_, oid)| *oid == NUMERIC),
        "{:?}",
        types.0
    );
    assert_eq!(types.1[2], ("cl_active".to_string(), INT4));
    assert_eq!(types.1[13], ("maxwait".to_string(), INT4));
    assert_eq!(types.2[1], ("items".to_string(), INT4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_new_units_until_resume_and_they_stay_cancellable() {
    let pgshare = start(&["--query-wait-timeout", "3"]).await;
    let port = pgshare.port;
    let (running, _running) = client(&pgshare, "postgres", "running").await;
    running
        .batch_execute("CREATE TABLE t(x int); BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    // PAUSE returns only once the running transaction ends.
    let pause = tokio::spawn(console(port, "PAUSE postgres"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!pause.is_finished(), "PAUSE waits for the running unit");
    running.batch_execute("COMMIT").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), pause)
        .await
        .expect("PAUSE returns once the transaction ended")
        .unwrap();
    assert_eq!(
        rows_where(port, "SHOW DATABASES", "name", "postgres").await[0]["paused"],
        "1"
    );

    // A new query waits, shown as waiting, until RESUME.
    let (waiter, _waiter) = client(&pgshare, "postgres", "waiter").await;
    let started = Instant::now();
    let waiting =
        tokio::spawn(async move { waiter.query_one("SELECT count(*) FROM t", &[]).await });
    wait_for_row(port, "SHOW CLIENTS", "application_name", "waiter", |row| {
        row["state"] == "waiting"
    })
    .await;
    assert!(!waiting.is_finished());
    console(port, "RESUME postgres").await;
    let row = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("RESUME lets it go")
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    assert!(started.elapsed() < Duration::from_secs(3));

    // While paused, a waiting query can be cancelled, and gives up at
    // query_wait_timeout.
    console(port, "PAUSE").await;
    let (cancelled, _cancelled) = client(&pgshare, "postgres", "cancelled").await;
    let token = cancelled.cancel_token();
    let waiting = tokio::spawn(async move { cancelled.batch_execute("SELECT 1").await });
    wait_for_row(
        port,
        "SHOW CLIENTS",
        "application_name",
        "cancelled",
        |row| row["state"] == "waiting",
    )
    .await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the cancel reaches the waiting query")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    let (patient, _patient) = client(&pgshare, "postgres", "patient").await;
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), patient.batch_execute("SELECT 1"))
        .await
        .expect("query_wait_timeout ends the wait")
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    console(port, "RESUME").await;
    patient.batch_execute("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_client_disconnects_exactly_that_client_and_kill_pauses_its_database() {
    let pgshare = start(&[]).await;
    let port = pgshare.port;
    let (doomed, doomed_connection) = client(&pgshare, "postgres", "doomed").await;
    let (spared, _spared) = client(&pgshare, "postgres", "spared").await;
    doomed.batch_execute("SELECT 1").await.unwrap();
    spared.batch_execute("SELECT 1").await.unwrap();
    let id = client_id(port, "doomed").await;
    console(port, &format!("KILL_CLIENT {id}")).await;
    assert_eq!(closed_with(doomed_connection).await, "57P01");
    spared.batch_execute("SELECT 2").await.unwrap();
    assert!(
        rows_where(port, "SHOW CLIENTS", "application_name", "doomed")
            .await
            .is_empty()
    );

    // KILL disconnects every client of the database, even one inside a
    // transaction, which is rolled back; the database stays paused.
    let (app, app_connection) = client(&pgshare, "app", "app-client").await;
    app.batch_execute("CREATE TABLE t(x int)").await.unwrap();
    app.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    console(port, "KILL app").await;
    assert_eq!(closed_with(app_connection).await, "57P01");
    spared.batch_execute("SELECT 3").await.unwrap();
    let (later, _later) = client(&pgshare, "app", "later").await;
    let waiting = tokio::spawn(async move { later.query_one("SELECT count(*) FROM t", &[]).await });
    wait_for_row(port, "SHOW CLIENTS", "application_name", "later", |row| {
        row["state"] == "waiting"
    })
    .await;
    console(port, "RESUME app").await;
    let row = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("RESUME lets it go")
        .unwrap()
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        0,
        "the killed transaction was rolled back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reads_the_changed_file_and_shutdown_stops_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgshare.toml");
    std::fs::write(&path, "[limits]\nquery_wait_timeout = 120\n").unwrap();
    let pgshare = start(&["--config", path.to_str().unwrap()]).await;
    let port = pgshare.port;
    let setting = |rows: Vec<Row>| rows[0]["value"].clone();
    assert_eq!(
        setting(rows_where(port, "SHOW CONFIG", "key", "query_wait_timeout").await),
        "120"
    );
    std::fs::write(
        &path,
        "[limits]\nquery_wait_timeout = 7\n[auth]\nadmin_users = [\"postgres\", \"ops\"]\n",
    )
    .unwrap();
    console(port, "RELOAD").await;
    assert_eq!(
        setting(rows_where(port, "SHOW CONFIG", "key", "query_wait_timeout").await),
        "7"
    );
    assert_eq!(
        setting(rows_where(port, "SHOW CONFIG", "key", "admin_users").await),
        "ops,postgres"
    );
    std::fs::write(&path, "[limits]\nquery_wait_timeout = \"soon\"\n").unwrap();
    let (client, _connection) = client(&pgshare, "pgshare", "operator").await;
    let err = client.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(sqlstate(&err), "F0000");
    assert_eq!(
        setting(rows_where(port, "SHOW CONFIG", "key", "query_wait_timeout").await),
        "7",
        "a bad file changes nothing"
    );

    let (idle, idle_connection) = pgshare.connect().await;
    idle.batch_execute("SELECT 1").await.unwrap();
    console(port, "SHUTDOWN").await;
    assert_eq!(closed_with(idle_connection).await, "57P01");
    pgshare.exited().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_users_open_the_console_and_it_refuses_the_extended_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("userlist.txt");
    std::fs::write(&users, "\"app\" \"app-secret\"\n\"ops\" \"ops-secret\"\n").unwrap();
    let pgshare = start(&[
        "--users-file",
        users.to_str().unwrap(),
        "--admin-users",
        "postgres,ops",
    ])
    .await;
    let Err(refused) = pgshare.connect_as("app", "app-secret", "pgshare").await else {
        panic!("app is no admin user");
    };
    assert_eq!(sqlstate(&refused), "42501");
    let (app, _app) = pgshare
        .connect_as("app", "app-secret", "postgres")
        .await
        .unwrap();
    app.batch_execute("SELECT 1").await.unwrap();

    let (ops, _ops) = pgshare
        .connect_as("ops", "ops-secret", "pgshare")
        .await
        .unwrap();
    let err = ops.query("SHOW CLIENTS", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "0A000");
    // The connection goes on with simple queries.
    let answer = ops.simple_query("SHOW VERSION").await.unwrap();
    let version = answer
        .iter()
        .find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap();
    assert!(version.starts_with("pgshare "), "{version}");
    let err = ops.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42601");
    let err = ops.simple_query("PAUSE nosuchdb").await.unwrap_err();
    assert_eq!(sqlstate(&err), "3D000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_servers_lists_the_sessions_of_an_upstream_pool() {
    let postgres = Postgres::start();
    let pgshare = Pgshare::start(
        &[
            "--ssl",
            "off",
            "--upstream",
            &postgres.url(),
            "--pool-size",
            "3",
        ],
        Stdio::null(),
    )
    .await;
    let port = pgshare.port;
    let (first, _first) = client(&pgshare, "postgres", "first").await;
    let (second, _second) = client(&pgshare, "postgres", "second").await;
    let mut pids = Vec::new();
    for client in [&first, &second] {
        client.batch_execute("BEGIN").await.unwrap();
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        pids.push(pid.to_string());
    }
    let servers = rows_where(port, "SHOW SERVERS", "state", "active").await;
    assert_eq!(servers.len(), 2, "{servers:?}");
    for (name, pid) in ["first", "second"].iter().zip(&pids) {
        let id = client_id(port, name).await;
        let server = servers
            .iter()
            .find(|server| server["remote_pid"] == *pid)
            .unwrap_or_else(|| panic!("no server session with pid {pid}: {servers:?}"));
        assert_eq!(server["holder"], id);
        assert_eq!(server["application_name"], *name);
        assert_eq!(server["held_state"], "in transaction");
        assert_eq!(server["engine"], "upstream");
        assert_eq!(server["addr"], "127.0.0.1");
        assert_eq!(server["port"], postgres.port.to_string());
    }
    let pool = rows_where(port, "SHOW POOLS", "database", "postgres").await;
    assert_eq!(pool[0]["sv_active"], "2");
    for client in [&first, &second] {
        client.batch_execute("COMMIT").await.unwrap();
    }
    let idle = wait_for_row(port, "SHOW POOLS", "database", "postgres", |row| {
        row["sv_active"] == "0"
    })
    .await;
    assert!(idle["sv_idle"].parse::<u32>().unwrap() >= 2, "{idle:?}");
    let servers = rows_where(port, "SHOW SERVERS", "state", "idle").await;
    assert!(
        pids.iter()
            .all(|pid| servers.iter().any(|server| server["remote_pid"] == *pid)),
        "{servers:?}"
    );
    let databases = rows_where(port, "SHOW DATABASES", "name", "postgres").await;
    assert_eq!(databases[0]["host"], "127.0.0.1");
    assert_eq!(databases[0]["pool_size"], "3");
    assert_eq!(databases[0]["engine"], "upstream");
}
