//! Many databases behind one port: each its own engine, created on first
//! connect or by CREATE DATABASE, dropped by DROP DATABASE, kept on disk.

mod support;

use std::process::Command;

use pgshare::engine::embedded::Storage;
use support::{Gateway, sqlstate, test_config};

fn psql(url: &str, sql: &str) -> (bool, String) {
    let output = Command::new("psql")
        .args([url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

fn url(gateway: &Gateway, database: &str) -> String {
    format!("postgres://postgres@{}/{database}", gateway.addr)
}

async fn psql_ok(url: String, sql: &'static str) -> String {
    tokio::task::spawn_blocking(move || {
        let (ok, text) = psql(&url, sql);
        assert!(ok, "psql {sql}: {text}");
        text
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_made_with_create_database_are_separate_and_survive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.storage = Storage::Directory(data.path().to_path_buf());
    config.auto_create = false;
    let gateway = Gateway::start_with(config.clone()).await;
    psql_ok(url(&gateway, "postgres"), "CREATE DATABASE alpha").await;
    psql_ok(url(&gateway, "postgres"), "CREATE DATABASE \"Beta-2\"").await;
    psql_ok(
        url(&gateway, "alpha"),
        "CREATE TABLE t(x text); INSERT INTO t VALUES ('in alpha')",
    )
    .await;
    psql_ok(
        url(&gateway, "Beta-2"),
        "CREATE TABLE t(x text); INSERT INTO t VALUES ('in beta')",
    )
    .await;
    let listed = psql_ok(
        url(&gateway, "alpha"),
        "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE NOT datistemplate",
    )
    .await;
    assert_eq!(listed.trim(), "Beta-2,alpha,postgres");
    gateway.stop().await;

    let gateway = Gateway::start_with(config).await;
    let alpha = psql_ok(
        url(&gateway, "alpha"),
        "SELECT current_database() || ': ' || x FROM t",
    )
    .await;
    let beta = psql_ok(
        url(&gateway, "Beta-2"),
        "SELECT current_database() || ': ' || x FROM t",
    )
    .await;
    assert_eq!(alpha.trim(), "alpha: in alpha");
    assert_eq!(beta.trim(), "Beta-2: in beta");
    // Without auto_create, an unknown name is refused as PostgreSQL does.
    let unknown = gateway
        .try_connect(gateway.config_for("postgres", "gamma"))
        .await
        .expect_err("gamma does not exist");
    assert_eq!(sqlstate(&unknown), "3D000");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prisma_style_shadow_database_is_created_used_and_dropped() {
    let gateway = Gateway::start().await;
    let app = gateway
        .try_connect(gateway.config_for("postgres", "app"))
        .await
        .unwrap();
    app.batch_execute("CREATE TABLE users(id int)")
        .await
        .unwrap();
    let shadow_name = "prisma_migrate_shadow_db_5f0c2b1e-7a7d-4c1e-9d2f-0b6a8e3c4d11";
    app.batch_execute(&format!("CREATE DATABASE \"{shadow_name}\""))
        .await
        .unwrap();
    let shadow = gateway
        .try_connect(gateway.config_for("postgres", shadow_name))
        .await
        .unwrap();
    shadow
        .batch_execute("CREATE TABLE migrations(id int); INSERT INTO migrations VALUES (1)")
        .await
        .unwrap();
    // The shadow database is empty of the app's tables, and the other way round.
    let tables: i64 = shadow
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'users'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
    // In use by another connection: refused as PostgreSQL refuses it.
    let busy = app
        .batch_execute(&format!("DROP DATABASE \"{shadow_name}\""))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&busy), "55006");
    drop(shadow);
    let mut dropped = Err(busy);
    for _ in 0..50 {
        // The shadow connection's end reaches the gateway shortly.
        dropped = app
            .batch_execute(&format!("DROP DATABASE \"{shadow_name}\""))
            .await;
        if dropped.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    dropped.expect("dropped once no one uses it");
    let own = app.batch_execute("DROP DATABASE app").await.unwrap_err();
    assert_eq!(sqlstate(&own), "55006");
    let missing = app
        .batch_execute(&format!("DROP DATABASE \"{shadow_name}\""))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&missing), "3D000");
    app.batch_execute(&format!("DROP DATABASE IF EXISTS \"{shadow_name}\""))
        .await
        .unwrap();
    let exists = app.batch_execute("CREATE DATABASE app").await.unwrap_err();
    assert_eq!(sqlstate(&exists), "42P04");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_database_names_are_refused_and_touch_nothing_outside_the_data_directory() {
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config();
    let root = data.path().join("data");
    config.storage = Storage::Directory(root.clone());
    let gateway = Gateway::start_with(config).await;
    for name in ["../escape", "a/b", "/", ".hidden", &"x".repeat(64)] {
        let refused = gateway
            .try_connect(gateway.config_for("postgres", name))
            .await
            .expect_err("a bad name is refused");
        assert_eq!(sqlstate(&refused), "42602", "{name}");
    }
    let client = gateway.connect().await;
    let refused = client
        .batch_execute("CREATE DATABASE \"../escape\"")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&refused), "42602");
    let outside: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(outside, ["data"], "nothing beside the data directory");
    gateway.stop().await;
}

/// The files of an earlier engine (PostgreSQL 17, as pglite-oxide laid them
/// out): a `tmp/pglite/base` with its version.
fn earlier_engine_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let base = dir.join("tmp/pglite/base");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("PG_VERSION"), "17\n").unwrap();
    std::fs::write(dir.join(".pglite-oxide.lock"), "").unwrap();
    files_under(dir)
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path.clone());
            }
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn a_data_directory_of_an_earlier_engine_is_refused_and_left_alone() {
    let data = tempfile::tempdir().unwrap();
    let before = earlier_engine_files(data.path());
    let out = Command::new(env!("CARGO_BIN_EXE_pgshare"))
        .args([
            "serve",
            "--http",
            "off",
            "--listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pgshare started on it: {log}");
    assert!(
        log.contains("PostgreSQL 17") && log.contains("pg_dump") && log.contains("pg_restore"),
        "the refusal says how to carry the data over: {log}"
    );
    assert_eq!(files_under(data.path()), before, "nothing was changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_an_earlier_engine_is_refused_and_left_alone() {
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.storage = Storage::Directory(data.path().to_path_buf());
    let gateway = Gateway::start_with(config).await;
    let before = earlier_engine_files(&data.path().join("databases/old"));
    let Err(err) = gateway
        .try_connect(gateway.config_for("postgres", "old"))
        .await
    else {
        panic!("the database of an earlier engine was opened");
    };
    assert_eq!(sqlstate(&err), "08006");
    assert_eq!(
        files_under(&data.path().join("databases/old")),
        before,
        "nothing was changed"
    );
    // The others are served as ever.
    let kept = psql_ok(url(&gateway, "postgres"), "SELECT 42").await;
    assert_eq!(kept.trim(), "42");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_databases_close_and_reopen_with_their_data() {
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.storage = Storage::Directory(data.path().to_path_buf());
    config.engine_idle_timeout = Some(std::time::Duration::from_millis(400));
    config.max_open_engines = 2;
    let gateway = Gateway::start_with(config).await;
    {
        let one = gateway
            .try_connect(gateway.config_for("postgres", "one"))
            .await
            .unwrap();
        one.batch_execute("CREATE TABLE t(x int); INSERT INTO t VALUES (1)")
            .await
            .unwrap();
    }
    // Its client left: after the idle timeout the engine is closed, and the
    // next client gets it opened again with everything committed.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let one = gateway
        .try_connect(gateway.config_for("postgres", "one"))
        .await
        .unwrap();
    let x: i32 = one.query_one("SELECT x FROM t", &[]).await.unwrap().get(0);
    assert_eq!(x, 1);
    // Two may be open: a third database closes the idle one; with both
    // busy, a third is refused with 53000.
    let two = gateway
        .try_connect(gateway.config_for("postgres", "two"))
        .await
        .unwrap();
    let three = gateway
        .try_connect(gateway.config_for("postgres", "three"))
        .await
        .expect_err("both open databases have clients");
    assert_eq!(sqlstate(&three), "53000");
    drop(two);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let three = gateway
        .try_connect(gateway.config_for("postgres", "three"))
        .await
        .unwrap();
    three.batch_execute("SELECT 1").await.unwrap();
    let x: i32 = one.query_one("SELECT x FROM t", &[]).await.unwrap().get(0);
    assert_eq!(x, 1, "the busy database stayed open");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_creates_and_drops_databases_through_the_extended_protocol() {
    // Without auto_create, only the registry's CREATE DATABASE makes one.
    let mut config = test_config();
    config.auto_create = false;
    let gateway = Gateway::start_with(config).await;
    let client = gateway.connect().await;
    // tokio-postgres prepares the statement, then binds and executes it.
    client
        .execute("CREATE DATABASE via_driver", &[])
        .await
        .unwrap();
    let created = gateway
        .try_connect(gateway.config_for("postgres", "via_driver"))
        .await
        .unwrap();
    let name: String = created
        .query_one("SELECT current_database()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "via_driver");
    let exists = client
        .execute("CREATE DATABASE via_driver", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&exists), "42P04");
    drop(created);
    let mut dropped = Err(exists);
    for _ in 0..50 {
        dropped = client
            .execute("DROP DATABASE via_driver", &[])
            .await
            .map(drop);
        if dropped.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    dropped.expect("dropped through the extended protocol");
    let gone = gateway
        .try_connect(gateway.config_for("postgres", "via_driver"))
        .await
        .expect_err("dropped from the registry");
    assert_eq!(sqlstate(&gone), "3D000");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holding_the_engine_creates_a_database_and_sees_it_listed() {
    let gateway = Gateway::start().await;
    let client = gateway.connect().await;
    // A temporary table reserves the engine for this client.
    client
        .batch_execute("CREATE TEMP TABLE mine(x int)")
        .await
        .unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.batch_execute("CREATE DATABASE while_reserved"),
    )
    .await
    .expect("answered while the client holds the engine")
    .unwrap();
    let listed: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = 'while_reserved'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(listed, 1);
    gateway.stop().await;
}
