//! Inside a unit of work: the client holds the engine session (a lease)
//! until the engine is idle and everything it sent is answered.
//!
//! The loop waits on three things at once: more client messages, engine
//! output, and room to write to the engine. Doing all three together keeps a
//! pipelining client or a large COPY from deadlocking client, gateway and
//! engine against each other's full buffers.

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use crate::engine::EngineSession;
use crate::frontend::transport::ClientStream;
use crate::lease::Lease;
use crate::protocol::error::{PgError, sqlstate};
use crate::protocol::frame::{self, Reader};
use crate::session::effects::SessionEffects;
use crate::session::gateway_commands::{GatewayCommand, front_command};
use crate::session::names::Undone;
use crate::session::names::{Namespace, Planned};
use crate::session::placement::place;
use crate::session::reset::ResetCommand;
use crate::session::{listen, pinning, settings, snapshots};

use super::commands::run_database_command;
use super::{
    Client, End, Step, admin_shutdown, shutting_down, take_input, write_client, write_client_within,
};

/// Messages after which the embedded engine runs what it has buffered; a batch
/// ending otherwise gets a `Flush` so that nothing waits for bytes to come.
const ENGINE_BOUNDARIES: &[u8] = b"QSHdcf";
/// A `Flush` message.
const FLUSH: &[u8] = b"H\0\0\0\x04";
/// Stop reading a client while this much of its input waits for the engine.
const MAX_ENGINE_BACKLOG: usize = 1 << 20;
/// Messages longer than this are not kept to be sent again.
const MAX_KEPT_FOR_RETRY: usize = 64 << 10;

impl Client {
    /// One step inside a unit of work.
    pub(super) async fn in_unit<S: ClientStream>(&mut self, stream: &mut S) -> Result<Step, End> {
        if self.carry_out_front_command(stream).await? {
            return Ok(Step::Continue);
        }
        self.install_live_queries_schema().await?;
        // The lease leaves `self` while messages are forwarded with it.
        let Some(mut lease) = self.lease.take() else {
            return Ok(Step::Continue);
        };
        let forwarded = match lease.session.as_mut() {
            Some(engine) => self.forward_pending(engine),
            None => Err(End::Fatal(self.ctx.database.lost())),
        };
        self.lease = Some(lease);
        forwarded?;
        if self.at_unit_end() && self.end_unit(stream).await? {
            return Ok(Step::Continue);
        }
        if self.client_done && self.to_engine.is_empty() {
            return Ok(Step::Leave);
        }
        self.exchange(stream).await?;
        Ok(Step::Continue)
    }

    /// Everything sent is answered and the engine is idle.
    fn at_unit_end(&mut self) -> bool {
        let answered = self.to_engine.is_empty() && self.unit.answered();
        answered && leased(&mut self.lease).is_some_and(|engine| engine.status() == b'I')
    }

    /// What a client gets when its lease lost the engine session.
    fn lost(&self) -> End {
        End::Fatal(self.ctx.database.lost())
    }

    /// Carries out a command the gateway answers itself when it is next and
    /// everything before it is answered: `DEALLOCATE ALL` in any transaction
    /// state, `DISCARD ALL` and the database commands outside a transaction
    /// (inside one, the engine refuses them as PostgreSQL does).
    async fn carry_out_front_command<S: ClientStream>(
        &mut self,
        stream: &mut S,
    ) -> Result<bool, End> {
        if !self.to_engine.is_empty() || !self.unit.answered() {
            return Ok(false);
        }
        let databases = self.ctx.registry.manages_databases();
        let Some(front) = front_command(&self.pending, &self.names, databases) else {
            return Ok(false);
        };
        let Some(engine) = leased(&mut self.lease) else {
            return Err(self.lost());
        };
        let idle = engine.status() == b'I';
        let reply = match front.command {
            GatewayCommand::Reset(command) if command == ResetCommand::DeallocateAll || idle => {
                self.take_front(front.messages)?;
                self.reset(command, front.answered).await?
            }
            GatewayCommand::Database(command) if idle => {
                self.take_front(front.messages)?;
                let Some(engine) = leased(&mut self.lease) else {
                    return Err(self.lost());
                };
                run_database_command(
                    &self.ctx.registry,
                    &self.ctx.database,
                    command,
                    front.answered,
                    Some(engine),
                )
                .await
            }
            _ => return Ok(false),
        };
        write_client(stream, &reply).await?;
        Ok(true)
    }

    /// Moves pending messages into the engine's output, names rewritten and
    /// the statements they use prepared on this session first.
    fn forward_pending(&mut self, engine: &mut EngineSession) -> Result<(), End> {
        let databases = self.ctx.registry.manages_databases();
        let one_session = self.ctx.database.scheduler.pipelines();
        let mut last = None;
        while let Some(tag) = self.pending.front().map(|message| message[0]) {
            let waits_for_answers =
                last.is_some() || !self.unit.answered() || !self.to_engine.is_empty();
            if waits_for_answers
                && self.replies.at_group_start()
                && front_command(&self.pending, &self.names, databases).is_some()
            {
                // Carried out by the gateway once what precedes it is
                // answered, if that leaves the engine idle.
                break;
            }
            if matches!(tag, b'd' | b'c' | b'f') && !self.unit.copy_in() {
                if last.is_none() && self.unit.answered() && self.to_engine.is_empty() {
                    // Left from a COPY that failed before it started:
                    // PostgreSQL ignores it outside COPY.
                    self.pending.pop_front();
                    continue;
                }
                // COPY data sent right behind its COPY (asyncpg does)
                // waits for the engine's CopyInResponse: the embedded
                // engine reads it only once COPY has started.
                break;
            }
            let mut message = self.pending.pop_front().expect("front exists");
            if one_session {
                message = snapshots::refuse_export(message);
            }
            if tag == b'X' {
                self.client_done = true;
                self.pending.clear();
                break;
            }
            self.note_session_changes(&message);
            let unit_start = !self.unit_ran && engine.status() == b'I' && self.unit.answered();
            self.ctx.activity.forwarded(unit_start);
            self.unit_ran = true;
            let planned = self.names.plan(message).map_err(End::Fatal)?;
            self.keep_for_retry(tag, &planned);
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

    /// Keeps a copy of the messages of the last group sent, to send them
    /// again if the engine lost a statement they use (see
    /// `ReplyFilter::take_retry`); not for groups that carry COPY data or
    /// large messages, which are not worth holding twice.
    fn keep_for_retry(&mut self, tag: u8, planned: &Planned) {
        if self.replies.at_group_start() {
            self.last_group.clear();
            self.replies.retry_allowed = true;
        }
        if matches!(tag, b'd' | b'c' | b'f') || planned.message.len() > MAX_KEPT_FOR_RETRY {
            self.replies.retry_allowed = false;
            self.last_group.clear();
        } else if self.replies.retry_allowed {
            self.last_group.push(planned.clone());
        }
    }

    /// Sends the last group again: the engine had lost a statement of the
    /// gateway's that it uses, and nothing of it ran.
    fn send_again(&mut self, statement: &[u8]) -> Result<(), End> {
        warn!(
            client = self.ctx.key.process_id,
            "the engine had lost prepared statement \"{}\", which pgshare had prepared on it; preparing it again and running the client's messages again",
            String::from_utf8_lossy(statement)
        );
        let Some(engine) = leased(&mut self.lease) else {
            return Err(End::Fatal(self.ctx.database.lost()));
        };
        for planned in std::mem::take(&mut self.last_group) {
            place(
                planned,
                &mut engine.statements,
                &mut self.replies,
                &mut self.to_engine,
                false,
            );
        }
        // Once only: a second loss reaches the client.
        self.replies.retry_allowed = false;
        Ok(())
    }

    /// Notes what forwarding `message` may change in the client's session:
    /// a query by its SQL, a `Bind` by the statement it runs (prepared in
    /// this unit of work or an earlier one).
    fn note_session_changes(&mut self, message: &[u8]) {
        let mut reader = Reader::new(frame::body(message));
        let from_query;
        let effects = match message[0] {
            b'Q' => {
                let Ok(sql) = reader.cstr() else { return };
                from_query = SessionEffects::of_sql(sql);
                &from_query
            }
            b'B' => {
                let Ok(statement) = reader.cstr().and_then(|_portal| reader.cstr()) else {
                    return;
                };
                match self.names.effects_of(statement) {
                    Some(effects) => effects,
                    None => return,
                }
            }
            _ => return,
        };
        self.settings_may_change |= effects.settings;
        self.state_may_change |= effects.state;
        if effects.listens {
            self.listens_may_change = true;
            self.listened.extend(effects.listened.iter().cloned());
            self.unlistened.extend(effects.unlistened.iter().cloned());
        }
    }

    /// At the end of a unit: learns what it changed in the client's session
    /// (reserved state, settings, LISTENs) and gives the lease back unless
    /// the client holds state that reserves the engine. Returns whether the
    /// lease was given back.
    async fn end_unit<S: ClientStream>(&mut self, stream: &mut S) -> Result<bool, End> {
        let id = self.ctx.key.process_id;
        let Some(engine) = leased(&mut self.lease) else {
            return Err(self.lost());
        };
        if self.state_may_change || (self.pinned && self.unit_ran) {
            let holds = pinning::holds_session_state(engine)
                .await
                .map_err(End::Engine)?;
            if holds && !self.pinned {
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
            let listened = std::mem::take(&mut self.listened);
            let unlistened = std::mem::take(&mut self.unlistened);
            let notifier = &self.ctx.database.notifier;
            if self.on_pooled_session {
                // LISTEN inside a transaction ran on a pooled session: move
                // what it committed to the listener session.
                let committed = listen::take_listens(engine).await.map_err(End::Engine)?;
                notifier.record(id, &committed, &unlistened);
                let mut listener = self.ctx.database.scheduler.lease_listener().await;
                if let Some(engine) = listener.session.as_mut()
                    && let Err(err) = notifier.reconcile(engine, None, &[]).await
                {
                    warn!("could not move a client's LISTENs to the listener session: {err}");
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
        if self.pinned {
            return Ok(false);
        }
        self.ctx.cancel.set_running(None);
        self.lease = None;
        self.ctx.activity.releases_engine();
        Ok(true)
    }

    /// Waits for client input, engine output or room to write to the engine,
    /// and for the timeouts that bound a unit of work.
    async fn exchange<S: ClientStream>(&mut self, stream: &mut S) -> Result<(), End> {
        let idle_limit = if self.to_engine.is_empty() && self.unit.answered() {
            self.ctx.config.idle_in_transaction_timeout
        } else {
            None
        };
        let shutdown_deadline = *self.ctx.shutdown.borrow();
        let Some(engine) = leased(&mut self.lease) else {
            return Err(self.lost());
        };
        self.ctx
            .activity
            .engine_state(&self.unit, engine.status(), self.pinned);
        let mut retry = None;
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
                retry = self.replies.take_retry();
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
                let (message, how) = if engine.status() == b'I' {
                    (
                        "terminating connection: it kept the shared engine reserved (temporary tables, advisory locks or held cursors) while idle",
                        "reserved",
                    )
                } else {
                    (
                        "terminating connection due to idle-in-transaction timeout",
                        "idle in a transaction",
                    )
                };
                let detail = format!(
                    "Client {} held the shared engine of database \"{}\" for {:.1} s, {how} for the last {} s, while {} other clients waited.",
                    self.ctx.key.process_id,
                    self.ctx.database.name,
                    self.leased_at.elapsed().as_secs_f64(),
                    idle_limit.unwrap_or_default().as_secs(),
                    self.ctx.activity.others_waiting(),
                );
                return Err(End::Fatal(PgError::fatal(
                    sqlstate::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
                    message,
                )
                .with_detail(detail)
                .with_hint("the engine is shared: a client may not hold it idle for longer than idle_in_transaction_timeout; commit or roll back promptly, or use autocommit (see the README's section on drivers)")));
            }
        }
        if let Some(statement) = retry {
            self.send_again(&statement)?;
        }
        Ok(())
    }
}

/// The engine session a lease holds, if it still has one.
fn leased(lease: &mut Option<Lease>) -> Option<&mut EngineSession> {
    lease.as_mut().and_then(|lease| lease.session.as_mut())
}

/// Completes at `deadline`, or never without one.
async fn wait_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
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
