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
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::warn;

use crate::engine::EngineSession;
use crate::session::cleanup::query;
use crate::session::listen::Notifier;
use crate::session::replies::drop_parse_completes;
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
    /// Statements the units use without creating them, with the `Parse` that
    /// creates each (engine names): sent first where the session lacks them.
    pub needs: Vec<(Vec<u8>, Bytes)>,
    /// Statements the units create and close.
    pub parses: Vec<Vec<u8>>,
    pub closes: Vec<Vec<u8>>,
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
    /// Starts the driver task for the one session of an engine that has only
    /// one (the embedded engine).
    pub fn start(session: EngineSession, notifier: Arc<Notifier>) -> Self {
        let (requests, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        tokio::spawn(drive(Some(session), receiver, notifier, None));
        Self { requests }
    }

    /// Starts `size` drivers that each open a session with `connect` when
    /// first needed, and again after theirs failed (an upstream server's
    /// pool). Requests go to whichever driver takes them first; `first` is an
    /// already open session for the first driver.
    pub fn start_pool(
        first: EngineSession,
        connect: Connect,
        size: usize,
        notifier: Arc<Notifier>,
    ) -> Self {
        let (requests, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut first = Some(first);
        for _ in 0..size.max(1) {
            tokio::spawn(drive(
                first.take(),
                receiver.clone(),
                notifier.clone(),
                Some(connect.clone()),
            ));
        }
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
    /// `Parse` messages the gateway put first, whose answers are hidden.
    added_parses: u32,
}

/// Opens a new engine session, for engines that can (an upstream server).
pub type Connect = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<EngineSession>> + Send>> + Send + Sync,
>;

/// The queue every driver of one engine takes its requests from.
type Requests = Arc<Mutex<mpsc::UnboundedReceiver<Request>>>;

async fn next_request(requests: &Requests) -> Option<Request> {
    requests.lock().await.recv().await
}

/// Answers a request that cannot be served: there is no engine session.
fn refuse(request: Request) {
    match request {
        Request::Exclusive(grant) => drop(grant.send(Lease {
            session: None,
            home: None,
        })),
        Request::Pipelined(units) => {
            let _ = units.events.send(UnitEvent::Failed(gone()));
        }
    }
}

/// Takes a request on: an exclusive one waits in `exclusive` until nothing is
/// in flight; pipelined units are written behind what is in flight.
fn accept(
    request: Request,
    engine: &mut EngineSession,
    in_flight: &mut VecDeque<InFlight>,
    to_engine: &mut BytesMut,
    exclusive: &mut Option<oneshot::Sender<Lease>>,
) {
    match request {
        Request::Exclusive(grant) => *exclusive = Some(grant),
        Request::Pipelined(units) => {
            if units.taken.swap(true, Ordering::SeqCst) {
                return;
            }
            if let Some(switch) = units.settings.switch_from(&engine.settings) {
                // The switch's answer goes to no one.
                to_engine.extend_from_slice(&switch);
                in_flight.push_back(InFlight {
                    ready_left: 1,
                    client: None,
                    events: None,
                    added_parses: 0,
                });
                engine.settings = units.settings.clone();
            }
            let mut added_parses = 0;
            for (name, parse) in units.needs {
                if engine.statements.insert(name) {
                    to_engine.extend_from_slice(&parse);
                    added_parses += 1;
                }
            }
            engine.statements.extend(units.parses);
            for name in &units.closes {
                engine.statements.remove(name);
            }
            to_engine.extend_from_slice(&units.bytes);
            in_flight.push_back(InFlight {
                ready_left: units.ready_count,
                client: Some(units.client),
                events: Some(units.events),
                added_parses,
            });
        }
    }
}

async fn drive(
    mut session: Option<EngineSession>,
    requests: Requests,
    notifier: Arc<Notifier>,
    connect: Option<Connect>,
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
            // No session: open one for the next request, if this engine can.
            let Some(request) = next_request(&requests).await else {
                return;
            };
            session = match &connect {
                Some(connect) => match connect().await {
                    Ok(session) => Some(session),
                    Err(err) => {
                        warn!("could not open an engine session: {err:#}");
                        None
                    }
                },
                None => None,
            };
            match session.as_mut() {
                Some(engine) => accept(
                    request,
                    engine,
                    &mut in_flight,
                    &mut to_engine,
                    &mut exclusive,
                ),
                None => refuse(request),
            }
            continue;
        };
        let accepting = exclusive.is_none();
        let result: io::Result<()> = tokio::select! {
            request = next_request(&requests), if accepting => {
                match request {
                    None if in_flight.is_empty() => return,
                    None => {}
                    Some(request) => accept(request, engine, &mut in_flight, &mut to_engine, &mut exclusive),
                }
                Ok(())
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
            warn!("an engine session failed: {err}; the clients whose work was on it get an error");
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
        let output = if unit.added_parses > 0 {
            drop_parse_completes(output, &mut unit.added_parses)
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
