//! Many tokio-postgres clients sharing one embedded engine, each behaving as if
//! it had its own connection.

mod support;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use support::{Gateway, sqlstate, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_clients_run_transactions_without_losing_writes() {
    let gateway = Gateway::start().await;
    let setup = gateway.connect().await;
    setup
        .batch_execute("CREATE TABLE counters(id int PRIMARY KEY, n int NOT NULL); INSERT INTO counters VALUES (1, 0)")
        .await
        .unwrap();
    let clients = 20;
    let rounds = 15;
    let tasks = (0..clients).map(|i| {
        let url = gateway.config_for("postgres", "postgres");
        let gw = &gateway;
        async move {
            let mut client = gw.try_connect(url).await.unwrap();
            for round in 0..rounds {
                let tx = client.transaction().await.unwrap();
                let n: i32 = tx
                    .query_one("SELECT n FROM counters WHERE id = 1", &[])
                    .await
                    .unwrap()
                    .get(0);
                tx.execute("UPDATE counters SET n = $1 WHERE id = 1", &[&(n + 1)])
                    .await
                    .unwrap();
                if round % 5 == i % 5 {
                    tx.rollback().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                }
            }
        }
    });
    join_all(tasks).await;
    let n: i32 = setup
        .query_one("SELECT n FROM counters WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    // A read-modify-write inside a transaction is only safe when no other
    // client's statements interleave with it: every committed increment counts.
    assert_eq!(n, clients * rounds - clients * rounds / 5);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_with_the_same_name_stay_apart() {
    let gateway = Gateway::start().await;
    let a = gateway.connect().await;
    let b = gateway.connect().await;
    // tokio-postgres names each connection's first statement "s0": the two
    // prepares below collide by name on the shared engine session.
    let on_a = a.prepare("SELECT 'from a'::text, $1::int4").await.unwrap();
    let on_b = b
        .prepare("SELECT 'from b'::text, $1::int4 * 2")
        .await
        .unwrap();
    for i in 0..20i32 {
        let row_a = a.query_one(&on_a, &[&i]).await.unwrap();
        let row_b = b.query_one(&on_b, &[&i]).await.unwrap();
        assert_eq!(row_a.get::<_, String>(0), "from a");
        assert_eq!(row_a.get::<_, i32>(1), i);
        assert_eq!(row_b.get::<_, String>(0), "from b");
        assert_eq!(row_b.get::<_, i32>(1), i * 2);
    }
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_extended_queries_come_back_in_order() {
    let gateway = Gateway::start().await;
    let clients: Vec<_> = join_all((0..4).map(|_| gateway.connect())).await;
    let work = clients.iter().enumerate().map(|(c, client)| async move {
        let statement = client.prepare("SELECT $1::int4 + $2::int4").await.unwrap();
        // Polled together, these queries are written before any answer is
        // read: one pipeline of Bind/Execute/Sync groups per client.
        let queries = (0..50i32).map(|i| {
            let statement = statement.clone();
            let c = c as i32;
            async move { client.query_one(&statement, &[&i, &(c * 1000)]).await }
        });
        for (i, row) in join_all(queries).await.into_iter().enumerate() {
            assert_eq!(row.unwrap().get::<_, i32>(0), i as i32 + c as i32 * 1000);
        }
    });
    join_all(work).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_transaction_is_rolled_back() {
    let gateway = Gateway::start().await;
    let observer = gateway.connect().await;
    observer
        .batch_execute("CREATE TABLE t(x int)")
        .await
        .unwrap();
    {
        let leaver = gateway.connect().await;
        leaver.prepare("SELECT 1").await.unwrap();
        leaver
            .batch_execute("PREPARE mine AS SELECT 2")
            .await
            .unwrap();
        leaver
            .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        // Dropping the client closes its socket while the transaction is open.
    }
    let rows = tokio::time::timeout(
        Duration::from_secs(10),
        observer.query("SELECT x FROM t", &[]),
    )
    .await
    .expect("the engine is released after the client left")
    .unwrap();
    assert!(
        rows.is_empty(),
        "the uncommitted insert must be rolled back"
    );
    // The engine session is not left inside the leaver's transaction: a new
    // transaction starts and commits normally.
    observer
        .batch_execute("BEGIN; INSERT INTO t VALUES (2); COMMIT")
        .await
        .unwrap();
    // Its own prepared statements were closed on the engine too; one it
    // prepared through the protocol stays, shared with anyone who prepares
    // the same query, once.
    observer.prepare("SELECT 1").await.unwrap();
    let statements = observer
        .query(
            "SELECT statement, count(*) FROM pg_prepared_statements \
             WHERE statement = 'SELECT 1' OR name LIKE '%mine' GROUP BY statement",
            &[],
        )
        .await
        .unwrap();
    let left: Vec<(String, i64)> = statements.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(left, [("SELECT 1".to_string(), 1)]);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_holds_the_engine_until_it_ends() {
    let gateway = Gateway::start().await;
    let a = gateway.connect().await;
    let b = gateway.connect().await;
    a.batch_execute("CREATE TABLE t(x int)").await.unwrap();
    a.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let reader = tokio::spawn(async move {
        let rows = b.query("SELECT x FROM t", &[]).await.unwrap();
        rows.len()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !reader.is_finished(),
        "B must wait while A is in a transaction"
    );
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(reader.await.unwrap(), 1, "B sees A's committed row");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_transaction_is_ended_after_the_timeout() {
    let mut config = test_config();
    config.idle_in_transaction_timeout = Some(Duration::from_millis(500));
    let gateway = Gateway::start_with(config).await;
    let idler = gateway.connect().await;
    let other = gateway.connect().await;
    other.batch_execute("CREATE TABLE t(x int)").await.unwrap();
    idler
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let started = Instant::now();
    let count: i64 = other
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "the idle client's insert was rolled back");
    assert!(started.elapsed() >= Duration::from_millis(400));
    let err = idler.batch_execute("SELECT 1").await.unwrap_err();
    assert!(
        err.is_closed() || sqlstate(&err) == "25P03",
        "unexpected error for the idle client: {err}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_client_gives_up_after_the_wait_timeout() {
    let mut config = test_config();
    config.query_wait_timeout = Some(Duration::from_millis(500));
    let gateway = Gateway::start_with(config).await;
    let holder = gateway.connect().await;
    let waiter = gateway.connect().await;
    holder.batch_execute("BEGIN").await.unwrap();
    let err = waiter.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    holder.batch_execute("COMMIT").await.unwrap();
    // The waiter's connection is still good.
    let one: i32 = waiter.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_queued_query_removes_it() {
    let gateway = Gateway::start().await;
    let holder = gateway.connect().await;
    let waiter = gateway.connect().await;
    holder.batch_execute("CREATE TABLE t(x int)").await.unwrap();
    holder.batch_execute("BEGIN").await.unwrap();
    let token = waiter.cancel_token();
    let queued = tokio::spawn(async move {
        let result = waiter.execute("INSERT INTO t VALUES (42)", &[]).await;
        (waiter, result)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (waiter, result) = tokio::time::timeout(Duration::from_secs(5), queued)
        .await
        .expect("the cancelled query returns at once")
        .unwrap();
    assert_eq!(sqlstate(&result.unwrap_err()), "57014");
    holder.batch_execute("COMMIT").await.unwrap();
    let count: i64 = waiter
        .query_one("SELECT count(*) FROM t WHERE x = 42", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "the cancelled insert never ran");
    gateway.stop().await;
}

/// A statement queued behind another client's long autocommit statement
/// (which the gateway pipelines, rather than lending the engine) is still
/// removed by a cancel: it was not handed to the engine yet.
async fn cancel_behind_a_running_statement(gateway: &Gateway) {
    let waiter = gateway.connect().await;
    waiter
        .batch_execute("CREATE TABLE behind(x int)")
        .await
        .unwrap();
    for statement in ["SELECT 1", "INSERT INTO behind VALUES (42)"] {
        let sleeping = {
            let sleeper = gateway.connect().await;
            tokio::spawn(async move { sleeper.batch_execute("SELECT pg_sleep(2)").await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let token = waiter.cancel_token();
        let started = std::time::Instant::now();
        let run = waiter.simple_query(statement);
        tokio::pin!(run);
        let result = tokio::select! {
            result = &mut run => result,
            () = async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                token.cancel_query(tokio_postgres::NoTls).await.unwrap();
                std::future::pending::<()>().await
            } => unreachable!(),
        };
        let err = result.expect_err("cancelled");
        assert_eq!(sqlstate(&err), "57014", "{statement}: {err}");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{statement}: answered at once, not after the sleep"
        );
        sleeping.await.unwrap().unwrap();
    }
    let count: i64 = waiter
        .query_one("SELECT count(*) FROM behind", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "the cancelled insert never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_statement_queued_behind_a_running_one_removes_it() {
    let gateway = Gateway::start().await;
    cancel_behind_a_running_statement(&gateway).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_statement_queued_behind_a_running_one_removes_it_upstream() {
    let server = support::postgres::Postgres::start();
    let mut config = support::test_config();
    config.upstream = Some(pgshare::engine::upstream::Upstream::parse(&server.url()).unwrap());
    let gateway = Gateway::start_with(config).await;
    cancel_behind_a_running_statement(&gateway).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_through_the_gateway() {
    use futures_util::{SinkExt, StreamExt};
    let gateway = Gateway::start().await;
    let client = gateway.connect().await;
    let other = gateway.connect().await;
    client
        .batch_execute("CREATE TABLE c(id int, name text)")
        .await
        .unwrap();
    let sink = client
        .copy_in::<_, bytes::Bytes>("COPY c FROM STDIN (FORMAT csv)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    for i in 0..1000 {
        sink.send(bytes::Bytes::from(format!("{i},\"name {i}\"\n")))
            .await
            .unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 1000);
    // Another client works after the COPY, on the same engine session.
    let count: i64 = other
        .query_one("SELECT count(*) FROM c", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1000);
    let stream = client
        .copy_out("COPY (SELECT id, name FROM c ORDER BY id LIMIT 3) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<_> = stream.map(|chunk| chunk.unwrap()).collect().await;
    let text: String = chunks
        .iter()
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect();
    assert_eq!(text, "0\tname 0\n1\tname 1\n2\tname 2\n");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_read_never_runs_inside_another_clients_transaction() {
    let gateway = Gateway::start().await;
    let a = gateway.connect().await;
    let b = gateway.connect().await;
    a.batch_execute("CREATE TABLE t(x int)").await.unwrap();
    a.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    // A single autocommit SELECT in the simple protocol is queued behind A's
    // transaction; had it run inside it, it would count A's uncommitted row.
    let reader = tokio::spawn(async move {
        let messages = b.simple_query("SELECT count(*) FROM t").await.unwrap();
        match &messages[1] {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).unwrap().to_string(),
            other => panic!("expected a row, got {other:?}"),
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !reader.is_finished(),
        "the read must wait for A's transaction"
    );
    a.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(reader.await.unwrap(), "0");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_results_holds_no_one_up() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gateway = Gateway::start().await;
    let mut slow = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let mut startup = 196608i32.to_be_bytes().to_vec();
    startup.extend_from_slice(b"user\0postgres\0database\0postgres\0\0");
    let mut packet = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&startup);
    slow.write_all(&packet).await.unwrap();
    let mut seen = Vec::new();
    while !seen.ends_with(b"Z\0\0\0\x05I") {
        let mut buf = [0u8; 1024];
        let n = slow.read(&mut buf).await.unwrap();
        assert!(n > 0, "login answered");
        seen.extend_from_slice(&buf[..n]);
    }
    // 20 MB of result that the client never reads.
    let sql = b"SELECT repeat('x', 20000000)\0";
    let mut query = vec![b'Q'];
    query.extend_from_slice(&((sql.len() + 4) as i32).to_be_bytes());
    query.extend_from_slice(sql);
    slow.write_all(&query).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other = gateway.connect().await;
    let one: i32 = tokio::time::timeout(Duration::from_secs(10), other.query_one("SELECT 1", &[]))
        .await
        .expect("another client is served while the slow one does not read")
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
    drop(slow);
    gateway.stop().await;
}
