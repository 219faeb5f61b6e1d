//! `pgshare serve --run CMD`: a program run against the gateway, which serves
//! for as long as the program runs.
//!
//! Once the gateway is ready, the command runs through `sh -c` with
//! `DATABASE_URL` and libpq's `PG*` variables naming the first TCP listen
//! address. When it exits, the gateway shuts down as at SIGTERM and pgshare
//! exits with the command's status (128 + the signal's number when a signal
//! ended it, as shells report it).
//!
//! SIGINT and SIGTERM are passed on to the command, and the gateway serves
//! until the command has exited, so a program that cleans up on them can still
//! use its database. Where they go depends on the terminal:
//!
//! - In the foreground of a terminal, the command stays in pgshare's process
//!   group, as a program the shell started would be: it can read the terminal,
//!   and Ctrl-C, Ctrl-\ and Ctrl-Z reach it from the terminal itself. A SIGINT
//!   the terminal sent is therefore not passed on (the command would get it
//!   twice, and a second Ctrl-C often means "stop without cleaning up"); one a
//!   process sent goes to the command's shell.
//! - Elsewhere (a service manager, CI, a test), the command leads a process
//!   group of its own, and signals go to the whole group: every program the
//!   shell started gets them, as from a terminal's Ctrl-C. A shell dies of a
//!   SIGTERM at once while its programs may take a while to clean up, so once
//!   a signal was passed on, pgshare also waits for the rest of the group, for
//!   at most the shutdown grace period.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use rustix::process::{Pid, Signal};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::low_level::siginfo::{Cause, Origin};
use signal_hook_tokio::SignalsInfo;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::config::{Config, Secret};
use crate::frontend::tls::ClientTls;
use crate::server::Server;

/// The role the command logs in as, and the database it is given.
const USER: &str = "postgres";
const DATABASE: &str = "postgres";

/// Variables that would take libpq elsewhere than `PGHOST`, or contradict
/// `PGSSLMODE`; the command does not inherit them.
const MISLEADING: [&str; 3] = ["PGHOSTADDR", "PGSERVICE", "PGSSLNEGOTIATION"];

/// A command to run against the gateway.
pub struct RunCommand {
    command: String,
}

impl RunCommand {
    /// The command `command`; fails before anything starts when `config`
    /// gives the gateway no TCP address for it.
    pub fn new(command: String, config: &Config) -> Result<Self> {
        if config.listen.is_empty() {
            bail!("--run needs a TCP address to listen on (--listen)");
        }
        Ok(Self { command })
    }

    /// Runs the command against `server` and serves clients until it has
    /// exited; then shuts the gateway down with `grace` for running units of
    /// work (at most a second after a SIGINT, as without --run) and returns
    /// the command's exit status. Should the gateway stop first (by its own
    /// means), the command gets a SIGTERM and pgshare waits for it.
    pub async fn serve(self, server: Server, grace: Duration) -> Result<ExitCode> {
        let addr = *server
            .local_addrs()
            .first()
            .context("the gateway has no TCP listener for the command")?;
        let target = Target::of_gateway(addr, &server.gateway().config());
        let command = match Running::start(&self.command, &target) {
            Ok(command) => command,
            Err(err) => {
                server.run(std::future::ready(Duration::ZERO)).await?;
                return Err(err);
            }
        };
        let (exited, command_exited) = oneshot::channel();
        let (stopped, gateway_stopped) = oneshot::channel();
        let supervisor = tokio::spawn(command.supervise(grace, exited, gateway_stopped));
        let served = server
            .run(async move { command_exited.await.unwrap_or(grace) })
            .await;
        let _ = stopped.send(());
        let status = supervisor
            .await
            .context("the command's supervisor failed")??;
        served?;
        Ok(ExitCode::from(exit_code(status)))
    }
}

/// The command's shell, running.
struct Running {
    child: tokio::process::Child,
    recipient: Recipient,
    /// SIGINT and SIGTERM, with where each came from.
    signals: SignalsInfo<WithOrigin>,
}

impl Running {
    /// Starts `sh -c command` with the variables for `target`, in pgshare's
    /// process group in a terminal's foreground and in one of its own
    /// elsewhere.
    fn start(command: &str, target: &Target) -> Result<Self> {
        let signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM])
            .context("could not handle SIGINT and SIGTERM")?;
        let shares_group = in_terminal_foreground();
        let mut shell = tokio::process::Command::new("sh");
        shell.arg("-c").arg(command).envs(target.environment());
        for name in MISLEADING {
            shell.env_remove(name);
        }
        if !shares_group {
            shell.process_group(0);
        }
        info!(
            "running {command:?} with DATABASE_URL={}",
            target.redacted_url()
        );
        let child = shell.spawn().context("could not start sh for --run")?;
        let pid = child
            .id()
            .and_then(|id| Pid::from_raw(id as i32))
            .context("the command's shell has no process id")?;
        let recipient = if shares_group {
            Recipient::Shell(pid)
        } else {
            Recipient::Group(pid)
        };
        Ok(Self {
            child,
            recipient,
            signals,
        })
    }

    /// Passes signals on until the command has exited (after a signal, its
    /// whole process group, for at most the grace period), then sends
    /// `exited` the grace period for the gateway's shutdown and returns the
    /// command's status. When `gateway_stopped` comes first, the command gets
    /// a SIGTERM.
    async fn supervise(
        mut self,
        grace: Duration,
        exited: oneshot::Sender<Duration>,
        mut gateway_stopped: oneshot::Receiver<()>,
    ) -> Result<ExitStatus> {
        let mut grace_after = grace;
        let mut passed_on = false;
        let mut gateway_running = true;
        let status = loop {
            tokio::select! {
                status = self.child.wait() => break status.context("could not wait for the command")?,
                Some(origin) = self.signals.next() => {
                    if origin.signal == SIGINT {
                        grace_after = grace.min(Duration::from_secs(1));
                    }
                    passed_on |= self.recipient.pass_on(&origin);
                }
                _ = &mut gateway_stopped, if gateway_running => {
                    gateway_running = false;
                    info!("the gateway stopped while the command runs: passing it SIGTERM");
                    passed_on |= self.recipient.send("SIGTERM", Signal::TERM);
                }
            }
        };
        if let (Recipient::Group(group), true) = (self.recipient, passed_on) {
            wait_for_group(group, grace_after).await;
        }
        info!(
            "the command exited with status {}{}",
            exit_code(status),
            if gateway_running {
                "; shutting down"
            } else {
                ""
            }
        );
        let _ = exited.send(grace_after);
        Ok(status)
    }
}

/// Where the command finds the gateway.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    host: IpAddr,
    port: u16,
    /// The password of role `postgres`, when the configuration has one.
    password: Option<String>,
    /// TCP clients must use TLS (`--ssl required`).
    tls_required: bool,
}

impl Target {
    /// The gateway listening on `addr` with `config`.
    fn of_gateway(addr: SocketAddr, config: &Config) -> Self {
        let password = match config.users.get(USER) {
            Some(Some(Secret::Plain(password))) => Some(password.clone()),
            _ => None,
        };
        Self::new(addr, password, config.client_tls == ClientTls::Required)
    }

    /// A gateway listening on `addr`; loopback stands for an address that
    /// listens everywhere.
    fn new(addr: SocketAddr, password: Option<String>, tls_required: bool) -> Self {
        let host = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Self {
            host,
            port: addr.port(),
            password,
            tls_required,
        }
    }

    /// `postgres://postgres[:PASSWORD]@HOST:PORT/postgres`, with
    /// `?sslmode=require` when the gateway requires TLS (drivers that do not
    /// read `PGSSLMODE` would otherwise go without).
    fn url(&self) -> String {
        self.url_with(
            self.password
                .as_deref()
                .map(|password| utf8_percent_encode(password, NON_ALPHANUMERIC).to_string()),
        )
    }

    /// The URL with the password hidden, for the log.
    fn redacted_url(&self) -> String {
        self.url_with(self.password.as_ref().map(|_| "********".to_string()))
    }

    fn url_with(&self, encoded_password: Option<String>) -> String {
        let password = encoded_password
            .map(|password| format!(":{password}"))
            .unwrap_or_default();
        let address = SocketAddr::new(self.host, self.port);
        let options = if self.tls_required {
            "?sslmode=require"
        } else {
            ""
        };
        format!("postgres://{USER}{password}@{address}/{DATABASE}{options}")
    }

    /// The variables the command gets: `DATABASE_URL` and libpq's. Loopback
    /// gains nothing from TLS, so it is off unless the gateway requires it.
    fn environment(&self) -> Vec<(&'static str, String)> {
        let mut variables = vec![
            ("DATABASE_URL", self.url()),
            ("PGHOST", self.host.to_string()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", USER.to_string()),
            ("PGDATABASE", DATABASE.to_string()),
            (
                "PGSSLMODE",
                if self.tls_required {
                    "require"
                } else {
                    "disable"
                }
                .to_string(),
            ),
        ];
        if let Some(password) = &self.password {
            variables.push(("PGPASSWORD", password.clone()));
        }
        variables
    }
}

/// Who gets the signals pgshare passes on.
#[derive(Clone, Copy)]
enum Recipient {
    /// The command's shell, which shares pgshare's process group in a
    /// terminal's foreground.
    Shell(Pid),
    /// The command's process group, of its own, led by its shell.
    Group(Pid),
}

impl Recipient {
    /// Passes the signal `origin` describes on, unless the command has it
    /// already; returns whether it did.
    fn pass_on(self, origin: &Origin) -> bool {
        let name = if origin.signal == SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        let Some(signal) = Signal::from_named_raw(origin.signal) else {
            return false;
        };
        if let (Recipient::Shell(_), Cause::Kernel) = (self, origin.cause) {
            // The terminal sent it to its whole foreground process group.
            info!("{name} from the terminal reached the command too; stopping once it exits");
            return false;
        }
        self.send(name, signal)
    }

    /// Sends `signal` (called `name` in the log); returns whether it went.
    fn send(self, name: &str, signal: Signal) -> bool {
        let sent = match self {
            Recipient::Shell(shell) => rustix::process::kill_process(shell, signal),
            Recipient::Group(group) => rustix::process::kill_process_group(group, signal),
        };
        match sent {
            Ok(()) => {
                info!("{name}: passed on to the command; stopping once it exits");
                true
            }
            Err(err) => {
                warn!("{name}: could not pass it on to the command: {err}");
                false
            }
        }
    }
}

/// Whether pgshare is in the foreground process group of its terminal, where
/// the terminal's Ctrl-C reaches every process of the group.
fn in_terminal_foreground() -> bool {
    std::fs::File::open("/dev/tty")
        .and_then(|tty| Ok(rustix::termios::tcgetpgrp(&tty)?))
        .is_ok_and(|foreground| foreground == rustix::process::getpgrp())
}

/// Waits until no process is left in process group `group` (the programs
/// the command's shell started, which got the signal too), for at most
/// `grace`.
async fn wait_for_group(group: Pid, grace: Duration) {
    let deadline = Instant::now() + grace;
    let mut told = false;
    while rustix::process::test_kill_process_group(group).is_ok() {
        if Instant::now() >= deadline {
            warn!(
                "programs the command started are still running after {}s; shutting down anyway",
                grace.as_secs_f32()
            );
            return;
        }
        if !told {
            info!("waiting for the programs the command started to exit");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status a shell reports for a command that ended with `status`.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128 + signal as u8,
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(addr: &str, password: Option<&str>, tls_required: bool) -> Target {
        Target::new(
            addr.parse().unwrap(),
            password.map(str::to_string),
            tls_required,
        )
    }

    #[test]
    fn loopback_address_without_password() {
        let target = target("127.0.0.1:6543", None, false);
        assert_eq!(target.url(), "postgres://postgres@127.0.0.1:6543/postgres");
        assert_eq!(target.redacted_url(), target.url());
        let environment = target.environment();
        let get = |name: &str| {
            environment
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.as_str())
        };
        assert_eq!(get("DATABASE_URL"), Some(target.url().as_str()));
        assert_eq!(get("PGHOST"), Some("127.0.0.1"));
        assert_eq!(get("PGPORT"), Some("6543"));
        assert_eq!(get("PGUSER"), Some("postgres"));
        assert_eq!(get("PGDATABASE"), Some("postgres"));
        assert_eq!(get("PGSSLMODE"), Some("disable"));
        assert_eq!(get("PGPASSWORD"), None);
    }

    #[test]
    fn everywhere_becomes_loopback() {
        let v4 = target("0.0.0.0:5432", None, false);
        assert_eq!(v4.url(), "postgres://postgres@127.0.0.1:5432/postgres");
        let v6 = target("[::]:5432", None, false);
        assert_eq!(v6.url(), "postgres://postgres@[::1]:5432/postgres");
        assert!(v6.environment().contains(&("PGHOST", "::1".to_string())));
        let given = target("192.0.2.7:7000", None, false);
        assert_eq!(given.url(), "postgres://postgres@192.0.2.7:7000/postgres");
    }

    #[test]
    fn password_is_url_encoded() {
        let password = "p@ss:w/rd?#% é";
        let target = target("127.0.0.1:5432", Some(password), false);
        assert_eq!(
            target.url(),
            "postgres://postgres:p%40ss%3Aw%2Frd%3F%23%25%20%C3%A9@127.0.0.1:5432/postgres"
        );
        assert!(
            target
                .environment()
                .contains(&("PGPASSWORD", password.to_string()))
        );
        assert_eq!(
            target.redacted_url(),
            "postgres://postgres:********@127.0.0.1:5432/postgres"
        );
    }

    #[test]
    fn required_tls_is_asked_for() {
        let target = target("127.0.0.1:5432", None, true);
        assert_eq!(
            target.url(),
            "postgres://postgres@127.0.0.1:5432/postgres?sslmode=require"
        );
        assert!(
            target
                .environment()
                .contains(&("PGSSLMODE", "require".to_string()))
        );
    }

    #[test]
    fn exit_codes_as_shells_report_them() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        // Killed by SIGTERM (15) and by SIGKILL (9).
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }
}
