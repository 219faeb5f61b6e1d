//! The life of a logged-in client: its messages go to the engine inside units of
//! work under a lease, the engine's answers come back, and when the client
//! leaves the engine session is cleaned up for the next one.
//!
//! While a client holds the lease, the loop waits on three things at once:
//! more client messages, engine output, and room to write to the engine. Doing
//! all three together keeps a pipelining client or a large COPY from
//! deadlocking client, gateway and engine against each other's full buffers.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::cancel::{CancelKey, CancelTarget};
use crate::config::Config;
use crate::database::{Connected, Database, Registry};
use crate::engine::EngineSession;
use crate::protocol::backend::{push_message, ready_for_query};
use crate::protocol::error::{PgError, sqlstate};
use crate::protocol::frame::{self, Reader};
use crate::scheduler::{Lease, PipelinedUnits, UnitEvent};
use crate::session::cleanup;
use crate::session::database_commands::{
    DatabaseCommand, database_command, extended_database_command,
};
use crate::session::listen::{self, Notifier};
use crate::session::names::Namespace;
use crate::session::pinning;
use crate::session::pipeline::single_pipelinable_unit;
use crate::session::placement::place;
use crate::session::replies::{ReplyFilter, Undone};
use crate::session::reset::{ResetCommand, reset_command};
use crate::session::settings::{self, Settings};
use crate::session::unit::UnitOfWork;

use super::transport::{ClientStream, send_error};

/// Frontend message types a logged-in client may send.
const FRONTEND_TAGS: &[u8] = b"QPBEDCHSXdcfF";
/// Messages after which the embedded engine runs what it has buffered; a batch
/// ending otherwise gets a `Flush` so that nothing waits for bytes to come.
const ENGINE_BOUNDARIES: &[u8] = b"QSHdcf";
/// Messages after which a client may wait for an answer: a unit of work is
/// not sent to the scheduler before one of these arrives.
const UNIT_BOUNDARIES: &[u8] = b"QSHFXdcf";
/// A `Flush` message.
const FLUSH: &[u8] = b"H\0\0\0\x04";
/// How long a last error may take to reach a departing client that does not
/// read.
const FAREWELL_WAIT: Duration = Duration::from_secs(5);
/// Stop reading a client while this much of its input waits for the engine.
const MAX_ENGINE_BACKLOG: usize = 1 << 20;
/// Stop reading a client waiting for the lease once this many messages queue.
const MAX_QUEUED_MESSAGES: usize = 4096;

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
    /// Set when the gateway shuts down, to the end of the grace period.
    pub shutdown: watch::Receiver<Option<Instant>>,
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

struct Client {
    ctx: ClientContext,
    names: Namespace,
    unit: UnitOfWork,
    inbuf: BytesMut,
    /// Whole messages read from the client and not yet forwarded.
    pending: VecDeque<BytesMut>,
    to_engine: BytesMut,
    lease: Option<Lease>,
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

fn wait_timed_out() -> PgError {
    PgError::error(
        sqlstate::QUERY_CANCELED,
        "canceling statement due to query_wait_timeout",
    )
    .with_hint("another client held the shared engine for longer than query_wait_timeout")
}

fn admin_shutdown() -> PgError {
    PgError::fatal(
        sqlstate::ADMIN_SHUTDOWN,
        "terminating connection due to administrator command",
    )
    .with_hint("pgshare is shutting down")
}

/// Completes once the gateway shuts down.
async fn shutting_down(shutdown: &mut watch::Receiver<Option<Instant>>) {
    if shutdown.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Completes at `deadline`, or never without one.
async fn wait_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

impl Client {
    async fn run<S: ClientStream>(&mut self, stream: &mut S) -> Result<(), End> {
        loop {
            if self.lease.is_none() {
                if self.pending.is_empty() {
                    if self.client_done {
                        return Ok(());
                    }
                    tokio::select! {
                        read = stream.read_buf(&mut self.inbuf) => self.take_client_input(read)?,
                        Some(notification) = self.inbox.recv() => {
                            write_client(stream, &notification).await?;
                        }
                        _ = shutting_down(&mut self.ctx.shutdown) => {
                            return Err(End::Fatal(admin_shutdown()));
                        }
                    }
                    continue;
                }
                if self.skipping_to_sync {
                    self.skip_to_sync(stream).await?;
                    continue;
                }
                if self.pending[0][0] == b'X' {
                    return Ok(());
                }
                if self.ctx.shutdown.borrow().is_some() {
                    // No new unit of work starts during shutdown.
                    return Err(End::Fatal(admin_shutdown()));
                }
                if !self
                    .pending
                    .back()
                    .is_some_and(|m| UNIT_BOUNDARIES.contains(&m[0]))
                {
                    // The rest of this unit is still on its way: read it
                    // before asking for the engine.
                    let read = stream.read_buf(&mut self.inbuf).await;
                    self.take_client_input(read)?;
                    continue;
                }
                if self.ctx.registry.manages_databases()
                    && let Some(command) = database_command(&self.pending[0])
                {
                    self.pending.pop_front();
                    let reply = run_database_command(
                        &self.ctx.registry,
                        &self.ctx.database,
                        command,
                        Vec::new(),
                        None,
                    )
                    .await;
                    write_client(stream, &reply).await?;
                    continue;
                }
                if self.ctx.registry.manages_databases()
                    && let Some((command, answered)) =
                        extended_database_command(&self.pending, &self.names)
                {
                    if self.pending[0][0] == b'P' {
                        // The client has the statement now, as it would.
                        let parse = self.pending[0].clone();
                        self.names.plan(parse).map_err(End::Fatal)?;
                    }
                    self.pending.clear();
                    let reply = run_database_command(
                        &self.ctx.registry,
                        &self.ctx.database,
                        command,
                        answered,
                        None,
                    )
                    .await;
                    write_client(stream, &reply).await?;
                    continue;
                }
                if !self.ctx.database.scheduler.pipelines() && only_named_parses(&self.pending) {
                    self.answer_parses(stream).await?;
                    continue;
                }
                if self.ctx.settings_checked
                    && self.ctx.database.scheduler.pipelines()
                    && let Some(ready_count) = single_pipelinable_unit(&self.pending, &self.names)
                {
                    self.run_pipelined(stream, ready_count).await?;
                    continue;
                }
                match self.acquire(stream).await? {
                    Some(lease) if lease.session.is_none() => {
                        let error = self.ctx.database.unavailable();
                        if error.is_fatal() {
                            return Err(End::Fatal(error));
                        }
                        self.reject_unit(stream, error).await?;
                    }
                    Some(mut lease) => {
                        if let Some(engine) = lease.session.as_mut() {
                            let id = self.ctx.key.process_id;
                            if let Err(error) = settings::switch(engine, &self.settings)
                                .await
                                .map_err(End::Engine)?
                            {
                                if !self.ctx.settings_checked {
                                    // A startup parameter the engine refuses,
                                    // found at first use: refused as at login.
                                    return Err(End::Fatal(error));
                                }
                                warn!(
                                    client = id,
                                    "the client's settings could not be restored: {error}; it continues with the defaults"
                                );
                                self.settings = engine.settings.clone();
                            }
                            self.ctx.settings_checked = true;
                            self.ctx.cancel.set_running(engine.cancel.clone());
                        }
                        self.lease = Some(lease);
                    }
                    None => continue,
                }
            }
            let Some(lease) = self.lease.as_mut() else {
                continue;
            };
            let Some(engine) = lease.session.as_mut() else {
                return Err(End::Fatal(self.ctx.database.lost()));
            };
            if self.to_engine.is_empty()
                && self.unit.answered()
                && let Some(command) = self.pending.front().and_then(|m| reset_command(m))
                && (command == ResetCommand::DeallocateAll || engine.status() == b'I')
            {
                self.pending.pop_front();
                let reply = reset_client(
                    engine,
                    command,
                    &mut self.names,
                    &mut self.settings,
                    &self.ctx.database.notifier,
                    self.ctx.key.process_id,
                )
                .await
                .map_err(End::Engine)?;
                write_client(stream, &reply).await?;
                continue;
            }
            if self.to_engine.is_empty()
                && self.unit.answered()
                && engine.status() == b'I'
                && self.ctx.registry.manages_databases()
                && let Some(command) = self.pending.front().and_then(|m| database_command(m))
            {
                self.pending.pop_front();
                let reply = run_database_command(
                    &self.ctx.registry,
                    &self.ctx.database,
                    command,
                    Vec::new(),
                    Some(engine),
                )
                .await;
                write_client(stream, &reply).await?;
                continue;
            }
            // The lease leaves `self` while messages are forwarded with it.
            let Some(mut lease) = self.lease.take() else {
                continue;
            };
            let forwarded = match lease.session.as_mut() {
                Some(engine) => self.forward_pending(engine),
                None => Err(End::Fatal(self.ctx.database.lost())),
            };
            self.lease = Some(lease);
            forwarded?;
            let Some(engine) = self.lease.as_mut().and_then(|lease| lease.session.as_mut()) else {
                return Err(End::Fatal(self.ctx.database.lost()));
            };
            if self.to_engine.is_empty() && self.unit.answered() && engine.status() == b'I' {
                if self.state_may_change || (self.pinned && self.unit_ran) {
                    let holds = pinning::holds_session_state(engine)
                        .await
                        .map_err(End::Engine)?;
                    if holds && !self.pinned {
                        let id = self.ctx.key.process_id;
                        info!(
                            client = id,
                            "the engine is reserved for this client while it holds session state"
                        );
                        write_client(
                            stream,
                            &PgError::notice(pinning::RESERVED_NOTICE).to_bytes(),
                        )
                        .await?;
                    }
                    self.pinned = holds;
                    self.state_may_change = false;
                }
                self.unit_ran = false;
                if self.settings_may_change {
                    self.settings = settings::capture(engine).await.map_err(End::Engine)?;
                    self.settings_may_change = false;
                }
                if self.listens_may_change {
                    let id = self.ctx.key.process_id;
                    let listened = std::mem::take(&mut self.listened);
                    let unlistened = std::mem::take(&mut self.unlistened);
                    let notifier = &self.ctx.database.notifier;
                    if self.on_pooled_session {
                        // LISTEN inside a transaction ran on a pooled session:
                        // move what it committed to the listener session.
                        let committed = listen::take_listens(engine).await.map_err(End::Engine)?;
                        notifier.record(id, &committed, &unlistened);
                        let mut listener = self.ctx.database.scheduler.lease_listener().await;
                        if let Some(engine) = listener.session.as_mut()
                            && let Err(err) = notifier.reconcile(engine, None, &[]).await
                        {
                            warn!(
                                "could not move a client's LISTENs to the listener session: {err}"
                            );
                            listener.session = None;
                        }
                    } else {
                        notifier
                            .reconcile(engine, Some(id), &listened)
                            .await
                            .map_err(End::Engine)?;
                    }
                    self.listens_may_change = false;
                    if let Some(output) = self.held_output.take() {
                        write_client(stream, &output).await?;
                    }
                }
                if !self.pinned {
                    self.ctx.cancel.set_running(None);
                    self.lease = None;
                    continue;
                }
            }
            if self.client_done && self.to_engine.is_empty() {
                return Ok(());
            }
            let idle_limit = if self.to_engine.is_empty() && self.unit.answered() {
                self.ctx.config.idle_in_transaction_timeout
            } else {
                None
            };
            let shutdown_deadline = *self.ctx.shutdown.borrow();
            tokio::select! {
                read = stream.read_buf(&mut self.inbuf),
                    if !self.client_done && self.to_engine.len() < MAX_ENGINE_BACKLOG =>
                {
                    take_input(
                        read,
                        &mut self.inbuf,
                        &mut self.pending,
                        &mut self.client_done,
                        self.ctx.config.max_message_len,
                    )?;
                }
                filled = engine.input.fill() => {
                    filled.map_err(End::Engine)?;
                    let mut notifications = false;
                    let mut output = engine
                        .input
                        .take_complete(|tag| notifications |= tag == b'A')
                        .map_err(End::Engine)?;
                    if notifications {
                        let id = self.ctx.key.process_id;
                        output = self.ctx.database.notifier.route(output, Some(id));
                    }
                    let unit = &mut self.unit;
                    output = self.replies.filter(output, |tag| unit.received(tag));
                    apply_undone(self.replies.take_undone(), engine, &mut self.names);
                    let unit_ends = self.unit.answered() && engine.status() == b'I' && self.to_engine.is_empty();
                    if self.listens_may_change && unit_ends {
                        // The client learns that its LISTEN or UNLISTEN is
                        // done only once notifications are routed so.
                        self.held_output = Some(output);
                    } else if !output.is_empty() {
                        let limit = self.ctx.config.idle_in_transaction_timeout;
                        write_client_within(stream, &output, limit).await?;
                    }
                }
                sent = engine.output.write_buf(&mut self.to_engine), if !self.to_engine.is_empty() => {
                    sent.map_err(End::Engine)?;
                }
                _ = wait_until(shutdown_deadline) => {
                    // The grace period is over: the unit is rolled back.
                    return Err(End::Fatal(admin_shutdown()));
                }
                _ = shutting_down(&mut self.ctx.shutdown), if shutdown_deadline.is_none() => {}
                _ = tokio::time::sleep(idle_limit.unwrap_or_default()), if idle_limit.is_some() => {
                    let message = if engine.status() == b'I' {
                        "terminating connection: it kept the shared engine reserved (temporary tables, advisory locks or held cursors) while idle"
                    } else {
                        "terminating connection due to idle-in-transaction timeout"
                    };
                    return Err(End::Fatal(PgError::fatal(
                        sqlstate::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
                        message,
                    ).with_hint("the engine is shared: a client may not hold it idle for longer than idle_in_transaction_timeout")));
                }
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

    /// Waits for the lease while still reading the client, so that a client
    /// that disconnects leaves the queue at once. Returns `None` when the wait
    /// ended without a lease (cancelled, timed out, or the client left).
    async fn acquire<S: ClientStream>(&mut self, stream: &mut S) -> Result<Option<Lease>, End> {
        let database = self.ctx.database.clone();
        let limit = self.ctx.config.query_wait_timeout;
        let cancel = self.ctx.cancel.clone();
        let for_listen = self.pending.iter().any(|message| {
            let mut reader = Reader::new(frame::body(message));
            let sql = match message[0] {
                b'Q' => reader.cstr().ok(),
                b'P' => reader.cstr().and_then(|_name| reader.cstr()).ok(),
                _ => None,
            };
            sql.is_some_and(listen::may_change_listens)
        });
        let wait = cancel.cancellable(async {
            let lease = async {
                if for_listen {
                    database.scheduler.lease_listener().await
                } else {
                    database.scheduler.lease().await
                }
            };
            match limit {
                Some(limit) => tokio::time::timeout(limit, lease).await.ok(),
                None => Some(lease.await),
            }
        });
        tokio::pin!(wait);
        loop {
            tokio::select! {
                waited = &mut wait => {
                    return match waited {
                        Some(Some(lease)) => {
                            self.on_pooled_session = !for_listen && !database.scheduler.pipelines();
                            Ok(Some(lease))
                        }
                        Some(None) => {
                            self.reject_unit(stream, wait_timed_out()).await?;
                            Ok(None)
                        }
                        None => {
                            self.reject_unit(stream, cancelled_by_user()).await?;
                            Ok(None)
                        }
                    };
                }
                read = stream.read_buf(&mut self.inbuf),
                    if !self.client_done && self.pending.len() < MAX_QUEUED_MESSAGES =>
                {
                    self.take_client_input(read)?;
                    if self.client_done {
                        return Ok(None);
                    }
                }
                _ = shutting_down(&mut self.ctx.shutdown) => {
                    return Err(End::Fatal(admin_shutdown()));
                }
            }
        }
    }

    /// Answers a unit of named `Parse` messages and its `Sync` without a
    /// server session: the statements are recorded and prepared on whichever
    /// session first runs them (a client preparing synchronously must not wait
    /// for a pooled session that other clients hold, possibly the client's own
    /// program's other connections). An error in their SQL is reported when
    /// they are first used.
    async fn answer_parses<S: ClientStream>(&mut self, stream: &mut S) -> Result<(), End> {
        let mut reply = Vec::new();
        while let Some(message) = self.pending.pop_front() {
            if message[0] == b'P' {
                self.names.plan(message).map_err(End::Fatal)?;
                push_message(&mut reply, b'1', &[]);
            }
        }
        ready_for_query(&mut reply, b'I');
        write_client(stream, &reply).await
    }

    /// Runs the one self-contained unit in `pending` pipelined behind other
    /// clients' units, relaying the engine's answer as it comes.
    async fn run_pipelined<S: ClientStream>(
        &mut self,
        stream: &mut S,
        ready_count: u32,
    ) -> Result<(), End> {
        let mut messages = Vec::with_capacity(self.pending.len());
        while let Some(message) = self.pending.pop_front() {
            messages.push(self.names.plan(message).map_err(End::Fatal)?);
        }
        let (events, mut received) = mpsc::unbounded_channel();
        let taken = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicUsize::new(0));
        self.ctx.database.scheduler.submit(PipelinedUnits {
            messages,
            ready_count,
            settings: self.settings.clone(),
            client: self.ctx.key.process_id,
            events,
            queued: queued.clone(),
            taken: taken.clone(),
        });
        let limit = self.ctx.config.query_wait_timeout;
        let first = self
            .ctx
            .cancel
            .cancellable(async {
                match limit {
                    Some(limit) => tokio::time::timeout(limit, received.recv()).await.ok(),
                    None => Some(received.recv().await),
                }
            })
            .await;
        let mut event = match first {
            Some(Some(event)) => event,
            interrupted => {
                if !taken.swap(true, Ordering::SeqCst) {
                    let mut out = if interrupted.is_none() {
                        cancelled_by_user()
                    } else {
                        wait_timed_out()
                    }
                    .to_bytes();
                    ready_for_query(&mut out, b'I');
                    return write_client(stream, &out).await;
                }
                // Too late to withdraw: the engine is running it.
                received.recv().await
            }
        };
        loop {
            match event {
                Some(UnitEvent::Output(output)) => {
                    write_client(stream, &output).await?;
                    queued.fetch_sub(output.len(), Ordering::SeqCst);
                }
                Some(UnitEvent::Overflow) => return Err(End::ClientIo(not_reading())),
                Some(UnitEvent::Undone(undone)) => self.names.undo(undone),
                Some(UnitEvent::Done) => return Ok(()),
                Some(UnitEvent::Failed(err)) => return Err(End::Engine(err)),
                Some(UnitEvent::Refused) => {
                    let error = self.ctx.database.unavailable();
                    if error.is_fatal() {
                        return Err(End::Fatal(error));
                    }
                    let mut out = error.to_bytes();
                    ready_for_query(&mut out, b'I');
                    return write_client(stream, &out).await;
                }
                None => {
                    return Err(End::Engine(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "the engine session is closed",
                    )));
                }
            }
            event = received.recv().await;
        }
    }

    /// Answers the first unit of work waiting in `pending` with `err` without
    /// running it, as PostgreSQL answers a statement that failed.
    async fn reject_unit<S: ClientStream>(
        &mut self,
        stream: &mut S,
        err: PgError,
    ) -> Result<(), End> {
        let mut out = err.to_bytes();
        let mut ended = false;
        while let Some(message) = self.pending.pop_front() {
            if matches!(message[0], b'Q' | b'F' | b'S') {
                ended = true;
                break;
            }
        }
        if ended {
            ready_for_query(&mut out, b'I');
        } else {
            self.skipping_to_sync = true;
        }
        write_client(stream, &out).await
    }

    /// Drops messages up to the next `Sync` and answers it.
    async fn skip_to_sync<S: ClientStream>(&mut self, stream: &mut S) -> Result<(), End> {
        while let Some(message) = self.pending.pop_front() {
            match message[0] {
                b'S' => {
                    self.skipping_to_sync = false;
                    let mut out = Vec::new();
                    ready_for_query(&mut out, b'I');
                    return write_client(stream, &out).await;
                }
                b'X' => {
                    self.pending.push_front(message);
                    self.skipping_to_sync = false;
                    return Ok(());
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Moves pending messages into the engine's output, names rewritten and
    /// the statements they use prepared on this session first.
    fn forward_pending(&mut self, engine: &mut EngineSession) -> Result<(), End> {
        let mut last = None;
        while let Some(message) = self.pending.pop_front() {
            let tag = message[0];
            let waits_for_answers =
                last.is_some() || !self.unit.answered() || !self.to_engine.is_empty();
            if tag == b'Q' && waits_for_answers && self.is_gateway_command(&message) {
                // Carried out by the gateway once what precedes it is
                // answered, if that leaves the engine idle.
                self.pending.push_front(message);
                break;
            }
            if tag == b'X' {
                self.client_done = true;
                self.pending.clear();
                break;
            }
            self.note_session_changes(&message);
            let unit_start = !self.unit_ran && engine.status() == b'I' && self.unit.answered();
            self.unit_ran = true;
            let planned = self.names.plan(message).map_err(End::Fatal)?;
            let mut to_engine = std::mem::take(&mut self.to_engine);
            place(
                planned,
                &mut engine.statements,
                &mut self.replies,
                &mut to_engine,
                unit_start,
            );
            self.to_engine = to_engine;
            self.unit.sent(tag);
            last = Some(tag);
        }
        if let Some(tag) = last
            && !ENGINE_BOUNDARIES.contains(&tag)
        {
            self.to_engine.extend_from_slice(FLUSH);
        }
        Ok(())
    }

    /// Whether the gateway carries out `message` itself when the engine is
    /// idle: `DISCARD ALL`, `DEALLOCATE ALL`, `CREATE/DROP DATABASE`.
    fn is_gateway_command(&self, message: &[u8]) -> bool {
        reset_command(message).is_some()
            || (self.ctx.registry.manages_databases() && database_command(message).is_some())
    }

    /// Notes what forwarding `message` may change in the client's session:
    /// settings, or channels it listens to.
    fn note_session_changes(&mut self, message: &[u8]) {
        let mut reader = Reader::new(frame::body(message));
        let sql = match message[0] {
            b'Q' => reader.cstr().ok(),
            b'P' => reader.cstr().and_then(|_name| reader.cstr()).ok(),
            b'B' => {
                let statement = reader.cstr().and_then(|_portal| reader.cstr());
                if statement.is_ok_and(|statement| self.names.changes_settings(statement)) {
                    self.settings_may_change = true;
                }
                None
            }
            _ => None,
        };
        let Some(sql) = sql else {
            return;
        };
        if settings::may_change_settings(sql) {
            self.settings_may_change = true;
        }
        if listen::may_change_listens(sql) {
            self.listens_may_change = true;
            self.listened.extend(listen::listened_channels(sql));
            self.unlistened.extend(listen::unlistened_channels(sql));
        }
        if pinning::may_create_session_state(sql) {
            self.state_may_change = true;
        }
    }

    /// Leaves the engine session as a new connection would find it.
    async fn clean_up(mut self) {
        let statements = self.names.own_statements();
        let notifier = self.ctx.database.notifier.clone();
        let listened = notifier.unregister(self.ctx.key.process_id);
        if self.lease.is_none() && statements.is_empty() && !listened {
            return;
        }
        let mut lease = match self.lease.take() {
            Some(lease) => lease,
            None => self.ctx.database.scheduler.lease().await,
        };
        let Some(engine) = lease.session.as_mut() else {
            return;
        };
        let result = async {
            engine.send(&self.to_engine).await?;
            let hidden = self.replies.hidden_pending();
            cleanup::after_client(engine, &self.unit, hidden, &statements).await?;
            if self.pinned || self.state_may_change {
                engine
                    .run_collecting(&cleanup::query(pinning::RELEASE))
                    .await?;
            }
            Ok::<_, io::Error>(())
        }
        .await;
        if (listened || self.listens_may_change) && result.is_ok() {
            // LISTENs live on the listener session (the same one unless the
            // engine is pooled).
            drop(lease);
            let mut listener = self.ctx.database.scheduler.lease_listener().await;
            if let Some(engine) = listener.session.as_mut()
                && let Err(err) = notifier.reconcile(engine, None, &[]).await
            {
                warn!("could not drop a departed client's LISTENs: {err}");
                listener.session = None;
            }
            return;
        }
        if let Err(err) = result {
            error!(
                client = self.ctx.key.process_id,
                "the engine session failed while cleaning up after a client: {err}; clients of database \"{}\" get errors until pgshare is restarted",
                self.ctx.database.name
            );
            lease.session = None;
        }
    }
}

/// Carries out `CREATE DATABASE` or `DROP DATABASE` on the registry for a
/// client connected to `current` and outside a transaction, and returns the
/// answer PostgreSQL would send; `answered` holds the answers to the
/// messages before the command. `current`'s catalog is brought up to date
/// on `held`, the session the client holds, or else on one it waits for.
async fn run_database_command(
    registry: &Registry,
    current: &Database,
    command: DatabaseCommand,
    answered: Vec<u8>,
    held: Option<&mut EngineSession>,
) -> Vec<u8> {
    let name_of_current = current.name.as_str();
    let result = match &command {
        DatabaseCommand::Create(name) => {
            registry.create(name, name_of_current).await.map(|()| None)
        }
        DatabaseCommand::Drop { name, if_exists } => registry
            .drop_database(name, name_of_current)
            .await
            .and_then(|existed| match (existed, if_exists) {
                (true, _) => Ok(None),
                (false, true) => Ok(Some(PgError::notice(format!(
                    "database \"{name}\" does not exist, skipping"
                )))),
                (false, false) => Err(PgError::error(
                    sqlstate::INVALID_CATALOG_NAME,
                    format!("database \"{name}\" does not exist"),
                )),
            }),
    };
    if result.is_ok()
        && let Err(err) = registry.sync_catalog(current, held).await
    {
        warn!("database \"{name_of_current}\": {err}");
    }
    let mut out = answered;
    match result {
        Ok(notice) => {
            if let Some(notice) = notice {
                notice.encode(&mut out);
            }
            let mut tag = command.tag().as_bytes().to_vec();
            tag.push(0);
            push_message(&mut out, b'C', &tag);
        }
        Err(err) => err.encode(&mut out),
    }
    ready_for_query(&mut out, b'I');
    out
}

/// Carries out `DISCARD ALL` or `DEALLOCATE ALL` on the client's own state
/// and returns the answer PostgreSQL would send.
async fn reset_client(
    engine: &mut EngineSession,
    command: ResetCommand,
    names: &mut Namespace,
    settings: &mut Arc<Settings>,
    notifier: &Notifier,
    client: i32,
) -> io::Result<Vec<u8>> {
    cleanup::close_statements(engine, &names.take_statements()).await?;
    if command == ResetCommand::DiscardAll {
        engine
            .run_collecting(&cleanup::query(
                b"CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DISCARD PLANS; DISCARD SEQUENCES",
            ))
            .await?;
        *settings = Arc::new(Settings::default());
        engine.settings = settings.clone();
        if notifier.clear(client) {
            notifier.reconcile(engine, None, &[]).await?;
        }
    }
    let mut reply = Vec::new();
    let mut tag = command.tag().as_bytes().to_vec();
    tag.push(0);
    push_message(&mut reply, b'C', &tag);
    ready_for_query(&mut reply, engine.status());
    Ok(reply)
}

/// Applies to the session and the client's names what failed or was skipped.
fn apply_undone(undone: Vec<Undone>, engine: &mut EngineSession, names: &mut Namespace) {
    for undone in undone {
        match undone {
            Undone::NotPrepared(name) => engine.statements.remove(&name),
            client_side => names.undo(client_side),
        }
    }
}

/// True when `pending` is named `Parse` messages and one final `Sync`.
fn only_named_parses(pending: &VecDeque<BytesMut>) -> bool {
    let Some(last) = pending.len().checked_sub(1) else {
        return false;
    };
    last > 0
        && pending[last][0] == b'S'
        && pending
            .iter()
            .take(last)
            .all(|message| message[0] == b'P' && message.get(5).is_some_and(|&name| name != 0))
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
