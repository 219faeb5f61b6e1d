//! Who runs on the engine session, in arrival order.
//!
//! One driver task per engine session takes requests first come, first served.
//! A request is either
//!
//! - an **exclusive lease**: the client gets the session itself until its unit
//!   of work ends (a transaction, COPY, an unfinished extended sequence), or
//! - a **pipelined unit**: whole, self-contained units of work that are known
//!   to start and end with the engine idle (single autocommit statements). The
//!   driver writes them to the engine back to back, without waiting for the
//!   previous answer, and routes each answer to its client. The engine runs them
//!   in exactly the order the lease queue would have, only without the idle gap
//!   between two clients' units.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::engine::EngineSession;
use crate::session::cleanup::query;
use crate::session::listen::Notifier;
use crate::session::settings::Settings;

/// What a pipelined unit's client receives, in order.
pub enum UnitEvent {
    /// Engine output for the unit.
    Output(BytesMut),
    /// The unit's last `ReadyForQuery` was delivered.
    Done,
    /// The engine session failed.
    Failed(io::Error),
}

/// Whole units of work to run back to back.
pub struct PipelinedUnits {
    pub bytes: BytesMut,
    /// How many `ReadyForQuery` messages end them.
    pub ready_count: u32,
    /// The client's settings, which the engine must carry when they run.
    pub settings: Arc<Settings>,
    /// The client's process id, for the notifications its units send.
    pub client: i32,
    pub events: mpsc::UnboundedSender<UnitEvent>,
    /// Set by whoever acts first: the driver when it writes the units to the
    /// engine, or the client when it withdraws them (cancel, wait timeout).
    pub taken: Arc<AtomicBool>,
}

enum Request {
    Exclusive(oneshot::Sender<Lease>),
    Pipelined(PipelinedUnits),
}

/// The engine session, lent to one client until dropped. `session` is `None`
/// when the engine failed or was shut down; setting it to `None` reports the
/// session broken.
pub struct Lease {
    pub session: Option<EngineSession>,
    home: Option<oneshot::Sender<Option<EngineSession>>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            let _ = home.send(self.session.take());
        }
    }
}

pub struct Scheduler {
    requests: mpsc::UnboundedSender<Request>,
}

impl Scheduler {
    /// Starts the driver task for `session`.
    pub fn start(session: EngineSession, notifier: Arc<Notifier>) -> Self {
        let (requests, receiver) = mpsc::unbounded_channel();
        tokio::spawn(drive(Some(session), receiver, notifier));
        Self { requests }
    }

    /// Waits for the exclusive lease, behind everyone who asked earlier.
    /// Dropping the future before it completes leaves the queue.
    pub async fn lease(&self) -> Lease {
        let (grant, granted) = oneshot::channel();
        if self.requests.send(Request::Exclusive(grant)).is_err() {
            return Lease {
                session: None,
                home: None,
            };
        }
        granted.await.unwrap_or(Lease {
            session: None,
            home: None,
        })
    }

    /// Queues pipelined units; their events arrive on `units.events`.
    pub fn submit(&self, units: PipelinedUnits) {
        if let Err(mpsc::error::SendError(Request::Pipelined(units))) =
            self.requests.send(Request::Pipelined(units))
        {
            let _ = units.events.send(UnitEvent::Failed(gone()));
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the engine session is closed")
}

/// A pipelined unit written to the engine and not yet fully answered.
struct InFlight {
    ready_left: u32,
    /// The client whose unit it is; `None` for the gateway's own.
    client: Option<i32>,
    /// Where its answer goes; `None` for the gateway's own settings switch.
    events: Option<mpsc::UnboundedSender<UnitEvent>>,
}

async fn drive(
    mut session: Option<EngineSession>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    notifier: Arc<Notifier>,
) {
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut to_engine = BytesMut::new();
    // An exclusive request waits here until everything in flight is answered.
    let mut exclusive: Option<oneshot::Sender<Lease>> = None;
    loop {
        if in_flight.is_empty()
            && let Some(grant) = exclusive.take()
        {
            session = lend(session, grant).await;
            continue;
        }
        let Some(engine) = session.as_mut() else {
            // No engine: answer everything with a failure.
            match requests.recv().await {
                Some(Request::Exclusive(grant)) => drop(grant.send(Lease {
                    session: None,
                    home: None,
                })),
                Some(Request::Pipelined(units)) => {
                    let _ = units.events.send(UnitEvent::Failed(gone()));
                }
                None => return,
            }
            continue;
        };
        let accepting = exclusive.is_none();
        let result: io::Result<()> = tokio::select! {
            request = requests.recv(), if accepting => {
                match request {
                    None if in_flight.is_empty() => return,
                    None => Ok(()),
                    Some(Request::Exclusive(grant)) => {
                        exclusive = Some(grant);
                        Ok(())
                    }
                    Some(Request::Pipelined(units)) => {
                        if !units.taken.swap(true, Ordering::SeqCst) {
                            if let Some(switch) = units.settings.switch_from(&engine.settings) {
                                // The switch's answer goes to no one.
                                to_engine.extend_from_slice(&switch);
                                in_flight.push_back(InFlight {
                                    ready_left: 1,
                                    client: None,
                                    events: None,
                                });
                                engine.settings = units.settings.clone();
                            }
                            to_engine.extend_from_slice(&units.bytes);
                            in_flight.push_back(InFlight {
                                ready_left: units.ready_count,
                                client: Some(units.client),
                                events: Some(units.events),
                            });
                        }
                        Ok(())
                    }
                }
            }
            sent = engine.output.write_buf(&mut to_engine), if !to_engine.is_empty() => sent.map(drop),
            // Read even when nothing is in flight: a server sends the
            // notifications of other sessions while this one is idle.
            filled = engine.input.fill() => match filled {
                Ok(()) => route(engine, &mut in_flight, &notifier).await,
                Err(err) => Err(err),
            },
        };
        if let Err(err) = result {
            warn!(
                "the engine session failed: {err}; its clients get errors until pgshare is restarted"
            );
            for events in in_flight.drain(..).filter_map(|unit| unit.events) {
                let _ = events.send(UnitEvent::Failed(io::Error::new(
                    err.kind(),
                    err.to_string(),
                )));
            }
            to_engine.clear();
            session = None;
        }
    }
}

/// Lends the session to an exclusive client and waits until it comes back.
async fn lend(
    session: Option<EngineSession>,
    grant: oneshot::Sender<Lease>,
) -> Option<EngineSession> {
    let (home, returned) = oneshot::channel();
    let lease = Lease {
        session,
        home: Some(home),
    };
    // A client that stopped waiting drops the lease at once, which sends the
    // session straight back.
    drop(grant.send(lease));
    returned.await.unwrap_or(None)
}

/// Output that answers no one: notifications go to their listeners; anything
/// else (a server saying it shuts down, say) is logged.
fn route_unsolicited(engine: &mut EngineSession, notifier: &Notifier) -> io::Result<()> {
    let mut other = None;
    let output = engine.input.take_complete(|tag| {
        if tag != b'A' {
            other = Some(tag);
        }
    })?;
    let left = notifier.route(output, None);
    if let Some(tag) = other {
        warn!(
            "the engine sent a message of type {} while idle: {}",
            tag as char,
            if tag == b'E' || tag == b'N' {
                crate::engine::error_message(&left)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// Hands buffered engine output to the pipelined units it answers.
async fn route(
    engine: &mut EngineSession,
    in_flight: &mut VecDeque<InFlight>,
    notifier: &Notifier,
) -> io::Result<()> {
    if in_flight.is_empty() {
        return route_unsolicited(engine, notifier);
    }
    while let Some(unit) = in_flight.front_mut() {
        let (output, ready_seen, notifications) = engine.input.take_until_ready(unit.ready_left)?;
        if output.is_empty() {
            return Ok(());
        }
        let output = if notifications {
            notifier.route(output, unit.client)
        } else {
            output
        };
        unit.ready_left -= ready_seen;
        // A client that left only loses its own answer; a slow one has its
        // answer queued, so it never holds up the others.
        if let Some(events) = &unit.events {
            let _ = events.send(UnitEvent::Output(output));
        }
        if unit.ready_left > 0 {
            return Ok(());
        }
        let unit = in_flight.pop_front().expect("front unit exists");
        if let Some(events) = unit.events {
            let _ = events.send(UnitEvent::Done);
        }
        if in_flight.is_empty() && engine.status() != b'I' {
            // Pipelined units are chosen to end idle; never leave a stray
            // transaction to the next client if one did not.
            warn!("a pipelined unit left the engine in a transaction; rolling it back");
            engine.run_discarding(&query(b"ROLLBACK"), 1).await?;
        }
    }
    Ok(())
}
