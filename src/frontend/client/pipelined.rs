//! A unit of work pipelined behind other clients' units: the scheduler
//! writes it to the engine right behind the units ahead of it and routes the
//! answer back, so the engine never idles while work waits.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::mpsc;

use crate::frontend::transport::ClientStream;
use crate::protocol::backend::ready_for_query;
use crate::scheduler::{PipelinedUnits, UnitEvent};
use crate::session::names::Undone;
use crate::session::pipeline::Pipelinable;

use super::{
    Client, End, admin_shutdown, cancelled_by_user, not_reading, shutting_down, wait_timed_out,
    write_client,
};

impl Client {
    /// Runs the one self-contained unit in `pending` pipelined behind other
    /// clients' units, relaying the engine's answer as it comes.
    pub(super) async fn run_pipelined<S: ClientStream>(
        &mut self,
        stream: &mut S,
        kind: Pipelinable,
    ) -> Result<(), End> {
        let _unit = self.ctx.activity.pipelined_unit();
        let mut messages = Vec::with_capacity(self.pending.len());
        while let Some(message) = self.pending.pop_front() {
            messages.push(self.names.plan(message).map_err(End::Fatal)?);
        }
        let (events, mut received) = mpsc::unbounded_channel();
        let taken = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicUsize::new(0));
        self.ctx.database.scheduler.submit(PipelinedUnits {
            messages,
            closing_sync: kind == Pipelinable::Prepares,
            settings: self.settings.clone(),
            client: self.ctx.key.process_id,
            events,
            queued: queued.clone(),
            taken: taken.clone(),
            activity: self.ctx.activity.handle(),
            retried: false,
        });
        let limit = self.ctx.config.query_wait_timeout;
        let cancel = self.ctx.cancel.clone();
        let first = cancel.cancellable(async {
            match limit {
                Some(limit) => tokio::time::timeout(limit, received.recv()).await.ok(),
                None => Some(received.recv().await),
            }
        });
        let first = tokio::select! {
            first = first => first.map(|event| event.map(Ok)),
            _ = shutting_down(&mut self.ctx.shutdown) => Some(Some(Err(()))),
        };
        let mut event = match first {
            Some(Some(Ok(event))) => event,
            interrupted => {
                if !taken.swap(true, Ordering::SeqCst) {
                    // Withdrawn before the engine got it: nothing ran.
                    let error = match interrupted {
                        None => cancelled_by_user(),
                        Some(None) => wait_timed_out(&self.ctx),
                        Some(Some(_)) => return Err(End::Fatal(admin_shutdown())),
                    };
                    let mut out = error.to_bytes();
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
                Some(UnitEvent::Undone(Undone::SkipToSync)) => self.skipping_to_sync = true,
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
}
