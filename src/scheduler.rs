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
//!
//! A unit written to the engine can no longer be taken back. So behind a unit
//! that has been running for longer than `WRITE_BEHIND_AT_MOST` (a long
//! statement), others wait in the driver instead: there a cancel request or
//! the client's wait timeout still withdraws them, as from the lease queue.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::activity::ClientActivity;
use crate::engine::EngineSession;
use crate::engine::connect::{Connect, connect_retrying};
use crate::lease::Lease;
use crate::pool::{Pool, PoolLimits};
use crate::session::cleanup::query;
use crate::session::listen::Notifier;
use crate::session::names::Planned;
use crate::session::names::Undone;
use crate::session::placement::place;
use crate::session::replies::{Answer, ReplyFilter};
use crate::session::settings::Settings;

/// What a pipelined unit's client receives, in order.
pub enum UnitEvent {
    /// Engine output for the unit.
    Output(BytesMut),
    /// A message of the unit failed or was skipped: the client's names
    /// must say so.
    Undone(Undone),
    /// The unit's last `ReadyForQuery` was delivered.
    Done,
    /// The engine session failed.
    Failed(io::Error),
    /// No engine session could be had; nothing ran.
    Refused,
    /// More than `MAX_QUEUED_ANSWER` bytes of the answer waited for the
    /// client to read them; the rest is dropped.
    Overflow,
}

/// Bytes of answers a pipelined unit may have waiting for its client: a
/// client that does not read cannot make the gateway hold more.
pub const MAX_QUEUED_ANSWER: usize = 32 << 20;

/// Pipelined units are written behind the one the engine runs only while it
/// has run for less than this; ordinary statements take microseconds, so
/// only a long one makes the next units wait where they can be cancelled.
const WRITE_BEHIND_AT_MOST: Duration = Duration::from_millis(2);

const SYNC: &[u8] = b"S\0\0\0\x04";

/// Whole units of work to run back to back.
#[derive(Clone)]
pub struct PipelinedUnits {
    /// The client's messages, with what they need of the session.
    pub messages: Vec<Planned>,
    /// They prepare statements and end with a `Flush`: the engine gets a
    /// `Sync` after them, whose answer the client does not see.
    pub closing_sync: bool,
    /// The client's settings, which the engine must carry when they run.
    pub settings: Arc<Settings>,
    /// The client's process id, for the notifications its units send.
    pub client: i32,
    pub events: mpsc::UnboundedSender<UnitEvent>,
    /// Bytes of `Output` events sent and not yet written to the client.
    pub queued: Arc<AtomicUsize>,
    /// Set by whoever acts first: the driver when it writes the units to the
    /// engine, or the client when it withdraws them (cancel, wait timeout).
    pub taken: Arc<AtomicBool>,
    /// The client's activity record, told when the units are taken.
    pub activity: Arc<ClientActivity>,
    /// They run again because the engine had lost a statement they use
    /// (see `ReplyFilter::take_retry`); they do not run a third time.
    pub retried: bool,
}

enum Request {
    Exclusive(oneshot::Sender<Lease>),
    Pipelined(PipelinedUnits),
}

pub struct Scheduler {
    kind: Kind,
}

enum Kind {
    /// Driver tasks own the sessions; units can be pipelined.
    Driven(mpsc::UnboundedSender<Request>),
    /// Clients take sessions from the pool directly; LISTEN and UNLISTEN run
    /// on one more session, kept by a driver that reads it while idle.
    Pooled {
        pool: Arc<Pool>,
        listener: mpsc::UnboundedSender<Request>,
    },
}

/// How a driver gets a new session when it has none (the engine failed, or
/// none was there to begin with).
#[derive(Clone)]
pub enum Reopen {
    /// It cannot: every request is refused (an embedded engine).
    Never,
    /// By connecting, trying again until the request is abandoned (an
    /// upstream server that restarts).
    Retrying(Connect),
    /// By one call that waits as long as it sees fit; when it fails, every
    /// request waiting is refused (a host that may come back).
    Waiting(Connect),
}

impl Scheduler {
    /// Starts the driver task for an engine's one session, or for sessions
    /// that `reopen` opens when needed.
    pub fn start(session: Option<EngineSession>, notifier: Arc<Notifier>, reopen: Reopen) -> Self {
        Self {
            kind: Kind::Driven(spawn_driver(session, notifier, reopen)),
        }
    }

    /// A pool of up to `size` sessions that clients take directly, one unit
    /// of work at a time (an upstream server's transaction pooling).
    pub fn pooled(
        first: EngineSession,
        connect: Connect,
        limits: PoolLimits,
        notifier: Arc<Notifier>,
    ) -> Self {
        Self {
            kind: Kind::Pooled {
                pool: Pool::new(first, connect.clone(), limits),
                listener: spawn_driver(None, notifier, Reopen::Retrying(connect)),
            },
        }
    }

    /// Whether self-contained units may be pipelined (`submit`). A pool runs
    /// every unit on a session of its own instead.
    pub fn pipelines(&self) -> bool {
        matches!(self.kind, Kind::Driven(_))
    }

    /// The pool of server sessions, when clients take sessions directly.
    pub fn pool(&self) -> Option<&Arc<Pool>> {
        match &self.kind {
            Kind::Pooled { pool, .. } => Some(pool),
            Kind::Driven(_) => None,
        }
    }

    /// Waits for an exclusive lease, behind everyone who asked earlier.
    /// Dropping the future before it completes leaves the queue.
    pub async fn lease(&self) -> Lease {
        let requests = match &self.kind {
            Kind::Driven(requests) => requests,
            Kind::Pooled { pool, .. } => return pool.lease().await,
        };
        exclusive(requests).await
    }

    /// Waits for the session that LISTEN and UNLISTEN run on: with a pool,
    /// the one session whose notifications are read while idle.
    pub async fn lease_listener(&self) -> Lease {
        match &self.kind {
            Kind::Driven(requests)
            | Kind::Pooled {
                listener: requests, ..
            } => exclusive(requests).await,
        }
    }

    /// Queues pipelined units; their events arrive on `units.events`.
    pub fn submit(&self, units: PipelinedUnits) {
        let Kind::Driven(requests) = &self.kind else {
            let _ = units.events.send(UnitEvent::Failed(gone()));
            return;
        };
        if let Err(mpsc::error::SendError(Request::Pipelined(units))) =
            requests.send(Request::Pipelined(units))
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
    /// Hides the answers to the messages the gateway added.
    replies: ReplyFilter,
    /// See `PipelinedUnits::queued`.
    queued: Arc<AtomicUsize>,
    /// The units again, for units that use statements of the gateway's: run
    /// once more if the engine lost one of them.
    again: Option<PipelinedUnits>,
}

/// Asks a driver for its session, behind everyone who asked earlier.
async fn exclusive(requests: &mpsc::UnboundedSender<Request>) -> Lease {
    let (grant, granted) = oneshot::channel();
    if requests.send(Request::Exclusive(grant)).is_err() {
        return Lease::none();
    }
    granted.await.unwrap_or_else(|_| Lease::none())
}

fn spawn_driver(
    session: Option<EngineSession>,
    notifier: Arc<Notifier>,
    reopen: Reopen,
) -> mpsc::UnboundedSender<Request> {
    let (requests, receiver) = mpsc::unbounded_channel();
    tokio::spawn(drive(session, receiver, notifier, reopen));
    requests
}

impl Request {
    /// No one waits for the answer any more.
    fn abandoned(&self) -> bool {
        match self {
            Request::Exclusive(grant) => grant.is_closed(),
            Request::Pipelined(units) => {
                units.events.is_closed() || units.taken.load(Ordering::SeqCst)
            }
        }
    }
}

/// Answers a request that cannot be served: there is no engine session.
fn refuse(request: Request) {
    match request {
        Request::Exclusive(grant) => drop(grant.send(Lease::none())),
        Request::Pipelined(units) => {
            let _ = units.events.send(UnitEvent::Refused);
        }
    }
}

/// Pipelined units accepted and not written yet, because the engine runs a
/// long unit: they are written once it ends.
#[derive(Default)]
struct Held {
    units: VecDeque<PipelinedUnits>,
    /// When the unit at the front of the in-flight ones started to run
    /// (when the one before it ended).
    front_since: Option<Instant>,
}

impl Held {
    /// Whether a new unit may be written behind those in flight now.
    fn may_write(&self, in_flight: &VecDeque<InFlight>) -> bool {
        in_flight.is_empty()
            || (self.units.is_empty()
                && self
                    .front_since
                    .is_none_or(|since| since.elapsed() < WRITE_BEHIND_AT_MOST))
    }

    /// Writes the held units once the engine is past the long unit: behind
    /// a unit that has just started, or with nothing in flight.
    fn release(
        &mut self,
        engine: &mut EngineSession,
        in_flight: &mut VecDeque<InFlight>,
        to_engine: &mut BytesMut,
    ) {
        let young = self
            .front_since
            .is_none_or(|since| since.elapsed() < WRITE_BEHIND_AT_MOST);
        if !in_flight.is_empty() && !young {
            return;
        }
        while let Some(units) = self.units.pop_front() {
            write_units(units, engine, in_flight, to_engine, self);
        }
    }

    /// The units in flight ended at `route`: the next one starts now.
    fn front_ended(&mut self) {
        self.front_since = Some(Instant::now());
    }
}

/// Takes a request on: an exclusive one waits in `exclusive` until nothing is
/// in flight or held; pipelined units are written behind what is in flight,
/// or held behind a long unit.
fn accept(
    request: Request,
    engine: &mut EngineSession,
    in_flight: &mut VecDeque<InFlight>,
    to_engine: &mut BytesMut,
    exclusive: &mut Option<oneshot::Sender<Lease>>,
    held: &mut Held,
) {
    match request {
        Request::Exclusive(grant) => *exclusive = Some(grant),
        Request::Pipelined(units) if held.may_write(in_flight) => {
            write_units(units, engine, in_flight, to_engine, held);
        }
        Request::Pipelined(units) => held.units.push_back(units),
    }
}

/// Writes pipelined units to the engine, unless their client withdrew them.
fn write_units(
    units: PipelinedUnits,
    engine: &mut EngineSession,
    in_flight: &mut VecDeque<InFlight>,
    to_engine: &mut BytesMut,
    held: &mut Held,
) {
    if units.taken.swap(true, Ordering::SeqCst) {
        return;
    }
    if in_flight.is_empty() {
        held.front_ended();
    }
    units.activity.unit_taken();
    if let Some(switch) = units.settings.switch_from(&engine.settings) {
        // The switch's answer goes to no one.
        to_engine.extend_from_slice(&switch);
        in_flight.push_back(InFlight {
            ready_left: 1,
            client: None,
            events: None,
            replies: ReplyFilter::default(),
            queued: Arc::default(),
            again: None,
        });
        engine.settings = units.settings.clone();
    }
    let uses_statements = units
        .messages
        .iter()
        .any(|planned| !planned.needs.is_empty());
    let again = (uses_statements && !units.retried).then(|| PipelinedUnits {
        retried: true,
        taken: Arc::default(),
        ..units.clone()
    });
    // Pipelined units start with the session idle.
    let mut replies = ReplyFilter::default();
    replies.retry_allowed = again.is_some();
    for (index, planned) in units.messages.into_iter().enumerate() {
        place(
            planned,
            &mut engine.statements,
            &mut replies,
            to_engine,
            index == 0,
        );
    }
    if units.closing_sync {
        to_engine.extend_from_slice(SYNC);
        replies.sent(b'S', Answer::Hide, Vec::new(), Vec::new());
    }
    in_flight.push_back(InFlight {
        ready_left: 1 + replies.hidden_pending(),
        client: Some(units.client),
        events: Some(units.events),
        replies,
        queued: units.queued,
        again,
    });
}

async fn drive(
    mut session: Option<EngineSession>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    notifier: Arc<Notifier>,
    reopen: Reopen,
) {
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut held = Held::default();
    let mut to_engine = BytesMut::new();
    // An exclusive request waits here until everything in flight is answered.
    let mut exclusive: Option<oneshot::Sender<Lease>> = None;
    loop {
        if in_flight.is_empty()
            && held.units.is_empty()
            && let Some(grant) = exclusive.take()
        {
            session = lend(session, grant).await;
            continue;
        }
        let Some(engine) = session.as_mut() else {
            // No session: open one for the next request, if this engine can.
            let Some(request) = requests.recv().await else {
                return;
            };
            session = match &reopen {
                Reopen::Retrying(connect) => {
                    connect_retrying(connect, || request.abandoned()).await
                }
                Reopen::Waiting(connect) => connect().await.ok(),
                Reopen::Never => None,
            };
            match session.as_mut() {
                Some(engine) => accept(
                    request,
                    engine,
                    &mut in_flight,
                    &mut to_engine,
                    &mut exclusive,
                    &mut held,
                ),
                None => {
                    refuse(request);
                    if matches!(reopen, Reopen::Waiting(_)) {
                        // They waited as long as this one did.
                        while let Ok(request) = requests.try_recv() {
                            refuse(request);
                        }
                    }
                }
            }
            continue;
        };
        let accepting = exclusive.is_none();
        let result: io::Result<()> = tokio::select! {
            request = requests.recv(), if accepting => {
                match request {
                    None if in_flight.is_empty() && held.units.is_empty() => return,
                    None => {}
                    Some(request) => accept(request, engine, &mut in_flight, &mut to_engine, &mut exclusive, &mut held),
                }
                Ok(())
            }
            sent = engine.output.write_buf(&mut to_engine), if !to_engine.is_empty() => sent.map(drop),
            // Read even when nothing is in flight: a server sends the
            // notifications of other sessions while this one is idle.
            filled = engine.input.fill() => match filled {
                Ok(()) => {
                    let routed = route(engine, &mut in_flight, &notifier, &mut held).await;
                    if routed.is_ok() && !held.units.is_empty() {
                        held.release(engine, &mut in_flight, &mut to_engine);
                    }
                    routed
                }
                Err(err) => Err(err),
            },
        };
        if let Err(err) = result {
            warn!("an engine session failed: {err}; the clients whose work was on it get an error");
            let held_events = held.units.drain(..).map(|units| units.events);
            let in_flight_events = in_flight.drain(..).filter_map(|unit| unit.events);
            for events in in_flight_events.chain(held_events) {
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
    let lease = Lease::new(session, move |session| {
        let _ = home.send(session);
    });
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
    held: &mut Held,
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
        let output = unit.replies.filter(output, |_| {});
        for undone in unit.replies.take_undone() {
            match undone {
                Undone::NotPrepared(name) => engine.statements.remove(&name),
                client_side => {
                    if let Some(events) = &unit.events {
                        let _ = events.send(UnitEvent::Undone(client_side));
                    }
                }
            }
        }
        unit.ready_left -= ready_seen;
        // A client that left only loses its own answer; a slow one has its
        // answer queued, so it never holds up the others.
        if let Some(events) = &unit.events {
            let queued = unit.queued.fetch_add(output.len(), Ordering::SeqCst) + output.len();
            if queued > MAX_QUEUED_ANSWER {
                warn!(
                    client = unit.client,
                    "a client did not read {queued} bytes of answers; disconnecting it and dropping the rest"
                );
                let _ = events.send(UnitEvent::Overflow);
                unit.events = None;
            } else {
                let _ = events.send(UnitEvent::Output(output));
            }
        }
        if unit.ready_left > 0 {
            return Ok(());
        }
        let mut unit = in_flight.pop_front().expect("front unit exists");
        held.front_ended();
        if let Some(statement) = unit.replies.take_retry()
            && let Some(again) = unit.again.take()
        {
            warn!(
                client = unit.client,
                "the engine had lost prepared statement \"{}\", which pgshare had prepared on it; preparing it again and running the client's statement again",
                String::from_utf8_lossy(&statement)
            );
            // Next, before anything that arrived later.
            held.units.push_front(again);
        } else if let Some(events) = unit.events {
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
