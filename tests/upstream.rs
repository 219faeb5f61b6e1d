//! pgshare in front of a real PostgreSQL server (started by the test), with
//! psql, pgbench and tokio-postgres as clients.

mod support;

use std::process::Command;

use support::postgres::Postgres;
use support::programs::run;
use support::{Gateway, test_config};

/// A gateway serving `upstream_url` with up to `pool_size` server sessions.
async fn gateway_for(upstream_url: &str, pool_size: usize) -> Gateway {
    let mut config = test_config();
    config.upstream = Some(pgshare::engine::upstream::Upstream::parse(upstream_url).unwrap());
    config.pool_size = pool_size;
    Gateway::start_with(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_through_pgshare_to_postgres_loses_nothing() {
    let server = Postgres::start();
    let gateway = gateway_for(&server.url(), 4).await;
    let url = gateway.url();
    let sums = tokio::task::spawn_blocking(move || {
        run("pgbench", &["-i", "-s", "1", &url]);
        for protocol in ["simple", "extended", "prepared"] {
            // -n keeps pgbench_history, so the sums below cover every run.
            let tpcb = run("pgbench", &["-n", "-M", protocol, "-c", "8", "-j", "2", "-t", "30", &url]);
            assert!(tpcb.contains("number of failed transactions: 0 "), "{tpcb}");
            let select = run("pgbench", &["-n", "-S", "-M", protocol, "-c", "8", "-j", "2", "-t", "100", &url]);
            assert!(select.contains("number of failed transactions: 0 "), "{select}");
        }
        run(
            "psql",
            &[
                &url, "-X", "-A", "-t", "-c",
                "SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(tbalance) FROM pgbench_tellers), \
                 (SELECT sum(bbalance) FROM pgbench_branches), (SELECT sum(delta) FROM pgbench_history), version()",
            ],
        )
    })
    .await
    .unwrap();
    let fields: Vec<&str> = sums.trim().split('|').collect();
    assert!(
        fields[4].starts_with("PostgreSQL 1"),
        "served by the real server: {}",
        fields[4]
    );
    assert!(
        !fields[4].contains("wasm"),
        "not by the embedded engine: {}",
        fields[4]
    );
    assert!(
        fields[..4].iter().all(|sum| *sum == fields[0]),
        "balances disagree: {fields:?}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_over_a_unix_socket_with_per_client_settings() {
    let server = Postgres::start();
    let gateway = gateway_for(&server.socket_url(), 1).await;
    let a = gateway.connect().await;
    let b = gateway.connect().await;
    a.batch_execute("SET TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    let zone_a: String = a.query_one("SHOW TimeZone", &[]).await.unwrap().get(0);
    let zone_b: String = b.query_one("SHOW TimeZone", &[]).await.unwrap().get(0);
    assert_eq!(zone_a, "Asia/Tokyo");
    assert_ne!(zone_b, "Asia/Tokyo");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_idle_listeners_with_one_session_and_with_a_pool() {
    let server = Postgres::start();
    for pool_size in [1, 3] {
        let gateway = gateway_for(&server.url(), pool_size).await;
        let (listener, mut messages) = gateway.connect_with_messages().await;
        let notifier = gateway.connect().await;
        listener.batch_execute("LISTEN events").await.unwrap();
        // One NOTIFY through pgshare (on whichever session), one sent on the
        // server directly.
        notifier
            .batch_execute("NOTIFY events, 'through pgshare'")
            .await
            .unwrap();
        let url = server.url();
        tokio::task::spawn_blocking(move || {
            run("psql", &[&url, "-X", "-c", "NOTIFY events, 'from outside'"])
        })
        .await
        .unwrap();
        let mut payloads = Vec::new();
        while payloads.len() < 2 {
            let note = tokio::time::timeout(std::time::Duration::from_secs(5), messages.recv())
                .await
                .unwrap_or_else(|_| panic!("pool {pool_size}: got only {payloads:?}"));
            if let Some(tokio_postgres::AsyncMessage::Notification(note)) = note {
                payloads.push(note.payload().to_string());
            }
        }
        assert_eq!(
            payloads,
            ["through pgshare", "from outside"],
            "pool {pool_size}"
        );
        listener.batch_execute("UNLISTEN events").await.unwrap();
        notifier
            .batch_execute("NOTIFY events, 'nobody listens'")
            .await
            .unwrap();
        let late =
            tokio::time::timeout(std::time::Duration::from_millis(500), messages.recv()).await;
        assert!(
            late.is_err(),
            "pool {pool_size}: no notification after UNLISTEN"
        );
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_inside_a_transaction_on_a_pooled_session_takes_effect_at_commit() {
    let server = Postgres::start();
    let gateway = gateway_for(&server.url(), 3).await;
    let (listener, mut messages) = gateway.connect_with_messages().await;
    let notifier = gateway.connect().await;
    // BEGIN alone takes a pooled session; the LISTEN then runs on it.
    for sql in [
        "BEGIN",
        "LISTEN kept",
        "COMMIT",
        "BEGIN",
        "LISTEN dropped",
        "ROLLBACK",
    ] {
        listener.batch_execute(sql).await.unwrap();
    }
    notifier
        .batch_execute("NOTIFY dropped, 'rolled back'; NOTIFY kept, 'committed'")
        .await
        .unwrap();
    let mut payloads = Vec::new();
    loop {
        match tokio::time::timeout(std::time::Duration::from_millis(700), messages.recv()).await {
            Ok(Some(tokio_postgres::AsyncMessage::Notification(note))) => {
                payloads.push(note.payload().to_string())
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert_eq!(payloads, ["committed"]);
    // The pooled sessions the transactions ran on listen to nothing.
    for _ in 0..6 {
        let client = gateway.connect().await;
        let channels = client
            .query("SELECT pg_listening_channels()", &[])
            .await
            .unwrap();
        assert!(channels.is_empty(), "a pooled session kept a LISTEN");
    }
    // UNLISTEN inside a transaction ends it too.
    for sql in ["BEGIN", "UNLISTEN kept", "COMMIT"] {
        listener.batch_execute(sql).await.unwrap();
    }
    notifier.batch_execute("NOTIFY kept, 'late'").await.unwrap();
    let late = tokio::time::timeout(std::time::Duration::from_millis(500), messages.recv()).await;
    assert!(late.is_err(), "no notification after UNLISTEN");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_follow_their_clients_across_pooled_sessions() {
    let server = Postgres::start();
    let gateway = gateway_for(&server.url(), 4).await;
    let setup = gateway.connect().await;
    setup
        .batch_execute("CREATE TABLE items(id int PRIMARY KEY, owner int); INSERT INTO items SELECT i, i % 8 FROM generate_series(1, 800) i")
        .await
        .unwrap();
    let clients = futures_util::future::join_all((0..8).map(|_| gateway.connect())).await;
    let work = clients
        .iter()
        .enumerate()
        .map(|(owner, client)| async move {
            let owner = owner as i32;
            let count = client
                .prepare("SELECT count(*)::int4 FROM items WHERE owner = $1")
                .await
                .unwrap();
            for round in 0..30 {
                if round % 3 == 0 {
                    // A transaction holds one pooled session for a while, so the
                    // next statements land on whichever other session is free.
                    client.batch_execute("BEGIN").await.unwrap();
                    let n: i32 = client.query_one(&count, &[&owner]).await.unwrap().get(0);
                    assert_eq!(n, 100);
                    client.batch_execute("COMMIT").await.unwrap();
                } else {
                    let n: i32 = client.query_one(&count, &[&owner]).await.unwrap().get(0);
                    assert_eq!(n, 100);
                }
            }
        });
    futures_util::future::join_all(work).await;
    // The gateway really used several server sessions.
    let url = server.url();
    let sessions = tokio::task::spawn_blocking(move || {
        run(
            "psql",
            &[&url, "-X", "-A", "-t", "-c", "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"],
        )
    })
    .await
    .unwrap();
    let sessions: i32 = sessions.trim().parse().unwrap();
    assert!(
        (2..=4).contains(&sessions),
        "{sessions} server sessions for a pool of 4"
    );
    // The eight clients prepared the same query: a session holds it once.
    let copies: i64 = setup
        .query_one(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT count(*)::int4 FROM items WHERE owner = $1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(copies <= 1, "{copies} copies of one query on a session");
    gateway.stop().await;
}

/// The text of the first column of the first row of a simple query.
async fn simple_value(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<String, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages
        .iter()
        .find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a row"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_and_a_small_statement_limit_work_across_pooled_sessions() {
    let server = Postgres::start();
    let mut config = test_config();
    config.upstream = Some(pgshare::engine::upstream::Upstream::parse(&server.url()).unwrap());
    config.pool_size = 3;
    config.max_prepared_statements = 3;
    let gateway = Gateway::start_with(config).await;
    let clients = futures_util::future::join_all((0..6).map(|_| gateway.connect())).await;
    let work = clients
        .iter()
        .enumerate()
        .map(|(owner, client)| async move {
            client
                .batch_execute(&format!("PREPARE mine(int) AS SELECT $1 + {owner}"))
                .await
                .unwrap();
            let mut statements = Vec::new();
            for k in 0..6 {
                statements.push(
                    client
                        .prepare(&format!("SELECT $1::int4 * {k}"))
                        .await
                        .unwrap(),
                );
            }
            for round in 0..24i32 {
                let held = round % 4 == 0;
                if held {
                    // Holds one session, so the others serve the next rounds.
                    client.batch_execute("BEGIN").await.unwrap();
                }
                let mine = simple_value(client, &format!("EXECUTE mine({round})"))
                    .await
                    .unwrap();
                assert_eq!(mine, (round + owner as i32).to_string());
                let k = round as usize % statements.len();
                let n: i32 = client
                    .query_one(&statements[k], &[&round])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(n, round * k as i32);
                if held {
                    client.batch_execute("COMMIT").await.unwrap();
                }
            }
            client.batch_execute("DEALLOCATE mine").await.unwrap();
            let gone = client.batch_execute("EXECUTE mine(1)").await.unwrap_err();
            assert_eq!(gone.code().unwrap().code(), "26000");
            client
                .batch_execute("PREPARE mine AS SELECT 'again'")
                .await
                .unwrap();
            assert_eq!(simple_value(client, "EXECUTE mine").await.unwrap(), "again");
        });
    futures_util::future::join_all(work).await;
    // Each session keeps about the limit, not every client's statements.
    let kept: i64 = clients[0]
        .query_one("SELECT count(*) FROM pg_prepared_statements", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        kept <= 3 + 2,
        "{kept} statements on a session with a limit of 3"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_server_session_costs_only_the_work_on_it() {
    let server = Postgres::start();
    let gateway = gateway_for(&server.url(), 4).await;
    let url = gateway.url();
    let direct = server.url();
    let output = tokio::task::spawn_blocking(move || {
        run("pgbench", &["-i", "-s", "1", &url]);
        let bench = std::thread::spawn({
            let url = url.clone();
            move || {
                Command::new("pgbench")
                    .args(["-c", "8", "-j", "2", "-T", "6", &url])
                    .output()
                    .expect("run pgbench")
            }
        });
        std::thread::sleep(std::time::Duration::from_secs(2));
        // One of pgshare's server sessions dies (as in a server-side kill).
        let killed = run(
            "psql",
            &[
                &direct, "-X", "-A", "-t", "-c",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() ORDER BY pid LIMIT 1",
            ],
        );
        assert_eq!(killed.trim(), "t", "a server session was terminated");
        let bench = bench.join().unwrap();
        let text = String::from_utf8_lossy(&bench.stdout).into_owned()
            + &String::from_utf8_lossy(&bench.stderr);
        // Clients whose transaction was not on the killed session go on.
        let processed: u64 = text
            .lines()
            .find_map(|line| line.strip_prefix("number of transactions actually processed: "))
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("pgbench printed no count:\n{text}"));
        assert!(processed > 100, "{text}");
        let aborted = text.matches("aborted in command").count();
        assert!(aborted <= 1, "only the client on the killed session fails:\n{text}");
        // A new client gets a fresh server session, and nothing half-done
        // was committed.
        run(
            "psql",
            &[
                &url, "-X", "-A", "-t", "-c",
                "SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT sum(delta) FROM pgbench_history) \
                 AND (SELECT sum(tbalance) FROM pgbench_tellers) = (SELECT sum(delta) FROM pgbench_history)",
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(output.trim(), "t", "balances agree after the kill");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_the_statement_running_on_the_server() {
    let server = Postgres::start();
    let gateway = gateway_for(&server.url(), 2).await;
    let client = gateway.connect().await;
    let token = client.cancel_token();
    let started = std::time::Instant::now();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(20)").await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let result = tokio::time::timeout(std::time::Duration::from_secs(5), sleeper)
        .await
        .expect("the statement ends soon after the cancel")
        .unwrap();
    assert_eq!(support::sqlstate(&result.unwrap_err()), "57014");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_sessions_are_closed_when_idle_and_replaced_when_old() {
    let server = Postgres::start();
    let mut config = test_config();
    config.upstream = Some(pgshare::engine::upstream::Upstream::parse(&server.url()).unwrap());
    config.pool_size = 2;
    config.server_lifetime = Some(std::time::Duration::from_millis(700));
    config.server_idle_timeout = Some(std::time::Duration::from_millis(1500));
    let gateway = Gateway::start_with(config).await;
    let client = gateway.connect().await;
    let pid = |row: tokio_postgres::Row| row.get::<_, i32>(0);
    let first = pid(client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let second = pid(client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap());
    assert_ne!(first, second, "a session past its lifetime is replaced");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let url = server.url();
    let open = tokio::task::spawn_blocking(move || {
        run(
            "psql",
            &[&url, "-X", "-A", "-t", "-c", "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"],
        )
    })
    .await
    .unwrap();
    assert_eq!(
        open.trim(),
        "0",
        "idle sessions are closed after the idle timeout"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_wait_for_a_restarting_server() {
    let server = Postgres::start();
    let gateway = gateway_for(&server.url(), 2).await;
    let client = gateway.connect().await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    server.stop();
    // A client that is not inside a transaction waits for the server to
    // come back (up to query_wait_timeout) instead of failing.
    let waiting = tokio::spawn(async move {
        let row = client.query_one("SELECT 2", &[]).await;
        row.map(|row| row.get::<_, i32>(0))
    });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        !waiting.is_finished(),
        "the query waits while the server is down"
    );
    let server = tokio::task::spawn_blocking(move || {
        server.start_again();
        server
    })
    .await
    .unwrap();
    let two = tokio::time::timeout(std::time::Duration::from_secs(15), waiting)
        .await
        .expect("the query runs once the server is back")
        .unwrap()
        .unwrap();
    assert_eq!(two, 2);
    gateway.stop().await;
    drop(server);
}

/// Whether the gateway's server session for `client` is encrypted.
async fn server_session_uses_tls(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_server_in_libpq_sslmodes() {
    let (server, ca) = Postgres::start_tls();
    let password = support::postgres::PASSWORD;
    let port = server.port;
    for url in [
        format!("postgres://postgres:{password}@127.0.0.1:{port}/postgres?sslmode=require"),
        format!(
            "postgres://postgres:{password}@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
            ca.display()
        ),
        format!("postgres://postgres:{password}@127.0.0.1:{port}/postgres"),
    ] {
        let gateway = gateway_for(&url, 2).await;
        let client = gateway.connect().await;
        assert!(server_session_uses_tls(&client).await, "{url}");
        gateway.stop().await;
    }
    // A certificate from another CA is refused under verify-full.
    let other_ca = ca.with_file_name("other-ca.pem");
    std::fs::write(&other_ca, support::postgres::test_certificates().0).unwrap();
    let mut config = test_config();
    config.upstream = Some(
        pgshare::engine::upstream::Upstream::parse(&format!(
            "postgres://postgres:{password}@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
            other_ca.display()
        ))
        .unwrap(),
    );
    assert!(pgshare::server::Server::start(config).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_refuses_a_server_without_tls() {
    let server = Postgres::start();
    let mut config = test_config();
    config.upstream = Some(
        pgshare::engine::upstream::Upstream::parse(&format!("{}?sslmode=require", server.url()))
            .unwrap(),
    );
    let err = pgshare::server::Server::start(config)
        .await
        .err()
        .expect("refused");
    assert!(
        format!("{err:#}").contains("does not support TLS"),
        "{err:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_upstream_database_sits_beside_embedded_ones() {
    let server = Postgres::start();
    let mut config = test_config();
    config.upstream_databases.push((
        "reports".to_string(),
        pgshare::config::UpstreamDatabase {
            upstream: pgshare::engine::upstream::Upstream::parse(&server.url()).unwrap(),
            pool: pgshare::config::UpstreamPool {
                size: 2,
                lifetime: None,
                idle_timeout: None,
            },
        },
    ));
    let gateway = Gateway::start_with(config).await;
    let reports = gateway
        .try_connect(gateway.config_for("postgres", "reports"))
        .await
        .unwrap();
    let version: String = reports
        .query_one("SELECT version()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        !version.contains("wasm"),
        "the server serves reports: {version}"
    );
    let embedded = gateway.connect().await;
    let version: String = embedded
        .query_one("SELECT version()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        version.contains("wasm"),
        "PGlite serves postgres: {version}"
    );
    // query_one's statement is closed by a message sent right before this.
    let refused = embedded
        .batch_execute("DROP DATABASE reports")
        .await
        .unwrap_err();
    assert_eq!(support::sqlstate(&refused), "0A000");
    gateway.stop().await;
}

/// Behind a pool, each worker of a parallel `pg_dump` gets a server session
/// of its own and imports the leader's snapshot there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_pg_dump_works_through_a_pool() {
    let server = Postgres::start();
    let gateway = gateway_for(&server.url(), 4).await;
    let url = gateway.url();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("dump").to_string_lossy().into_owned();
    let listed = tokio::task::spawn_blocking(move || {
        run(
            "psql",
            &[
                &url,
                "-X",
                "-c",
                "CREATE TABLE one AS SELECT generate_series(1, 1000) AS x; CREATE TABLE two AS SELECT 'y'::text AS y",
            ],
        );
        run("pg_dump", &["-Fd", "-j", "3", "-f", &target, &url]);
        run("pg_restore", &["--list", &target])
    })
    .await
    .unwrap();
    assert!(
        listed.contains("TABLE DATA public one") && listed.contains("TABLE DATA public two"),
        "{listed}"
    );
    gateway.stop().await;
}
