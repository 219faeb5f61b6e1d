//! Between units of work: the client holds no engine session. Its next unit
//! is read whole, then answered by the gateway, pipelined behind other
//! clients' units, or given the engine session (a lease) for itself.
//!
//! While it waits for the lease it is still read, so that a client that
//! disconnects leaves the queue at once, and a cancel request takes its unit
//! out of the queue.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tracing::warn;

use crate::lease::Lease;
use crate::protocol::backend::{push_message, ready_for_query};
use crate::protocol::error::PgError;
use crate::protocol::frame::{self, Reader};
use crate::session::gateway_commands::{GatewayCommand, front_command};
use crate::session::listen;
use crate::session::pipeline::single_pipelinable_unit;
use crate::session::reset::ResetCommand;
use crate::session::settings;

use super::commands::{answer_with_tag, run_database_command};
use super::{
    Client, End, Step, admin_shutdown, cancelled_by_user, shutting_down, wait_timed_out,
    write_client,
};
use crate::frontend::transport::ClientStream;

/// Messages after which a client may wait for an answer: a unit of work is
/// not sent to the scheduler before one of these arrives.
const UNIT_BOUNDARIES: &[u8] = b"QSHFXdcf";
/// Stop reading a client waiting for the lease once this many messages queue.
const MAX_QUEUED_MESSAGES: usize = 4096;

impl Client {
    /// One step between units of work.
    pub(super) async fn between_units<S: ClientStream>(
        &mut self,
        stream: &mut S,
    ) -> Result<Step, End> {
        if self.pending.is_empty() {
            if self.client_done {
                return Ok(Step::Leave);
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
            return Ok(Step::Continue);
        }
        if self.skipping_to_sync {
            self.skip_to_sync(stream).await?;
            return Ok(Step::Continue);
        }
        if self.pending[0][0] == b'X' {
            return Ok(Step::Leave);
        }
        if matches!(self.pending[0][0], b'd' | b'c' | b'f') {
            // COPY data left from a COPY that failed before it started:
            // PostgreSQL ignores it outside COPY.
            self.pending.pop_front();
            return Ok(Step::Continue);
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
            // The rest of this unit is still on its way: read it before
            // asking for the engine.
            let read = stream.read_buf(&mut self.inbuf).await;
            self.take_client_input(read)?;
            return Ok(Step::Continue);
        }
        if self.answer_without_engine(stream).await? {
            return Ok(Step::Continue);
        }
        let database = self.ctx.database.clone();
        if !database.scheduler.pipelines()
            && only_named_parses(&self.pending)
            && !self.needs_live_queries_schema()
        {
            self.answer_parses(stream).await?;
            return Ok(Step::Continue);
        }
        if self.ctx.settings_checked
            && database.scheduler.pipelines()
            && !self.needs_live_queries_schema()
            && let Some(kind) = single_pipelinable_unit(&self.pending, &self.names)
            && self.ctx.activity.admit_now()
        {
            self.run_pipelined(stream, kind).await?;
            return Ok(Step::Continue);
        }
        match self.acquire(stream).await? {
            Some(lease) if lease.session.is_none() => {
                let error = database.unavailable();
                if error.is_fatal() {
                    return Err(End::Fatal(error));
                }
                self.reject_unit(stream, error).await?;
            }
            Some(lease) => self.start_unit(lease).await?,
            None => {}
        }
        Ok(Step::Continue)
    }

    /// Carries out a command at the front that needs no engine session:
    /// `CREATE DATABASE`, `DROP DATABASE` and `DEALLOCATE ALL`.
    async fn answer_without_engine<S: ClientStream>(
        &mut self,
        stream: &mut S,
    ) -> Result<bool, End> {
        let registry = &self.ctx.registry;
        let Some(front) = front_command(&self.pending, &self.names, registry.manages_databases())
        else {
            return Ok(false);
        };
        let reply = match front.command {
            GatewayCommand::Database(command) => {
                self.take_front(front.messages)?;
                run_database_command(
                    &self.ctx.registry,
                    &self.ctx.database,
                    command,
                    front.answered,
                    None,
                )
                .await
            }
            GatewayCommand::Reset(ResetCommand::DeallocateAll) => {
                // The client's statements are forgotten; copies of its own
                // on a session, which nothing names any more, are closed by
                // the session's limit.
                self.take_front(front.messages)?;
                self.names.take_statements();
                answer_with_tag(
                    front.answered,
                    None,
                    ResetCommand::DeallocateAll.tag(),
                    b'I',
                )
            }
            // Needs the engine session: carried out under the lease.
            GatewayCommand::Reset(ResetCommand::DiscardAll) => return Ok(false),
        };
        write_client(stream, &reply).await?;
        Ok(true)
    }

    /// Drops the first `count` messages, which the gateway answers itself;
    /// a `Parse` among them gives the client its statement, as PostgreSQL
    /// would.
    pub(super) fn take_front(&mut self, count: usize) -> Result<(), End> {
        for message in self.pending.drain(..count).collect::<Vec<_>>() {
            if message[0] == b'P' {
                self.names.plan(message).map_err(End::Fatal)?;
            }
        }
        Ok(())
    }

    /// Takes a lease on: the engine gets the client's settings first.
    async fn start_unit(&mut self, mut lease: Lease) -> Result<(), End> {
        if let Some(engine) = lease.session.as_mut() {
            let id = self.ctx.key.process_id;
            if let Err(error) = settings::switch(engine, &self.settings)
                .await
                .map_err(End::Engine)?
            {
                if !self.ctx.settings_checked {
                    // A startup parameter the engine refuses, found at
                    // first use: refused as at login.
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
        self.leased_at = Instant::now();
        Ok(())
    }

    /// Waits for the lease while still reading the client, so that a client
    /// that disconnects leaves the queue at once. Returns `None` when the
    /// wait ended without a lease (cancelled, timed out, or the client left).
    async fn acquire<S: ClientStream>(&mut self, stream: &mut S) -> Result<Option<Lease>, End> {
        let database = self.ctx.database.clone();
        let limit = self.ctx.config.query_wait_timeout;
        let cancel = self.ctx.cancel.clone();
        let waiting = self.ctx.activity.wait_for_engine();
        let for_listen = self.pending.iter().any(|message| {
            let mut reader = Reader::new(frame::body(message));
            match message[0] {
                b'Q' => reader.cstr().is_ok_and(listen::may_change_listens),
                b'P' => reader
                    .cstr()
                    .and_then(|_name| reader.cstr())
                    .is_ok_and(listen::may_change_listens),
                b'B' => reader
                    .cstr()
                    .and_then(|_portal| reader.cstr())
                    .is_ok_and(|statement| {
                        self.names
                            .effects_of(statement)
                            .is_some_and(|effects| effects.listens)
                    }),
                _ => false,
            }
        });
        let wait = cancel.cancellable(async {
            let lease = async {
                waiting.admitted().await;
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
                            self.ctx.activity.holds_engine(lease.session.as_ref());
                            self.on_pooled_session = !for_listen && !database.scheduler.pipelines();
                            Ok(Some(lease))
                        }
                        Some(None) => {
                            self.reject_unit(stream, wait_timed_out(&self.ctx)).await?;
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

    /// Answers the first unit of work waiting in `pending` with `err` without
    /// running it, as PostgreSQL answers a statement that failed.
    pub(super) async fn reject_unit<S: ClientStream>(
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
