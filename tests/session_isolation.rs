//! Two and more clients interleaving session features on one shared engine
//! session, each seeing what it would see on its own PostgreSQL connection.

mod support;

use futures_util::future::join_all;
use support::{Gateway, sqlstate};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::{AsyncMessage, Client, Notification, SimpleQueryMessage};

/// The first column of the first row of a simple query.
async fn value(client: &Client, sql: &str) -> String {
    let messages = client.simple_query(sql).await.unwrap();
    messages
        .iter()
        .find_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no row from {sql}"))
}

async fn two_schemas(client: &Client) {
    client
        .batch_execute(
            "CREATE SCHEMA one; CREATE TABLE one.t(x text); INSERT INTO one.t VALUES ('one');
             CREATE SCHEMA two; CREATE TABLE two.t(x text); INSERT INTO two.t VALUES ('two');",
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_belongs_to_the_client_that_ran_it() {
    let gateway = Gateway::start().await;
    let a = gateway.connect().await;
    let b = gateway.connect().await;
    two_schemas(&a).await;
    let default_path = value(&b, "SHOW search_path").await;
    let default_zone = value(&b, "SHOW TimeZone").await;
    a.batch_execute("SET search_path = one").await.unwrap();
    b.batch_execute("SET SESSION TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(value(&a, "SHOW search_path").await, "one");
        assert_eq!(value(&b, "SHOW search_path").await, default_path);
        assert_eq!(
            value(&a, "SELECT current_setting('TimeZone')").await,
            default_zone
        );
        assert_eq!(
            value(&b, "SELECT current_setting('TimeZone')").await,
            "Asia/Tokyo"
        );
        assert_eq!(value(&a, "SELECT x FROM t").await, "one");
        // Extended protocol too: tokio-postgres prepares and binds.
        let zone: String = b
            .query_one("SELECT current_setting('TimeZone')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(zone, "Asia/Tokyo");
    }
    b.batch_execute("SELECT set_config('search_path', 'two', false)")
        .await
        .unwrap();
    assert_eq!(value(&b, "SELECT x FROM t").await, "two");
    assert_eq!(value(&a, "SELECT x FROM t").await, "one");
    a.batch_execute("RESET search_path").await.unwrap();
    assert_eq!(value(&a, "SHOW search_path").await, default_path);
    assert_eq!(value(&b, "SHOW search_path").await, "two");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_local_and_rolled_back_set_do_not_stick() {
    let gateway = Gateway::start().await;
    let a = gateway.connect().await;
    let b = gateway.connect().await;
    let default_zone = value(&b, "SHOW TimeZone").await;
    a.batch_execute("BEGIN; SET LOCAL TimeZone = 'Asia/Tokyo'; COMMIT")
        .await
        .unwrap();
    a.batch_execute("BEGIN; SET TimeZone = 'Europe/Paris'; ROLLBACK")
        .await
        .unwrap();
    assert_eq!(value(&a, "SHOW TimeZone").await, default_zone);
    assert_eq!(value(&b, "SHOW TimeZone").await, default_zone);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_and_options_belong_to_the_client() {
    let gateway = Gateway::start().await;
    let setup = gateway.connect().await;
    two_schemas(&setup).await;
    let mut config = gateway.config_for("postgres", "postgres");
    config
        .application_name("reporting")
        .options("-c search_path=two -c statement_timeout=5s");
    let with_options = gateway.try_connect(config).await.unwrap();
    let plain = gateway.connect().await;
    assert_eq!(
        value(&with_options, "SHOW application_name").await,
        "reporting"
    );
    assert_eq!(value(&with_options, "SELECT x FROM t").await, "two");
    assert_eq!(value(&with_options, "SHOW statement_timeout").await, "5s");
    assert_eq!(value(&plain, "SHOW application_name").await, "");
    assert_eq!(value(&plain, "SHOW statement_timeout").await, "0");
    let err = plain.simple_query("SELECT x FROM t").await.unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "42P01",
        "the plain client has no schema two on its path"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_startup_setting_is_refused_at_login() {
    let gateway = Gateway::start().await;
    let default_zone = value(&gateway.connect().await, "SHOW TimeZone").await;
    let mut config = gateway.config_for("postgres", "postgres");
    config.options("-c TimeZone=Mars/Olympus_Mons");
    let err = gateway.try_connect(config).await.unwrap_err();
    assert_eq!(sqlstate(&err), "22023");
    let mut config = gateway.config_for("postgres", "postgres");
    config.options("-c no_such_setting=1");
    let err = gateway.try_connect(config).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42704");
    // The engine is left clean for the next client.
    let next = gateway.connect().await;
    assert_eq!(value(&next, "SHOW TimeZone").await, default_zone);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_with_different_paths_read_their_own_tables_concurrently() {
    let gateway = Gateway::start().await;
    let setup = gateway.connect().await;
    two_schemas(&setup).await;
    let clients: Vec<Client> = join_all((0..8).map(|_| gateway.connect())).await;
    for (i, client) in clients.iter().enumerate() {
        let schema = if i % 2 == 0 { "one" } else { "two" };
        client
            .batch_execute(&format!("SET search_path = {schema}"))
            .await
            .unwrap();
    }
    // Single autocommit SELECTs are pipelined behind each other's; the
    // engine must still switch search_path between clients.
    let reads = clients.iter().enumerate().map(|(i, client)| async move {
        let expected = if i % 2 == 0 { "one" } else { "two" };
        for _ in 0..25 {
            assert_eq!(value(client, "SELECT x FROM t").await, expected);
            let row = client.query_one("SELECT x FROM t", &[]).await.unwrap();
            assert_eq!(row.get::<_, String>(0), expected);
        }
    });
    join_all(reads).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_with_pgoptions_keeps_its_path_beside_another_client() {
    let gateway = Gateway::start().await;
    let other = gateway.connect().await;
    two_schemas(&other).await;
    other.batch_execute("SET search_path = two").await.unwrap();
    let url = gateway.url();
    let psql = tokio::task::spawn_blocking(move || {
        std::process::Command::new("psql")
            .args([
                &url,
                "-X",
                "-A",
                "-t",
                "-c",
                "SELECT x FROM t",
                "-c",
                "SHOW search_path",
            ])
            .env("PGOPTIONS", "-c search_path=one")
            .output()
            .expect("psql must be installed")
    });
    assert_eq!(value(&other, "SELECT x FROM t").await, "two");
    let output = psql.await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "one\none\n");
    assert_eq!(value(&other, "SELECT x FROM t").await, "two");
    gateway.stop().await;
}

/// A client whose notifications arrive on the returned channel.
async fn listening_client(gateway: &Gateway) -> (Client, UnboundedReceiver<Notification>) {
    let (client, mut messages) = gateway.connect_with_messages().await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = messages.recv().await {
            if let AsyncMessage::Notification(note) = message {
                let _ = tx.send(note);
            }
        }
    });
    (client, rx)
}

async fn next_notification(rx: &mut UnboundedReceiver<Notification>) -> Option<Notification> {
    tokio::time::timeout(std::time::Duration::from_millis(500), rx.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_reaches_exactly_the_idle_listeners() {
    let gateway = Gateway::start().await;
    let (a, mut a_notes) = listening_client(&gateway).await;
    let (c, mut c_notes) = listening_client(&gateway).await;
    let b = gateway.connect().await;
    a.batch_execute("LISTEN jobs").await.unwrap();
    c.batch_execute("LISTEN other").await.unwrap();
    // A sits idle; B's NOTIFY must reach it without A sending anything.
    b.batch_execute("NOTIFY jobs, 'first'").await.unwrap();
    let note = next_notification(&mut a_notes)
        .await
        .expect("A gets B's notification");
    assert_eq!((note.channel(), note.payload()), ("jobs", "first"));
    assert!(
        next_notification(&mut c_notes).await.is_none(),
        "C listens elsewhere"
    );
    // A notification raised in a rolled-back transaction is never delivered.
    b.batch_execute("BEGIN; NOTIFY jobs, 'rolled back'; ROLLBACK")
        .await
        .unwrap();
    b.batch_execute("SELECT pg_notify('jobs', 'second')")
        .await
        .unwrap();
    let note = next_notification(&mut a_notes)
        .await
        .expect("the second notification");
    assert_eq!(note.payload(), "second");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisten_and_disconnect_remove_only_the_clients_own_channels() {
    let gateway = Gateway::start().await;
    let (a, mut a_notes) = listening_client(&gateway).await;
    let (b, mut b_notes) = listening_client(&gateway).await;
    let sender = gateway.connect().await;
    a.batch_execute("LISTEN shared").await.unwrap();
    b.batch_execute("LISTEN shared; LISTEN b_only")
        .await
        .unwrap();
    b.batch_execute("UNLISTEN *").await.unwrap();
    sender
        .batch_execute("NOTIFY shared, 'x'; NOTIFY b_only, 'y'")
        .await
        .unwrap();
    assert_eq!(
        next_notification(&mut a_notes)
            .await
            .expect("A still listens")
            .payload(),
        "x"
    );
    assert!(next_notification(&mut a_notes).await.is_none());
    assert!(
        next_notification(&mut b_notes).await.is_none(),
        "B unlistened everything"
    );
    // When B listens again and A leaves, the engine listens to B's channel only.
    b.batch_execute("LISTEN b_only").await.unwrap();
    drop(a);
    let mut channels = Vec::new();
    for _ in 0..50 {
        channels = sender
            .query("SELECT pg_listening_channels()::text ORDER BY 1", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect();
        if channels == ["b_only"] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(channels, ["b_only"]);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_execute_deallocate_act_on_the_clients_own_statements() {
    let gateway = Gateway::start().await;
    let a = gateway.connect().await;
    let b = gateway.connect().await;
    a.batch_execute("PREPARE q(int) AS SELECT 'a' || $1")
        .await
        .unwrap();
    b.batch_execute("PREPARE Q(int) AS SELECT 'b' || $1")
        .await
        .unwrap();
    assert_eq!(value(&a, "EXECUTE q(1)").await, "a1");
    assert_eq!(value(&b, "EXECUTE \"q\"(2)").await, "b2");
    a.batch_execute("DEALLOCATE q").await.unwrap();
    let err = a.simple_query("EXECUTE q(3)").await.unwrap_err();
    assert_eq!(sqlstate(&err), "26000");
    assert_eq!(value(&b, "EXECUTE q(4)").await, "b4");
    // A name the client still has is refused, as PostgreSQL refuses it.
    let err = b
        .simple_query("PREPARE q(int) AS SELECT 'other'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P05");
    assert_eq!(value(&b, "EXECUTE q(6)").await, "b6");
    a.batch_execute("PREPARE again AS SELECT 1").await.unwrap();
    a.batch_execute("DEALLOCATE ALL").await.unwrap();
    assert_eq!(
        sqlstate(&a.simple_query("EXECUTE again").await.unwrap_err()),
        "26000"
    );
    assert_eq!(value(&b, "EXECUTE q(5)").await, "b5");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_resets_only_the_clients_own_session() {
    let gateway = Gateway::start().await;
    let (a, _a_notes) = listening_client(&gateway).await;
    let (b, mut b_notes) = listening_client(&gateway).await;
    let default_zone = value(&a, "SHOW TimeZone").await;
    for client in [&a, &b] {
        client
            .batch_execute("SET TimeZone = 'Asia/Tokyo'; PREPARE p AS SELECT 1; LISTEN chan")
            .await
            .unwrap();
    }
    let messages = a.simple_query("DISCARD ALL").await.unwrap();
    assert!(
        matches!(
            messages.last(),
            Some(tokio_postgres::SimpleQueryMessage::CommandComplete(0))
        ),
        "{messages:?}"
    );
    assert_eq!(value(&a, "SHOW TimeZone").await, default_zone);
    assert_eq!(
        sqlstate(&a.simple_query("EXECUTE p").await.unwrap_err()),
        "26000"
    );
    assert_eq!(value(&b, "SHOW TimeZone").await, "Asia/Tokyo");
    assert_eq!(value(&b, "EXECUTE p").await, "1");
    a.batch_execute("NOTIFY chan, 'still there'").await.unwrap();
    assert_eq!(
        next_notification(&mut b_notes)
            .await
            .expect("B still listens")
            .payload(),
        "still there"
    );
    gateway.stop().await;
}

/// A client whose notices arrive on the returned channel.
async fn noticed_client(gateway: &Gateway) -> (Client, UnboundedReceiver<String>) {
    let (client, mut messages) = gateway.connect_with_messages().await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = messages.recv().await {
            if let AsyncMessage::Notice(notice) = message {
                let _ = tx.send(notice.message().to_string());
            }
        }
    });
    (client, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temp_table_is_never_seen_by_others_and_goes_with_its_client() {
    let gateway = Gateway::start().await;
    let (a, mut notices) = noticed_client(&gateway).await;
    let b = gateway.connect().await;
    a.batch_execute("CREATE TEMP TABLE scratch(x int); INSERT INTO scratch VALUES (1)")
        .await
        .unwrap();
    let notice = tokio::time::timeout(std::time::Duration::from_secs(5), notices.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(notice.contains("reserved"), "{notice}");
    assert_eq!(value(&a, "SELECT count(*) FROM scratch").await, "1");
    let reader = tokio::spawn(async move {
        value(
            &b,
            "SELECT count(*) FROM pg_class WHERE relname = 'scratch'",
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !reader.is_finished(),
        "B waits while A holds a temporary table"
    );
    drop(a);
    assert_eq!(
        reader.await.unwrap(),
        "0",
        "A's temporary table is gone and was never seen"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_state_shares_the_engine_again() {
    let gateway = Gateway::start().await;
    let a = gateway.connect().await;
    let b = gateway.connect().await;
    a.batch_execute("CREATE TEMP TABLE scratch(x int)")
        .await
        .unwrap();
    a.batch_execute("DROP TABLE scratch").await.unwrap();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), value(&b, "SELECT 1")).await;
    assert_eq!(
        read.expect("B runs while A is idle without session state"),
        "1"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advisory_lock_is_released_when_its_client_leaves() {
    let gateway = Gateway::start().await;
    let a = gateway.connect().await;
    let b = gateway.connect().await;
    assert_eq!(value(&a, "SELECT pg_advisory_lock(42)::text").await, "");
    drop(a);
    let got = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        value(&b, "SELECT pg_try_advisory_lock(42)"),
    )
    .await
    .expect("B runs once A has left");
    assert_eq!(got, "t", "A's lock was released when A disconnected");
    assert_eq!(value(&b, "SELECT pg_advisory_unlock(42)").await, "t");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_connect_while_another_holds_a_transaction() {
    let gateway = Gateway::start().await;
    let holder = gateway.connect().await;
    holder.batch_execute("BEGIN").await.unwrap();
    // Startup parameters cannot be checked on the busy engine: the login
    // goes through, and they are checked at first use.
    let mut config = gateway.config_for("postgres", "postgres");
    config
        .application_name("late")
        .options("-c TimeZone=Mars/Olympus_Mons");
    let bad = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        gateway.try_connect(config),
    )
    .await
    .expect("login does not wait for the engine")
    .unwrap();
    let mut config = gateway.config_for("postgres", "postgres");
    config.application_name("late");
    let good = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        gateway.try_connect(config),
    )
    .await
    .expect("login does not wait for the engine")
    .unwrap();
    let queued = tokio::spawn(async move { value(&good, "SHOW application_name").await });
    let refused = tokio::spawn(async move { bad.simple_query("SELECT 1").await.unwrap_err() });
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(queued.await.unwrap(), "late");
    assert_eq!(sqlstate(&refused.await.unwrap()), "22023");
    gateway.stop().await;
}
