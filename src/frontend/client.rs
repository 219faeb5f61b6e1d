//! The life of a logged-in client: its messages go to the engine inside units of
//! work under a lease, the engine's answers come back, and when the client
//! leaves the engine session is cleaned up for the next one.
//!
//! The loop has two phases, each in a file of its own: between units of work
//! (`idle`), where the client holds no engine session and its next unit is
//! read whole, answered by the gateway, pipelined (`pipelined`) or given a
//! lease; and inside a unit (`in_unit`), where the client holds the lease
//! until the engine is idle and everything it sent is answered. `commands`
//! carries out what the gateway answers itself; `leaving` cleans up.

mod commands;
mod idle;
mod in_unit;
mod leaving;
mod live_queries;
mod pipelined;

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tracing::{debug, error, warn};

use crate::activity::ClientRegistration;
use crate::cancel::{CancelKey, CancelTarget};
use crate::config::Config;
use crate::database::{Connected, Database, Registry};
use crate::lease::Lease;
use crate::protocol::error::{PgError, sqlstate};
use crate::protocol::frame;
use crate::session::names::{Namespace, Planned};
use crate::session::replies::ReplyFilter;
use crate::session::settings::Settings;
use crate::session::unit::UnitOfWork;

use super::transport::{ClientStream, send_error};

/// Frontend message types a logged-in client may send.
const FRONTEND_TAGS: &[u8] = b"QPBEDCHSXdcfF";
/// How long a last error may take to reach a departing client that does not
/// read.
const FAREWELL_WAIT: Duration = Duration::from_secs(5);

/// A logged-in client and what it may use.
pub struct ClientContext {
    pub key: CancelKey,
    pub cancel: Arc<CancelTarget>,
    pub user: String,
    pub database: Arc<Database>,
    /// Keeps the database from being dropped while the client uses it.
    pub connected: Connected,
    /// Every database, for `CREATE DATABASE` and `DROP DATABASE`.
    pub registry: Arc<Registry>,
    /// Set when the gateway shuts down, to the end of the grace period (at
    /// once when an administrator kills the client).
    pub shutdown: watch::Receiver<Option<Instant>>,
    /// Where the client's work stands, for the admin console and metrics.
    pub activity: ClientRegistration,
    pub config: Arc<Config>,
    /// The client's session settings as of login.
    pub settings: Arc<Settings>,
    /// Whether the engine has accepted them yet (see `login`).
    pub settings_checked: bool,
    pub _permit: OwnedSemaphorePermit,
}

/// Why a client's session ended.
enum End {
    /// The client said goodbye or closed its socket.
    Left,
    /// The client's connection failed.
    ClientIo(io::Error),
    /// The client gets this FATAL error.
    Fatal(PgError),
    /// The engine session failed.
    Engine(io::Error),
}

/// What the loop does after a step of a phase.
enum Step {
    Continue,
    /// The client is done and nothing of it is left to the engine.
    Leave,
}

struct Client {
    ctx: ClientContext,
    names: Namespace,
    unit: UnitOfWork,
    inbuf: BytesMut,
    /// Whole messages read from the client and not yet forwarded.
    pending: VecDeque<BytesMut>,
    to_engine: BytesMut,
    lease: Option<Lease>,
    /// When the client took its lease.
    leased_at: Instant,
    /// No more input will come from the client.
    client_done: bool,
    /// An error ended an unfinished extended-protocol sequence before it ran;
    /// its messages are skipped up to its `Sync`, as PostgreSQL does.
    skipping_to_sync: bool,
    /// The client's session settings, which the engine carries while it runs.
    settings: Arc<Settings>,
    /// The current unit may have changed settings: read them back at its end.
    settings_may_change: bool,
    /// The current unit may have changed what the client listens to.
    listens_may_change: bool,
    /// Channels the current unit's LISTEN statements name.
    listened: Vec<String>,
    /// Channels the current unit's UNLISTEN statements name (`None`: all).
    unlistened: Vec<Option<String>>,
    /// The lease is a pooled session, not the one LISTEN runs on.
    on_pooled_session: bool,
    /// The end of a unit's answer, written once its LISTENs are in place.
    held_output: Option<BytesMut>,
    /// Notifications from other clients' units, to pass on while idle.
    inbox: mpsc::UnboundedReceiver<BytesMut>,
    /// Something was forwarded since the last end of a unit of work.
    unit_ran: bool,
    /// The current unit may have created state that pins the engine.
    state_may_change: bool,
    /// The client holds session state; the engine is reserved for it.
    pinned: bool,
    /// Hides the answers to the messages the gateway adds.
    replies: ReplyFilter,
    /// The messages of the last group sent, while it may be sent again.
    last_group: Vec<Planned>,
}

/// Serves a logged-in client until it leaves, then cleans up after it.
pub async fn serve<S: ClientStream>(stream: &mut S, inbuf: BytesMut, ctx: ClientContext) {
    let names = Namespace::new(ctx.key.process_id);
    let settings = ctx.settings.clone();
    let inbox = ctx.database.notifier.register(ctx.key.process_id);
    let mut client = Client {
        ctx,
        names,
        unit: UnitOfWork::default(),
        inbuf,
        pending: VecDeque::new(),
        to_engine: BytesMut::new(),
        lease: None,
        leased_at: Instant::now(),
        client_done: false,
        skipping_to_sync: false,
        settings,
        settings_may_change: false,
        listens_may_change: false,
        listened: Vec::new(),
        unlistened: Vec::new(),
        on_pooled_session: false,
        held_output: None,
        inbox,
        unit_ran: false,
        state_may_change: false,
        pinned: false,
        replies: ReplyFilter::default(),
        last_group: Vec::new(),
    };
    let end = match client.run(stream).await {
        Ok(()) => End::Left,
        Err(end) => end,
    };
    let id = client.ctx.key.process_id;
    match &end {
        End::Left => {}
        End::ClientIo(err) if err.kind() == io::ErrorKind::TimedOut => {
            warn!(client = id, "disconnecting client: {err}");
        }
        End::ClientIo(err) => debug!(client = id, "client connection failed: {err}"),
        End::Fatal(err) => {
            warn!(client = id, "disconnecting client: {err}");
            let _ = tokio::time::timeout(FAREWELL_WAIT, send_error(stream, err)).await;
        }
        End::Engine(err) => {
            let database = &client.ctx.database;
            if database.is_tunnel() {
                warn!(
                    client = id,
                    "the host of database \"{}\" went away during this client's unit of work ({err}); disconnecting the client",
                    database.name
                );
            } else {
                error!(
                    client = id,
                    "the engine session failed: {err}; clients of database \"{}\" get errors until pgshare is restarted",
                    database.name
                );
            }
            let _ = tokio::time::timeout(FAREWELL_WAIT, send_error(stream, &database.lost())).await;
            if let Some(lease) = client.lease.as_mut() {
                lease.session = None;
            }
            return;
        }
    }
    client.clean_up().await;
}

fn cancelled_by_user() -> PgError {
    PgError::error(
        sqlstate::QUERY_CANCELED,
        "canceling statement due to user request",
    )
}

/// What a client that waited `query_wait_timeout` for the engine gets,
/// naming who holds it.
fn wait_timed_out(ctx: &ClientContext) -> PgError {
    let error = PgError::error(
        sqlstate::QUERY_CANCELED,
        "canceling statement due to query_wait_timeout",
    )
    .with_hint(
        "another client held the shared engine for longer than query_wait_timeout; a client that keeps a transaction open (as drivers do by default outside autocommit) holds it until it commits",
    );
    match ctx.activity.engine_holder() {
        Some(holder) => error.with_detail(format!("The engine is held by {holder}.")),
        None => error,
    }
}

fn admin_shutdown() -> PgError {
    PgError::fatal(
        sqlstate::ADMIN_SHUTDOWN,
        "terminating connection due to administrator command",
    )
    .with_hint("pgshare is shutting down, or an administrator ended this connection")
}

/// Completes once the gateway shuts down.
async fn shutting_down(shutdown: &mut watch::Receiver<Option<Instant>>) {
    if shutdown.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Client {
    /// Runs the phases until the client leaves.
    async fn run<S: ClientStream>(&mut self, stream: &mut S) -> Result<(), End> {
        loop {
            let step = if self.lease.is_none() {
                self.between_units(stream).await?
            } else {
                self.in_unit(stream).await?
            };
            if let Step::Leave = step {
                return Ok(());
            }
        }
    }

    fn take_client_input(&mut self, read: io::Result<usize>) -> Result<(), End> {
        take_input(
            read,
            &mut self.inbuf,
            &mut self.pending,
            &mut self.client_done,
            self.ctx.config.max_message_len,
        )
    }
}

/// Adds what a read brought to `pending` as whole messages.
fn take_input(
    read: io::Result<usize>,
    inbuf: &mut BytesMut,
    pending: &mut VecDeque<BytesMut>,
    client_done: &mut bool,
    max_message_len: usize,
) -> Result<(), End> {
    if read.map_err(End::ClientIo)? == 0 {
        *client_done = true;
        return Ok(());
    }
    while let Some(message) = frame::split_message(inbuf, max_message_len).map_err(End::Fatal)? {
        if !FRONTEND_TAGS.contains(&message[0]) {
            return Err(End::Fatal(PgError::protocol_violation(format!(
                "invalid frontend message type {}",
                message[0]
            ))));
        }
        pending.push_back(message);
    }
    Ok(())
}

/// Writes engine output to a client that holds the engine: one that does
/// not read it within `limit` is disconnected, so that it cannot hold the
/// engine for everyone else.
async fn write_client_within<S: ClientStream>(
    stream: &mut S,
    bytes: &[u8],
    limit: Option<Duration>,
) -> Result<(), End> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, write_client(stream, bytes))
            .await
            .unwrap_or_else(|_| Err(End::ClientIo(not_reading()))),
        None => write_client(stream, bytes).await,
    }
}

fn not_reading() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the client did not read the answers it asked for",
    )
}

async fn write_client<S: ClientStream>(stream: &mut S, bytes: &[u8]) -> Result<(), End> {
    stream.write_all(bytes).await.map_err(End::ClientIo)?;
    stream.flush().await.map_err(End::ClientIo)
}
