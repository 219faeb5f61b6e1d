//! The Postgres drivers people use, at their default settings, run as
//! processes against `pgshare serve`: each program in tests/clients/ on the
//! embedded engine (`--memory`) and on a real PostgreSQL behind a pool
//! (`--upstream URL --pool-size 10`). A program asserts what it reads back
//! and exits non-zero on the first mismatch; a test fails with the program's
//! output and the end of the gateway's log when it does, or when it runs
//! longer than two minutes (it is then killed).
//!
//! The drivers are installed into ignored folders (`.ci/run` does it): a
//! venv at `target/clients/python` from tests/clients/python/requirements.txt,
//! `npm ci --prefix tests/clients/node`, and Debian's
//! `libpostgresql-jdbc-java`.

mod support;

use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::postgres::Postgres;
use support::process::{Pgshare, free_port};
use support::programs::psql;

/// How long a driver's program may run before it is killed and fails.
const TIME_LIMIT: Duration = Duration::from_secs(120);

const PGJDBC_JAR: &str = "/usr/share/java/postgresql.jar";

#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Embedded,
    Upstream,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Embedded => "embedded",
            Engine::Upstream => "upstream",
        }
    }
}

#[derive(Clone, Copy)]
enum Language {
    Python,
    Node,
    Java,
}

/// One driver's program under tests/clients/, and the database it gets.
struct Driver {
    database: &'static str,
    language: Language,
    file: &'static str,
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// The command that runs `driver`'s program with its language's installed
/// drivers; fails the test with the install step when they are missing.
fn command_for(driver: &Driver) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match driver.language {
        Language::Python => {
            let python = root.join("target/clients/python/bin/python");
            assert!(
                python.exists(),
                "the Python drivers are not installed: python3 -m venv target/clients/python && \
                 target/clients/python/bin/pip install -r tests/clients/python/requirements.txt"
            );
            let mut command = Command::new(python);
            command.arg(clients_dir().join("python").join(driver.file));
            command
        }
        Language::Node => {
            assert!(
                clients_dir().join("node/node_modules").is_dir(),
                "the Node drivers are not installed: npm ci --prefix tests/clients/node"
            );
            let mut command = Command::new("node");
            command.arg(clients_dir().join("node").join(driver.file));
            command
        }
        Language::Java => {
            assert!(
                Path::new(PGJDBC_JAR).exists(),
                "pgjdbc is not installed: apt-get install libpostgresql-jdbc-java"
            );
            let mut command = Command::new("java");
            command
                .args(["-cp", PGJDBC_JAR])
                .arg(clients_dir().join("java").join(driver.file));
            command
        }
    }
}

/// A gateway serving `database` on `engine`, with its log in a file.
struct Served {
    gateway: Pgshare,
    /// The HTTP port, for the programs' live queries.
    http: u16,
    log: PathBuf,
    _upstream: Option<Postgres>,
    _dir: tempfile::TempDir,
}

async fn serve(engine: Engine, database: &str) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pgshare.log");
    let stderr = Stdio::from(File::create(&log).unwrap());
    let http = free_port();
    let http_address = format!("127.0.0.1:{http}");
    let (gateway, upstream) = match engine {
        // A database that does not exist yet is created when the program
        // first connects to it.
        Engine::Embedded => (
            Pgshare::start(&["--memory", "--http", &http_address], stderr).await,
            None,
        ),
        Engine::Upstream => {
            let server = Postgres::start();
            psql(&server.url(), &format!("CREATE DATABASE {database}"));
            let url = format!("{}/{database}", server.url().trim_end_matches("/postgres"));
            let data = dir.path().join("data");
            let args = [
                "--upstream",
                &url,
                "--pool-size",
                "10",
                "--data",
                data.to_str().unwrap(),
                "--http",
                &http_address,
            ];
            (Pgshare::start(&args, stderr).await, Some(server))
        }
    };
    Served {
        gateway,
        http,
        log,
        _upstream: upstream,
        _dir: dir,
    }
}

/// Kills `child` and everything it started (its process group).
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `driver`'s program against a gateway of its own on `engine`, and
/// fails the test unless it exits with status 0 within the time limit.
async fn check(engine: Engine, driver: Driver) {
    let served = serve(engine, driver.database).await;
    let port = served.gateway.port.to_string();
    let out_dir = tempfile::tempdir().unwrap();
    let out_path = out_dir.path().join("output");
    let out = File::create(&out_path).unwrap();
    let mut command = command_for(&driver);
    // The drivers' defaults, whatever the environment of the test says.
    for (key, _) in std::env::vars() {
        if key.starts_with("PG") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .current_dir(out_dir.path())
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{port}/{}", driver.database),
        )
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", &port)
        .env("PGUSER", "postgres")
        .env("PGDATABASE", driver.database)
        .env("PGSHARE_HTTP", format!("http://127.0.0.1:{}", served.http))
        .env("CLIENT_MATRIX_ENGINE", engine.name())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|err| panic!("start {}: {err}", driver.file));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > TIME_LIMIT {
            kill_group(&mut child);
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut output = String::new();
    File::open(&out_path)
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    println!("{output}");
    let verdict = match status {
        Some(status) if status.success() => return,
        Some(status) => format!("exited with {status}"),
        None => format!(
            "did not finish within {} s and was killed",
            TIME_LIMIT.as_secs()
        ),
    };
    let mut log = String::new();
    File::open(&served.log)
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    panic!(
        "{} on the {} engine {verdict} after {:.1} s\n--- its output:\n{output}\n--- the end of pgshare's log:\n{}",
        driver.file,
        engine.name(),
        started.elapsed().as_secs_f64(),
        tail(&log, 40)
    );
}

/// For each driver, a module with one test per engine.
macro_rules! on_both_engines {
    ($($module:ident: $language:ident $file:literal;)*) => {$(
        mod $module {
            use super::*;

            fn driver() -> Driver {
                Driver {
                    database: stringify!($module),
                    language: Language::$language,
                    file: $file,
                }
            }

            #[tokio::test]
            async fn embedded_engine() {
                check(Engine::Embedded, driver()).await;
            }

            #[tokio::test]
            async fn upstream_pool() {
                check(Engine::Upstream, driver()).await;
            }
        }
    )*};
}

on_both_engines! {
    psycopg: Python "psycopg_driver.py";
    asyncpg: Python "asyncpg_driver.py";
    sqlalchemy_alembic: Python "sqlalchemy_driver.py";
    django: Python "django_driver.py";
    node_postgres: Node "node_postgres.mjs";
    postgres_js: Node "postgres_js.mjs";
    knex: Node "knex.mjs";
    drizzle: Node "drizzle.mjs";
    pgjdbc: Java "Pgjdbc.java";
}
