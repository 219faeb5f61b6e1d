//! One client's record: who it is, where it connected from, and where its
//! work stands (idle, waiting for the engine, running, inside a
//! transaction, in COPY, holding the engine reserved), with the calls the
//! client loop and the scheduler make when that changes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::watch;

use crate::engine::EngineSession;
use crate::session::unit::UnitOfWork;

use super::Activity;
use super::clock::Clock;
use super::database::{DatabaseActivity, Live, SessionSeen};

/// Where a client's work stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Connected, no unit of work.
    Idle = 0,
    /// A unit of work waits for the engine (or for `RESUME`).
    Waiting = 1,
    /// The engine runs the client's unit.
    Running = 2,
    /// The client holds the engine inside a transaction, between
    /// statements.
    InTransaction = 3,
    /// The client holds the engine in `COPY FROM STDIN`.
    Copy = 4,
    /// The client holds the engine reserved between units (temporary
    /// tables, session advisory locks, `WITH HOLD` cursors).
    Reserved = 5,
}

impl ClientState {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Waiting,
            2 => Self::Running,
            3 => Self::InTransaction,
            4 => Self::Copy,
            5 => Self::Reserved,
            _ => Self::Idle,
        }
    }

    /// The client holds the engine (or a pool session).
    pub fn holds_engine(self) -> bool {
        matches!(
            self,
            Self::Running | Self::InTransaction | Self::Copy | Self::Reserved
        )
    }

    /// Time in this state is time spent running statements.
    fn is_running(self) -> bool {
        matches!(self, Self::Running | Self::Copy)
    }

    /// How the console and the metrics name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Waiting => "waiting",
            Self::Running => "running",
            Self::InTransaction => "in transaction",
            Self::Copy => "copy",
            Self::Reserved => "reserved",
        }
    }

    pub const ALL: [ClientState; 6] = [
        Self::Idle,
        Self::Waiting,
        Self::Running,
        Self::InTransaction,
        Self::Copy,
        Self::Reserved,
    ];
}

/// Who a client is and where it connected from.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The process id it got in `BackendKeyData`.
    pub id: i32,
    pub user: String,
    pub database: String,
    /// Its address, for TCP clients.
    pub peer: Option<SocketAddr>,
    /// The gateway's address it reached, for TCP clients.
    pub local: Option<SocketAddr>,
    /// The protocol and cipher of its TLS connection.
    pub tls: Option<String>,
    pub application_name: String,
}

pub struct ClientActivity {
    pub info: ClientInfo,
    pub database: Arc<DatabaseActivity>,
    clock: Clock,
    pub connected_at: SystemTime,
    state: AtomicU8,
    /// When the state last changed, a time of the activity clock.
    state_since: AtomicU64,
    /// When its current wait began; 0 when not waiting.
    wait_since: AtomicU64,
    last_request: AtomicU64,
    /// Let through the pause gate; changed under the database's lock.
    admitted: AtomicBool,
    /// As the client last learned it from a `ParameterStatus`.
    application_name: Mutex<String>,
    /// The engine session it holds or held last.
    session: Mutex<Option<SessionSeen>>,
    /// Its own view of the gateway's shutdown: set at once to disconnect
    /// just this client (`KILL`, `KILL_CLIENT`).
    shutdown: watch::Sender<Option<Instant>>,
}

impl ClientActivity {
    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Relaxed))
    }

    /// When the current state began.
    pub fn state_since(&self) -> SystemTime {
        self.clock.wall(self.state_since.load(Relaxed))
    }

    /// How long its current wait for the engine has lasted, in
    /// microseconds; 0 when not waiting.
    pub fn waited_micros(&self) -> u64 {
        self.clock.since(self.wait_since.load(Relaxed))
    }

    /// When it last sent something.
    pub fn last_request(&self) -> SystemTime {
        match self.last_request.load(Relaxed) {
            0 => self.connected_at,
            micros => self.clock.wall(micros),
        }
    }

    pub fn application_name(&self) -> String {
        self.application_name
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The engine session it holds or held last.
    pub fn session(&self) -> Option<SessionSeen> {
        *self
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Disconnects the client with FATAL 57P01 at once, rolling back what
    /// it runs.
    pub fn kill(&self) {
        let now = Instant::now();
        self.shutdown.send_if_modified(|deadline| match deadline {
            Some(at) if *at <= now => false,
            _ => {
                *deadline = Some(now);
                true
            }
        });
    }

    /// The gateway shuts down: the client may finish what runs until
    /// `deadline`.
    pub(super) fn shut_down(&self, deadline: Instant) {
        self.shutdown.send_if_modified(|current| match current {
            Some(at) if *at <= deadline => false,
            _ => {
                *current = Some(deadline);
                true
            }
        });
    }

    /// Changes the state, under the database's lock; returns the old one.
    fn set_state(&self, live: &mut Live, state: ClientState) -> ClientState {
        let old = ClientState::from_u8(self.state.swap(state as u8, Relaxed));
        if old != state {
            self.state_since.store(self.clock.now(), Relaxed);
            match (old.is_running(), state.is_running()) {
                (false, true) => self.database.started_running(live),
                (true, false) => self.database.stopped_running(live),
                _ => {}
            }
        }
        old
    }

    /// Starts a wait for the engine, under the database's lock.
    fn begin_wait(&self, live: &mut Live) {
        if self.state() == ClientState::Waiting {
            return;
        }
        self.set_state(live, ClientState::Waiting);
        self.wait_since.store(self.clock.now(), Relaxed);
        live.waiting += 1;
    }

    /// Ends a wait, under the database's lock.
    fn end_wait(&self, live: &mut Live) {
        live.waiting = live.waiting.saturating_sub(1);
        let since = self.wait_since.swap(0, Relaxed);
        self.database.record_wait(self.clock.since(since));
    }

    /// The client's work is over for now: a wait ends, or the engine is
    /// given back, and the pause gate closes behind it.
    fn settle(&self) {
        let database = &self.database;
        let mut live = database.lock();
        match self.set_state(&mut live, ClientState::Idle) {
            ClientState::Waiting => self.end_wait(&mut live),
            state if state.holds_engine() => database.unit_ended(&mut live, self.info.id),
            _ => {}
        }
        if self.admitted.swap(false, Relaxed) {
            database.release_admission(&mut live);
        }
    }

    /// Lets the client's next unit through the pause gate, unless its
    /// database is paused.
    pub fn admit_now(&self) -> bool {
        let mut live = self.database.lock();
        if self.admitted.load(Relaxed) {
            return true;
        }
        let admitted = self.database.try_admit(&mut live);
        self.admitted.store(admitted, Relaxed);
        admitted
    }

    /// The client got an exclusive lease of the engine (or a pool session);
    /// `None` when no session could be had, which ends the wait.
    pub fn holds_engine(&self, session: Option<&EngineSession>) {
        let Some(session) = session else {
            return;
        };
        let seen = SessionSeen {
            backend_pid: session.backend_key.map(|(pid, _)| pid),
            opened_at: self.clock.at(session.opened_at),
        };
        *self
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(seen);
        let database = &self.database;
        let mut live = database.lock();
        if self.state() == ClientState::Waiting {
            self.end_wait(&mut live);
        }
        if !self.admitted.swap(true, Relaxed) {
            live.admitted += 1;
        }
        self.set_state(&mut live, ClientState::Running);
        database.unit_began(&mut live, self.info.id, Some(seen), false);
    }

    /// Where the client's unit stands while it holds the engine; called
    /// whenever the client loop waits for something with the lease.
    pub fn engine_state(&self, unit: &UnitOfWork, status: u8, pinned: bool) {
        let state = if unit.copy_in() {
            ClientState::Copy
        } else if !unit.answered() {
            ClientState::Running
        } else if status != b'I' {
            ClientState::InTransaction
        } else if pinned {
            ClientState::Reserved
        } else {
            ClientState::Running
        };
        let current = self.state();
        if current != state && current.holds_engine() {
            self.set_state(&mut self.database.lock(), state);
        }
    }

    /// The client gave the exclusive lease back.
    pub fn releases_engine(&self) {
        self.settle();
    }

    /// A message went to the engine under the client's lease;
    /// `unit_start` when it begins a unit of work.
    pub fn forwarded(&self, unit_start: bool) {
        if unit_start {
            self.database.counted_unit();
        }
    }

    /// The scheduler wrote the client's pipelined unit to the engine.
    pub fn unit_taken(&self) {
        let database = &self.database;
        let mut live = database.lock();
        // A client that left or withdrew its unit is idle already.
        if self.state() != ClientState::Waiting {
            return;
        }
        self.end_wait(&mut live);
        self.set_state(&mut live, ClientState::Running);
        database.unit_began(&mut live, self.info.id, None, true);
    }

    /// Bytes arrived from the client.
    pub(super) fn received(&self, bytes: usize) {
        self.last_request.store(self.clock.now(), Relaxed);
        self.database.received(bytes);
    }

    /// A whole message arrived from the client.
    pub(super) fn received_message(&self, tag: u8) {
        match tag {
            b'P' => self.database.parse(),
            b'B' => self.database.bind(),
            _ => {}
        }
    }

    /// Bytes went to the client.
    pub(super) fn sent(&self, bytes: usize) {
        self.database.sent(bytes);
    }

    /// A whole message went to the client; `body` is at least the start of
    /// its body for the messages [`wants_body`] names.
    pub(super) fn sent_message(&self, tag: u8, body: &[u8]) {
        match tag {
            b'C' => self.database.statement(),
            b'E' => {
                if let Some(class) = sqlstate_class(body) {
                    self.database.record_error(class);
                }
            }
            b'S' => {
                let mut fields = body.split(|&byte| byte == 0);
                if fields.next() == Some(b"application_name")
                    && let Some(value) = fields.next()
                {
                    *self
                        .application_name
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                        String::from_utf8_lossy(value).into_owned();
                }
            }
            _ => {}
        }
    }
}

/// The messages to the client whose body [`ClientActivity::sent_message`]
/// reads.
pub(super) fn wants_body(tag: u8) -> bool {
    matches!(tag, b'E' | b'S')
}

/// The class (first two characters) of the SQLSTATE in an ErrorResponse's
/// body.
fn sqlstate_class(body: &[u8]) -> Option<&str> {
    let mut rest = body;
    while let Some((&field, after)) = rest.split_first() {
        if field == 0 {
            return None;
        }
        let end = after.iter().position(|&byte| byte == 0)?;
        if field == b'C' {
            return std::str::from_utf8(after.get(..2)?).ok();
        }
        rest = &after[end + 1..];
    }
    None
}

/// A client's place in the record while it is connected; leaving takes it
/// out, ending whatever wait or unit it had.
pub struct ClientRegistration {
    activity: Arc<ClientActivity>,
    registry: Arc<Activity>,
}

impl ClientRegistration {
    pub(super) fn register(
        registry: &Arc<Activity>,
        info: ClientInfo,
        database: Arc<DatabaseActivity>,
        shutdown: watch::Sender<Option<Instant>>,
    ) -> Self {
        let clock = registry.clock();
        let application_name = Mutex::new(info.application_name.clone());
        Self {
            activity: Arc::new(ClientActivity {
                info,
                database,
                clock,
                connected_at: SystemTime::now(),
                state: AtomicU8::new(ClientState::Idle as u8),
                state_since: AtomicU64::new(clock.now()),
                wait_since: AtomicU64::new(0),
                last_request: AtomicU64::new(0),
                admitted: AtomicBool::new(false),
                application_name,
                session: Mutex::new(None),
                shutdown,
            }),
            registry: registry.clone(),
        }
    }

    /// The record itself, for whoever reports on the client's behalf (the
    /// scheduler, the stream wrapper).
    pub fn handle(&self) -> Arc<ClientActivity> {
        self.activity.clone()
    }

    /// The client starts waiting for an exclusive lease; the wait ends when
    /// the returned value is dropped, unless the client got the engine.
    pub fn wait_for_engine(&self) -> Waiting {
        let client = self.activity.clone();
        client.begin_wait(&mut client.database.lock());
        Waiting { client }
    }

    /// The client's pipelined unit waits for the scheduler (which calls
    /// [`ClientActivity::unit_taken`]) and ends when the returned value is
    /// dropped.
    pub fn pipelined_unit(&self) -> PipelinedUnit {
        let client = self.activity.clone();
        client.begin_wait(&mut client.database.lock());
        PipelinedUnit { client }
    }
}

impl ClientRegistration {
    /// Who holds the engine of this client's database now, for the errors
    /// of a client that waited too long: "client 1003 (application "psql",
    /// from 127.0.0.1:50412), for 61.2 s, in transaction".
    pub fn engine_holder(&self) -> Option<String> {
        let database = &self.activity.database;
        let holder = database.live().holder?;
        let clock = self.registry.clock();
        let held = clock.since(holder.since) as f64 / 1e6;
        let Some(client) = self.registry.client(holder.client) else {
            return Some(format!("client {}, for {held:.1} s", holder.client));
        };
        let mut who = format!("client {}", holder.client);
        let application = client.application_name();
        let mut about = Vec::new();
        if !application.is_empty() {
            about.push(format!("application \"{application}\""));
        }
        if let Some(peer) = client.info.peer {
            about.push(format!("from {peer}"));
        }
        if !about.is_empty() {
            who.push_str(&format!(" ({})", about.join(", ")));
        }
        Some(format!("{who}, for {held:.1} s, {}", client.state().name()))
    }

    /// How many other clients wait for this client's database now.
    pub fn others_waiting(&self) -> usize {
        self.activity.database.live().waiting
    }
}

impl std::ops::Deref for ClientRegistration {
    type Target = ClientActivity;

    fn deref(&self) -> &ClientActivity {
        &self.activity
    }
}

impl Drop for ClientRegistration {
    fn drop(&mut self) {
        self.activity.settle();
        self.registry.unregister(self.activity.info.id);
    }
}

/// A wait for an exclusive lease.
pub struct Waiting {
    client: Arc<ClientActivity>,
}

impl Waiting {
    /// Completes once the database lets the unit through its pause gate:
    /// at once unless an administrator paused it.
    pub async fn admitted(&self) {
        let database = &self.client.database;
        loop {
            let resumed = database.resumed().notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            if self.client.admit_now() {
                return;
            }
            resumed.await;
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.client.state() == ClientState::Waiting {
            self.client.settle();
        }
    }
}

/// A pipelined unit, from its submission until its answer is delivered.
pub struct PipelinedUnit {
    client: Arc<ClientActivity>,
}

impl Drop for PipelinedUnit {
    fn drop(&mut self) {
        self.client.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sqlstate_class_is_read_from_the_code_field() {
        let body = b"SERROR\0VERROR\0C42P01\0Mrelation does not exist\0\0";
        assert_eq!(sqlstate_class(body), Some("42"));
        assert_eq!(sqlstate_class(b"SFATAL\0C57P01\0\0"), Some("57"));
        assert_eq!(sqlstate_class(b"SERROR\0Mno code\0\0"), None);
        // Cut short before the code.
        assert_eq!(sqlstate_class(b"SERROR\0VERR"), None);
    }
}
