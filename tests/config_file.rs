//! The configuration file: the example in the repository loads, flags win
//! over it, and SIGHUP reloads it in a running `pgshare` process.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pgshare::config::AuthMethod;
use pgshare::config_file::ConfigFile;
use pgshare::frontend::tls::ClientTls;
use support::process::{Pgshare, free_port};
use support::{sqlstate, test_config};

#[test]
fn the_example_file_loads_with_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pgshare.example.toml");
    let file = ConfigFile::read(&path).expect("the example parses");
    let mut config = test_config();
    file.apply(&mut config, |_| false)
        .expect("the example applies");
    assert_eq!(
        config.listen,
        ["127.0.0.1:5432".parse::<std::net::SocketAddr>().unwrap()]
    );
    assert_eq!(config.auth, AuthMethod::ScramSha256);
    assert!(config.users.contains_key("app") && config.users.contains_key("postgres"));
    assert_eq!(config.client_tls, ClientTls::On);
    assert_eq!(config.max_client_conn, 100);
    assert_eq!(
        config.idle_in_transaction_timeout,
        Some(Duration::from_secs(60))
    );
    assert_eq!(config.embedded_databases, ["app"]);
    assert_eq!(config.tunnel_databases, [("tab".to_string(), None)]);
    assert_eq!(config.http, Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(config.tunnel.heartbeat, Duration::from_secs(10));
    assert_eq!(config.tunnel.max_copy, 256 << 20);
    assert!(config.realtime.enabled);
    assert_eq!(config.realtime.max_per_ip, 10);
    assert_eq!(config.realtime.max_message, 1 << 20);
    let (name, reports) = &config.upstream_databases[0];
    assert_eq!(name, "reports");
    assert_eq!(reports.pool.size, 10);
    assert_eq!(reports.upstream.database(), "reports");
    config.validate().expect("the example is consistent");
}

#[test]
fn flags_given_explicitly_win_over_the_file_and_unknown_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgshare.toml");
    std::fs::write(
        &path,
        "listen = [\"127.0.0.1:7001\"]\nauto_create = false\n",
    )
    .unwrap();
    let mut config = test_config();
    let flag_listen = config.listen.clone();
    ConfigFile::read(&path)
        .unwrap()
        .apply(&mut config, |name| name == "listen")
        .unwrap();
    assert_eq!(config.listen, flag_listen, "--listen was given");
    assert!(!config.auto_create, "the file decides what no flag gave");
    std::fs::write(&path, "[limits]\nmax_clients = 5\n").unwrap();
    let err = ConfigFile::read(&path).unwrap_err();
    assert!(format!("{err:#}").contains("max_clients"), "{err:#}");
}

fn write_config(path: &Path, port: u16, alice_password: &str, auto_create: bool) {
    std::fs::write(
        path,
        format!(
            "listen = [\"127.0.0.1:{port}\"]\nmemory = true\nauto_create = {auto_create}\n\
             [auth]\nmethod = \"scram-sha-256\"\npassword = \"admin\"\n[auth.users]\nalice = \"{alice_password}\"\n\
             [tls]\nssl = \"off\"\n[databases.configured]\n"
        ),
    )
    .unwrap();
}

async fn connect(
    pgshare: &Pgshare,
    password: &str,
    database: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    Ok(pgshare.connect_as("alice", password, database).await?.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_gateway_reloads_its_file_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgshare.toml");
    write_config(&path, free_port(), "first-password", false);
    // The --listen that Pgshare gives wins over the file's address.
    let mut pgshare = Pgshare::start(&["--config", path.to_str().unwrap()], Stdio::piped()).await;
    let port = pgshare.port;
    let stderr = pgshare.child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("pgshare never logged {needle:?}");
    };
    wait_for(&format!("listening on 127.0.0.1:{port}"));
    let client = connect(&pgshare, "first-password", "configured")
        .await
        .unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
    let unknown = connect(&pgshare, "first-password", "other")
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&unknown),
        "3D000",
        "auto_create = false came from the file"
    );

    // The file's listen address changes too, but --listen decides it.
    write_config(&path, free_port(), "second-password", true);
    pgshare.signal("HUP");
    wait_for("reloaded");
    let restart = wait_for("restart");
    assert!(restart.contains("auto_create changed"), "{restart}");
    let refused = connect(&pgshare, "first-password", "configured")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&refused), "28P01");
    let client = connect(&pgshare, "second-password", "configured")
        .await
        .unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
    let still = connect(&pgshare, "second-password", "other")
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&still),
        "3D000",
        "auto_create keeps its value until a restart"
    );
}
