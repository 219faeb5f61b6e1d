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
