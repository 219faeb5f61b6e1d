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
