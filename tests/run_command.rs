//! `pgshare serve --run CMD` as a real process: the command finds the gateway
//! through DATABASE_URL and libpq's variables, pgshare exits with its status
//! and only after it, SIGINT and SIGTERM reach it (once, with a terminal's
//! Ctrl-C), and the gateway is gone afterwards.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::process::free_port;

/// How long pgshare may take to start, and a command to finish.
const PATIENCE: Duration = Duration::from_secs(60);

/// A `pgshare serve --run CMD` listening on a free loopback port, with what
/// it writes to stdout and stderr collected as it comes.
struct Run {
    child: Child,
    port: u16,
    stdout: Output,
    stderr: Output,
}

/// What a process wrote to a pipe, until the pipe closes.
#[derive(Clone)]
struct Output {
    text: Arc<Mutex<Vec<u8>>>,
    reader: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Output {
    fn collect(mut pipe: impl Read + Send + 'static) -> Self {
        let text = Arc::new(Mutex::new(Vec::new()));
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(n) = pipe.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        Output {
            text,
            reader: Arc::new(Mutex::new(Some(reader))),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap()).into_owned()
    }

    /// Waits until `expected` has been written.
    fn wait_for(&self, expected: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.text().contains(expected) {
            assert!(
                Instant::now() < deadline,
                "{expected:?} never came; got {:?}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything, once every writer has closed the pipe (within a few
    /// seconds).
    fn all(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let reader = self.reader.lock().unwrap().take();
        if let Some(reader) = reader {
            while !reader.is_finished() {
                assert!(
                    Instant::now() < deadline,
                    "the pipe stayed open after pgshare exited (a program of the command is left): {:?}",
                    self.text()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            reader.join().unwrap();
        }
        self.text()
    }
}

impl Run {
    /// Starts `pgshare serve --memory --run command` with `args`, in a
    /// process group of its own, so that no terminal the tests run in takes
    /// part.
    fn start(command: &str, args: &[&str]) -> Self {
        Self::start_with(command, args, &[])
    }

    fn start_with(command: &str, args: &[&str], environment: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pgshare"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--http", "off", "--run", command])
            .args(args)
            .envs(environment.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start pgshare");
        let stdout = Output::collect(child.stdout.take().unwrap());
        let stderr = Output::collect(child.stderr.take().unwrap());
        Run {
            child,
            port,
            stdout,
            stderr,
        }
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits for pgshare to exit; returns its status and what the command
    /// wrote to stdout.
    fn exited(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("pgshare did not exit; its log: {}", self.stderr.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, self.stdout.all())
    }
}

/// Asserts that nothing listens on `port` any more.
fn assert_closed(port: u16) {
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the gateway still accepts connections after pgshare exited"
    );
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_command_reaches_the_gateway_by_database_url_and_libpq_variables() {
    let data = tempfile::tempdir().unwrap();
    let command = r#"psql "$DATABASE_URL" -Atc "select 'url ' || current_user || ' ' || current_database()" &&
        psql -Atc "select 'libpq ' || 40 + 2" &&
        printf '%s\n' "$DATABASE_URL" "$PGHOST" "$PGPORT" "$PGSSLMODE" "${PGPASSWORD-none}""#;
    // Variables from pgshare's own environment that would take libpq
    // elsewhere are overridden or dropped.
    let run = Run::start_with(
        command,
        &["--data", data.path().to_str().unwrap()],
        &[("PGHOSTADDR", "127.0.0.2"), ("PGPORT", "1")],
    );
    let port = run.port;
    let log = run.stderr.clone();
    let (status, stdout) = run.exited();
    assert_eq!(status.code(), Some(0), "log: {}", log.text());
    // pgshare's own log stays on stderr: stdout is the command's alone.
    assert_eq!(
        stdout,
        format!(
            "url postgres postgres\nlibpq 42\npostgres://postgres@127.0.0.1:{port}/postgres\n127.0.0.1\n{port}\ndisable\nnone\n"
        )
    );
    assert!(log.text().contains("all engines closed"), "{}", log.text());
    assert_closed(port);
}

#[test]
fn the_password_is_in_the_url_and_pgpassword() {
    let password = "p@ss:w/rd#1 ü";
    let command = r#"psql "$DATABASE_URL" -Atc "select 'url'" && psql -Atc "select 'libpq'" &&
        printf '%s\n' "$DATABASE_URL""#;
    let run = Run::start(
        command,
        &[
            "--memory",
            "--auth",
            "scram-sha-256",
            "--password",
            password,
            "--ssl",
            "required",
        ],
    );
    let port = run.port;
    let (status, stdout) = run.exited();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        stdout,
        format!(
            "url\nlibpq\npostgres://postgres:p%40ss%3Aw%2Frd%231%20%C3%BC@127.0.0.1:{port}/postgres?sslmode=require\n"
        )
    );
}

#[test]
fn pgshare_exits_with_the_command_status_and_closes_the_gateway() {
    let run = Run::start("echo before; exit 3", &["--memory"]);
    let port = run.port;
    let (status, stdout) = run.exited();
    assert_eq!(status.code(), Some(3));
    assert_eq!(stdout, "before\n");
    assert_closed(port);

    // A command killed by a signal: 128 + its number, as shells report it.
    let run = Run::start("kill -KILL $$", &["--memory"]);
    let (status, _) = run.exited();
    assert_eq!(status.code(), Some(128 + 9));
}

#[test]
fn a_gateway_that_cannot_start_runs_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let command = format!("touch {}", marker.display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgshare"))
        .args(["serve", "--memory", "--http", "off"])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--run", &command])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let stdout = Output::collect(child.stdout.take().unwrap());
    let stderr = Output::collect(child.stderr.take().unwrap());
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "pgshare did not give up");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    assert!(!marker.exists(), "the command ran");
    assert_eq!(stdout.all(), "");
    assert!(stderr.all().contains("could not start"));
}

#[test]
fn sigterm_reaches_the_command_which_keeps_the_gateway_until_it_exits() {
    let command = r#"trap 'psql -Atc "select 6 * 7"; echo cleaned up; exit 5' TERM
        echo ready
        while :; do sleep 0.1; done"#;
    let run = Run::start(command, &["--memory"]);
    run.stdout.wait_for("ready\n");
    run.signal("TERM");
    let log = run.stderr.clone();
    let port = run.port;
    let (status, stdout) = run.exited();
    assert_eq!(status.code(), Some(5), "log: {}", log.text());
    // The command's clean-up still had the gateway.
    assert_eq!(stdout, "ready\n42\ncleaned up\n");
    assert!(log.text().contains("SIGTERM: passed on to the command"));
    assert_closed(port);
}

#[test]
fn sigterm_reaches_the_programs_the_shell_started() {
    // The outer shell dies of SIGTERM at once; the program it started takes
    // half a second to clean up, with the gateway.
    let command = r#"sh -c 'trap "sleep 0.5; psql -Atc \"select 1\"; echo inner cleaned up; exit 0" TERM
            echo ready
            while :; do sleep 0.1; done'
        echo the outer shell carried on"#;
    let run = Run::start(command, &["--memory"]);
    run.stdout.wait_for("ready\n");
    run.signal("TERM");
    let log = run.stderr.clone();
    let (status, stdout) = run.exited();
    assert_eq!(status.signal(), None);
    assert_eq!(status.code(), Some(128 + 15), "log: {}", log.text());
    assert_eq!(stdout, "ready\n1\ninner cleaned up\n");
}

#[test]
fn sigint_from_a_process_is_passed_on() {
    let command = r#"trap 'echo got INT; exit 4' INT
        echo ready
        while :; do sleep 0.1; done"#;
    let run = Run::start(command, &["--memory"]);
    run.stdout.wait_for("ready\n");
    run.signal("INT");
    let log = run.stderr.clone();
    let (status, stdout) = run.exited();
    assert_eq!(status.code(), Some(4), "log: {}", log.text());
    assert_eq!(stdout, "ready\ngot INT\n");
    assert!(log.text().contains("SIGINT: passed on to the command"));
}

/// In a terminal, Ctrl-C reaches the command from the terminal itself, and
/// pgshare does not send it a second one.
#[test]
fn ctrl_c_in_a_terminal_reaches_the_command_once() {
    let port = free_port();
    // A second SIGINT during the clean-up would print "got INT" twice.
    let command = r#"trap 'echo got INT; sleep 1; exit 4' INT
        echo ready
        while :; do sleep 0.1; done"#;
    // script(1) runs the shell on a terminal of its own, in its foreground,
    // and writes what it reads from stdin to that terminal; the command comes
    // by PGSHARE_RUN.
    let mut terminal = Command::new("script")
        .args(["--quiet", "--flush", "--return", "--command"])
        .arg(format!(
            "exec {} serve --memory --http off --listen 127.0.0.1:{port}",
            env!("CARGO_BIN_EXE_pgshare")
        ))
        .arg("/dev/null")
        .env("SHELL", "/bin/sh")
        .env("PGSHARE_RUN", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start script(1)");
    let output = Output::collect(terminal.stdout.take().unwrap());
    output.wait_for("ready");
    let mut keyboard = terminal.stdin.take().unwrap();
    keyboard.write_all(b"\x03").unwrap();
    keyboard.flush().unwrap();
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = terminal.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = terminal.kill();
            panic!("pgshare did not exit; terminal: {}", output.text());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(keyboard);
    let text = output.all();
    assert_eq!(status.code(), Some(4), "terminal: {text}");
    // (The log quotes the command, trap and all, so count whole lines.)
    let handled = text
        .lines()
        .filter(|line| line.trim_end().ends_with("got INT"))
        .count();
    assert_eq!(handled, 1, "terminal: {text}");
    assert!(
        text.contains("SIGINT from the terminal reached the command too"),
        "terminal: {text}"
    );
    assert!(!text.contains("SIGINT: passed on"), "terminal: {text}");
    assert_closed(port);
}
