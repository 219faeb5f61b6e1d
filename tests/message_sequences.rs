//! Message sequences that drivers send and simple clients rarely do, sent
//! message by message: every one gets the answers PostgreSQL would give, and
//! in time.

mod support;

use support::postgres::Postgres;
use support::wire::{Wire, error_code, frontend::*, tags};
use support::{Gateway, test_config};

/// A gateway in front of a real PostgreSQL with a pool of `pool_size`.
async fn upstream_gateway(server: &Postgres, pool_size: usize) -> Gateway {
    let mut config = test_config();
    config.upstream = Some(pgshare::engine::upstream::Upstream::parse(&server.url()).unwrap());
    config.pool_size = pool_size;
    Gateway::start_with(config).await
}

/// After a batch that ended with a `Flush` (libpq's pipeline mode sends
/// Sync and Flush), the commands the gateway answers itself are answered.
async fn gateway_commands_after_a_flush(gateway: &Gateway, database: &str) {
    let mut wire = Wire::connect(gateway.addr, database).await;
    for (command, tag) in [
        ("DISCARD ALL", "DISCARD ALL"),
        ("DEALLOCATE ALL", "DEALLOCATE ALL"),
    ] {
        // One statement runs pipelined with others' on a shared engine,
        // the other on the engine held for this client alone.
        for first in ["select 1", "select 1; select 2"] {
            let answer = wire.exchange(&[query(first), flush()], 1).await;
            assert_eq!(answer.last().unwrap().tag, b'Z');
            let answer = wire.exchange(&[query(command)], 1).await;
            assert_eq!(tags(&answer), "CZ", "{command} after {first}: {answer:?}");
            assert_eq!(answer[0].command_tag(), tag);
        }
        // The same after an extended-protocol group ending Sync, Flush.
        let mut pipeline = extended("select 1", &[]);
        pipeline.extend(sync());
        pipeline.extend(flush());
        let answer = wire.exchange(&[pipeline], 1).await;
        assert_eq!(tags(&answer), "12TDCZ");
        let answer = wire.exchange(&[query(command)], 1).await;
        assert_eq!(
            tags(&answer),
            "CZ",
            "{command} after Sync, Flush: {answer:?}"
        );
    }
    wire.send(&[terminate()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_the_gateway_answers_are_answered_after_a_flush() {
    let gateway = Gateway::start().await;
    gateway_commands_after_a_flush(&gateway, "postgres").await;
    // CREATE DATABASE is carried out too, and the database is there.
    let mut wire = Wire::connect(gateway.addr, "postgres").await;
    wire.exchange(&[query("select 1"), flush()], 1).await;
    let answer = wire
        .exchange(&[query("CREATE DATABASE after_flush")], 1)
        .await;
    assert_eq!(tags(&answer), "CZ", "{answer:?}");
    assert_eq!(answer[0].command_tag(), "CREATE DATABASE");
    let answer = wire
        .exchange(
            &[query(
                "SELECT count(*) FROM pg_database WHERE datname = 'after_flush'",
            )],
            1,
        )
        .await;
    assert_eq!(answer[1].first_value().as_deref(), Some("1"));
    let mut other = Wire::connect(gateway.addr, "after_flush").await;
    let answer = other
        .exchange(&[query("SELECT current_database()")], 1)
        .await;
    assert_eq!(answer[1].first_value().as_deref(), Some("after_flush"));
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_the_gateway_answers_are_answered_after_a_flush_upstream() {
    let server = Postgres::start();
    for pool_size in [1, 3] {
        let gateway = upstream_gateway(&server, pool_size).await;
        gateway_commands_after_a_flush(&gateway, "postgres").await;
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_in_the_middle_of_a_unit_keeps_it_going() {
    let gateway = Gateway::start().await;
    let mut wire = Wire::connect(gateway.addr, "postgres").await;
    // Parse and Describe, then Flush: the answers come before the Sync.
    wire.send(&[
        parse("s", "select $1::int + 1"),
        describe(b'S', "s"),
        flush(),
    ])
    .await;
    assert_eq!(wire.read().await.tag, b'1');
    assert_eq!(wire.read().await.tag, b't');
    assert_eq!(wire.read().await.tag, b'T');
    let answer = wire
        .exchange(
            &[bind("", "s", &[Some("41")]), execute(""), sync(), flush()],
            1,
        )
        .await;
    assert_eq!(tags(&answer), "2DCZ");
    assert_eq!(answer[1].first_value().as_deref(), Some("42"));
    assert_eq!(error_code(&answer), None);
    gateway.stop().await;
}

/// Client `a` holds a protocol-level and an SQL-level statement; each
/// `DEALLOCATE ALL` or `DISCARD ALL` client `b` sends, in any position,
/// leaves them working.
async fn resets_stay_with_their_client(gateway: &Gateway) {
    let mut a = Wire::connect(gateway.addr, "postgres").await;
    let answer = a
        .exchange(
            &[
                parse("a1", "select 'a1'"),
                sync(),
                query("PREPARE a2 AS SELECT 'a2'"),
            ],
            2,
        )
        .await;
    assert_eq!(error_code(&answer), None, "{answer:?}");
    let mut b = Wire::connect(gateway.addr, "postgres").await;
    let prepare_b = || {
        [
            parse("b1", "select 'a1'"),
            sync(),
            query("PREPARE b2 AS SELECT 'b2'"),
        ]
    };
    let in_pipeline = [
        extended("select 1", &[]),
        extended("DEALLOCATE ALL", &[]),
        extended("select 2", &[]),
        sync(),
    ]
    .concat();
    let prepared = [
        parse("d", "DEALLOCATE ALL"),
        bind("", "d", &[]),
        execute(""),
        sync(),
    ]
    .concat();
    let lone = [extended("DEALLOCATE ALL", &[]), sync()].concat();
    let cases: [(&str, Vec<u8>, usize); 5] = [
        ("alone in the extended protocol", lone, 1),
        ("in a pipeline", in_pipeline, 1),
        (
            "in a query of several statements",
            query("SELECT 1; DEALLOCATE ALL; SELECT 2"),
            1,
        ),
        (
            "inside a transaction",
            query("BEGIN; DEALLOCATE ALL; COMMIT"),
            1,
        ),
        ("prepared and executed", prepared, 1),
    ];
    for (case, messages, ready) in cases {
        let answer = b.exchange(&prepare_b(), 2).await;
        assert_eq!(error_code(&answer), None, "{case}: {answer:?}");
        let answer = b.exchange(&[messages], ready).await;
        assert_eq!(error_code(&answer), None, "{case}: {answer:?}");
        assert!(
            answer
                .iter()
                .any(|m| m.tag == b'C' && m.command_tag() == "DEALLOCATE ALL"),
            "{case}: PostgreSQL's tag: {answer:?}"
        );
        // b's statements are gone, as on a connection of its own.
        let answer = b
            .exchange(&[bind("", "b1", &[]), execute(""), sync()], 1)
            .await;
        assert_eq!(error_code(&answer).as_deref(), Some("26000"), "{case}");
        let answer = b.exchange(&[query("EXECUTE b2")], 1).await;
        assert_eq!(error_code(&answer).as_deref(), Some("26000"), "{case}");
        // a's are not.
        let answer = a
            .exchange(
                &[
                    bind("", "a1", &[]),
                    execute(""),
                    sync(),
                    query("EXECUTE a2"),
                ],
                2,
            )
            .await;
        assert_eq!(error_code(&answer), None, "{case}: {answer:?}");
        let values: Vec<_> = answer
            .iter()
            .filter(|m| m.tag == b'D')
            .map(|m| m.first_value())
            .collect();
        assert_eq!(values, [Some("a1".into()), Some("a2".into())], "{case}");
    }
    // DISCARD ALL alone in the extended protocol resets b only.
    b.exchange(&prepare_b(), 2).await;
    b.exchange(&[query("SET application_name = 'b'")], 1).await;
    let answer = b.exchange(&[extended("DISCARD ALL", &[]), sync()], 1).await;
    assert_eq!(tags(&answer), "12nCZ", "{answer:?}");
    assert_eq!(answer[3].command_tag(), "DISCARD ALL");
    let answer = b.exchange(&[query("SHOW application_name")], 1).await;
    assert_eq!(answer[1].first_value().as_deref(), Some(""));
    let answer = b.exchange(&[query("EXECUTE b2")], 1).await;
    assert_eq!(error_code(&answer).as_deref(), Some("26000"));
    // Anywhere else it is refused, as PostgreSQL refuses it inside a
    // transaction or a pipeline, and nothing is reset.
    for (messages, ready) in [
        (
            [
                extended("select 1", &[]),
                extended("DISCARD ALL", &[]),
                sync(),
            ]
            .concat(),
            1,
        ),
        (query("BEGIN; DISCARD ALL"), 1),
        (
            [query("BEGIN"), extended("DISCARD ALL", &[]), sync()].concat(),
            2,
        ),
    ] {
        let answer = b.exchange(&[messages], ready).await;
        assert_eq!(error_code(&answer).as_deref(), Some("25001"), "{answer:?}");
        b.exchange(&[query("ROLLBACK")], 1).await;
    }
    let answer = a
        .exchange(
            &[
                bind("", "a1", &[]),
                execute(""),
                sync(),
                query("EXECUTE a2"),
            ],
            2,
        )
        .await;
    assert_eq!(error_code(&answer), None, "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_and_discard_all_act_on_their_client_only() {
    let gateway = Gateway::start().await;
    resets_stay_with_their_client(&gateway).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_and_discard_all_act_on_their_client_only_upstream() {
    let server = Postgres::start();
    for pool_size in [1, 3] {
        let gateway = upstream_gateway(&server, pool_size).await;
        resets_stay_with_their_client(&gateway).await;
        gateway.stop().await;
    }
}

/// asyncpg prepares with Parse, Describe and Flush, and sends no Sync until
/// it runs the statement: meanwhile other clients are served.
async fn prepare_with_flush_holds_nothing(gateway: &Gateway) {
    let mut a = Wire::connect(gateway.addr, "postgres").await;
    let mut b = Wire::connect(gateway.addr, "postgres").await;
    a.send(&[
        parse("s1", "select $1::int * 2"),
        describe(b'S', "s1"),
        flush(),
    ])
    .await;
    let mut prepared = Vec::new();
    for _ in 0..3 {
        prepared.push(a.read().await);
    }
    assert_eq!(tags(&prepared), "1tT");
    assert!(
        a.try_read(std::time::Duration::from_millis(200))
            .await
            .is_none(),
        "no ReadyForQuery before the client's Sync"
    );
    let answer = b.exchange(&[query("SELECT 2")], 1).await;
    assert_eq!(answer[1].first_value().as_deref(), Some("2"));
    let answer = a
        .exchange(&[bind("", "s1", &[Some("21")]), execute(""), sync()], 1)
        .await;
    assert_eq!(tags(&answer), "2DCZ");
    assert_eq!(answer[1].first_value().as_deref(), Some("42"));
    // An error skips the rest up to the client's own Sync, as PostgreSQL.
    a.send(&[parse("bad", "selec 1"), describe(b'S', "bad"), flush()])
        .await;
    let failed = a.read().await;
    assert_eq!(failed.tag, b'E');
    assert_eq!(failed.field(b'C').as_deref(), Some("42601"));
    let answer = a
        .exchange(&[bind("", "bad", &[]), execute(""), sync()], 1)
        .await;
    assert_eq!(tags(&answer), "Z", "skipped up to the Sync: {answer:?}");
    let answer = a.exchange(&[query("SELECT 3")], 1).await;
    assert_eq!(answer[1].first_value().as_deref(), Some("3"));
    let answer = b.exchange(&[query("SELECT 4")], 1).await;
    assert_eq!(answer[1].first_value().as_deref(), Some("4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepare_ending_with_flush_leaves_the_engine_to_others() {
    let gateway = Gateway::start().await;
    prepare_with_flush_holds_nothing(&gateway).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepare_ending_with_flush_leaves_the_engine_to_others_upstream() {
    let server = Postgres::start();
    for pool_size in [1, 3] {
        let gateway = upstream_gateway(&server, pool_size).await;
        prepare_with_flush_holds_nothing(&gateway).await;
        gateway.stop().await;
    }
}

/// A LISTEN prepared in one unit of work and run in the next (asyncpg's
/// `add_listener`) is a LISTEN of its client: notifications reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_prepared_before_it_runs_delivers_notifications() {
    let gateway = Gateway::start().await;
    let mut listener = Wire::connect(gateway.addr, "postgres").await;
    let mut sender = Wire::connect(gateway.addr, "postgres").await;
    listener
        .send(&[parse("", "LISTEN events"), describe(b'S', ""), flush()])
        .await;
    for _ in 0..3 {
        listener.read().await;
    }
    let answer = listener
        .exchange(&[bind("", "", &[]), execute(""), sync()], 1)
        .await;
    assert_eq!(tags(&answer), "2CZ", "{answer:?}");
    sender.exchange(&[query("NOTIFY events, 'hello'")], 1).await;
    let notification = listener.read().await;
    assert_eq!(notification.tag, b'A', "{notification:?}");
    assert!(notification.body.ends_with(b"events\0hello\0"));
    gateway.stop().await;
}

/// A client that waited too long learns who holds the engine, and the
/// holder, disconnected for idling in its transaction, learns for how long
/// it held it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_name_the_client_that_holds_the_engine() {
    let mut config = test_config();
    config.query_wait_timeout = Some(std::time::Duration::from_millis(500));
    config.idle_in_transaction_timeout = Some(std::time::Duration::from_secs(2));
    let gateway = Gateway::start_with(config).await;
    let mut holder = Wire::connect(gateway.addr, "postgres").await;
    let mut waiter = Wire::connect(gateway.addr, "postgres").await;
    holder
        .exchange(&[query("SET application_name = 'holding'")], 1)
        .await;
    holder.exchange(&[query("BEGIN")], 1).await;
    let answer = waiter.exchange(&[query("SELECT 1")], 1).await;
    let error = answer.iter().find(|m| m.tag == b'E').expect("an error");
    assert_eq!(error.field(b'C').as_deref(), Some("57014"));
    let detail = error.field(b'D').expect("a detail");
    assert!(
        detail.contains(&format!("client {}", holder.process_id))
            && detail.contains("application \"holding\"")
            && detail.contains("in transaction"),
        "{detail}"
    );
    let fatal = holder.read().await;
    assert_eq!(fatal.field(b'C').as_deref(), Some("25P03"), "{fatal:?}");
    assert_eq!(fatal.field(b'S').as_deref(), Some("FATAL"));
    let detail = fatal.field(b'D').expect("a detail");
    assert!(
        detail.contains(&format!(
            "Client {} held the shared engine",
            holder.process_id
        )) && detail.contains("idle in a transaction for the last 2 s"),
        "{detail}"
    );
    gateway.stop().await;
}

/// Runs the statements `lost_statements_are_prepared_again` prepared, one
/// group at a time (each is then the last one sent when it fails), and
/// returns their values.
async fn run_lost_statements(a: &mut Wire) -> Vec<Option<String>> {
    let groups = [
        vec![bind("", "read", &[Some("41")]), execute(""), sync()],
        vec![bind("", "set", &[Some("again")]), execute(""), sync()],
        vec![query("EXECUTE sql_level")],
    ];
    let mut values = Vec::new();
    for group in groups {
        let answer = a.exchange(&group, 1).await;
        assert_eq!(error_code(&answer), None, "{answer:?}");
        values.extend(
            answer
                .iter()
                .filter(|m| m.tag == b'D')
                .map(|m| m.first_value()),
        );
    }
    values
}

/// Statements the gateway prepared and that something dropped behind its
/// back (here a function running `DEALLOCATE ALL`, which the gateway cannot
/// see) are prepared again and the client's messages run again: the client
/// never learns of it.
async fn lost_statements_are_prepared_again(gateway: &Gateway) {
    let mut a = Wire::connect(gateway.addr, "postgres").await;
    let mut b = Wire::connect(gateway.addr, "postgres").await;
    let answer = a
        .exchange(
            &[
                parse("read", "select $1::int + 1"),
                sync(),
                parse("set", "select set_config('application_name', $1, false)"),
                sync(),
                query("PREPARE sql_level AS SELECT 'sql level'"),
            ],
            3,
        )
        .await;
    assert_eq!(error_code(&answer), None, "{answer:?}");
    let expected = [
        Some("42".to_string()),
        Some("again".to_string()),
        Some("sql level".to_string()),
    ];
    assert_eq!(run_lost_statements(&mut a).await, expected);
    let answer = b
        .exchange(&[query("DO $$BEGIN EXECUTE 'DEALLOCATE ALL'; END$$")], 1)
        .await;
    assert_eq!(error_code(&answer), None, "{answer:?}");
    assert_eq!(
        run_lost_statements(&mut a).await,
        expected,
        "run again after the loss"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_statements_are_prepared_again_and_run() {
    let gateway = Gateway::start().await;
    lost_statements_are_prepared_again(&gateway).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_statements_are_prepared_again_and_run_upstream() {
    let server = Postgres::start();
    let gateway = upstream_gateway(&server, 1).await;
    lost_statements_are_prepared_again(&gateway).await;
    gateway.stop().await;
}

fn copy_data(row: &str) -> Vec<u8> {
    let mut out = vec![b'd'];
    out.extend_from_slice(&((row.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(row.as_bytes());
    out
}

fn copy_done() -> Vec<u8> {
    b"c\0\0\0\x04".to_vec()
}

/// asyncpg sends COPY data right behind its `COPY ... FROM STDIN`, without
/// waiting for the CopyInResponse; data left from a COPY that failed is
/// ignored, as PostgreSQL ignores it.
async fn copy_data_behind_its_query(gateway: &Gateway) {
    let mut wire = Wire::connect(gateway.addr, "postgres").await;
    wire.exchange(&[query("CREATE TABLE copied (x int, y text)")], 1)
        .await;
    let rows: Vec<Vec<u8>> = (0..500)
        .map(|i| copy_data(&format!("{i}\tname {i}\n")))
        .collect();
    let mut messages = vec![query("COPY copied FROM STDIN")];
    messages.extend(rows.iter().cloned());
    messages.push(copy_done());
    let answer = wire.exchange(&messages, 1).await;
    assert_eq!(tags(&answer), "GCZ", "{answer:?}");
    assert_eq!(answer[1].command_tag(), "COPY 500");
    // A COPY that fails before it starts, in a transaction, its data behind.
    let mut messages = vec![query("BEGIN"), query("COPY missing FROM STDIN")];
    messages.extend(rows.iter().take(3).cloned());
    messages.push(copy_done());
    let answer = wire.exchange(&messages, 2).await;
    assert_eq!(error_code(&answer).as_deref(), Some("42P01"), "{answer:?}");
    let answer = wire.exchange(&[query("ROLLBACK")], 1).await;
    assert_eq!(tags(&answer), "CZ", "{answer:?}");
    let answer = wire
        .exchange(&[query("SELECT count(*) FROM copied")], 1)
        .await;
    assert_eq!(answer[1].first_value().as_deref(), Some("500"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_data_sent_behind_its_query_is_copied() {
    let gateway = Gateway::start().await;
    copy_data_behind_its_query(&gateway).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_data_sent_behind_its_query_is_copied_upstream() {
    let server = Postgres::start();
    let gateway = upstream_gateway(&server, 3).await;
    copy_data_behind_its_query(&gateway).await;
    gateway.stop().await;
}

/// libpq and tokio-postgres send `Sync` right behind the `Execute` of a
/// `COPY FROM STDIN`, before the data; PostgreSQL ignores a `Sync` during
/// COPY, so the one after `CopyDone` is the only one answered.
async fn copy_with_a_sync_behind_execute(gateway: &Gateway) {
    let mut wire = Wire::connect(gateway.addr, "postgres").await;
    let answer = wire
        .exchange(&[query("CREATE TABLE copied_behind_sync (n int)")], 1)
        .await;
    assert_eq!(tags(&answer), "CZ", "{answer:?}");
    wire.send(&[
        parse("", "COPY copied_behind_sync FROM STDIN"),
        bind("", "", &[]),
        execute(""),
        sync(),
    ])
    .await;
    let mut started = String::new();
    while !started.ends_with('G') {
        started.push(wire.read().await.tag as char);
    }
    assert_eq!(started, "12G");
    wire.send(&[copy_data("1\n2\n"), copy_done(), sync()]).await;
    let answer = wire.until_ready(1).await;
    assert_eq!(tags(&answer), "CZ", "{answer:?}");
    assert_eq!(answer[0].command_tag(), "COPY 2");
    let extra = wire.try_read(std::time::Duration::from_millis(300)).await;
    assert!(extra.is_none(), "an answer beyond the Sync: {extra:?}");
    let answer = wire
        .exchange(&[query("SELECT count(*) FROM copied_behind_sync")], 1)
        .await;
    assert_eq!(tags(&answer), "TDCZ", "{answer:?}");
    assert_eq!(answer[1].first_value().as_deref(), Some("2"));
    wire.send(&[terminate()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_behind_a_copy_is_answered_once_on_the_embedded_engine() {
    let gateway = Gateway::start().await;
    copy_with_a_sync_behind_execute(&gateway).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_behind_a_copy_is_answered_once_upstream() {
    let server = Postgres::start();
    let gateway = upstream_gateway(&server, 2).await;
    copy_with_a_sync_behind_execute(&gateway).await;
    gateway.stop().await;
}
