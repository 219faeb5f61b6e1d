//! One database's record: its totals since pgshare started (units of work,
//! statements, bytes, waits, errors by SQLSTATE class), who waits for its
//! engine and who holds it now, and whether an administrator paused it.
//!
//! Totals are atomics, added to as things happen. What changes together
//! when a unit of work starts or ends (the queue, the units running, the
//! engine's busy time, the holder, the pause gate) is kept under one lock,
//! taken a few times per unit of work and never per message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::clock::Clock;

/// Upper bounds, in seconds, of the buckets of the wait-time histogram;
/// one more bucket holds the longer waits.
pub const WAIT_BUCKETS: [f64; 14] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The period the averages of `SHOW STATS` cover, as PgBouncer's
/// `stats_period`.
pub const STATS_PERIOD: Duration = Duration::from_secs(60);

pub struct DatabaseActivity {
    pub name: String,
    clock: Clock,
    /// Each unit of work runs on a server session of a pool of its own,
    /// side by side with others, rather than on one shared engine.
    pooled: AtomicBool,
    live: Mutex<Live>,
    /// Woken when the last unit let through a paused database ends.
    drained: Notify,
    /// Woken by `RESUME`.
    resumed: Notify,
    totals: Counters,
    wait_buckets: [AtomicU64; WAIT_BUCKETS.len() + 1],
    /// SQLSTATE class (two characters) to ErrorResponses clients received.
    errors: Mutex<BTreeMap<String, u64>>,
    /// The totals at the last two ends of a stats period.
    period: Mutex<Period>,
}

#[derive(Default)]
struct Counters {
    assignments: AtomicU64,
    units: AtomicU64,
    statements: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    parses: AtomicU64,
    binds: AtomicU64,
    waits: AtomicU64,
    wait_time: AtomicU64,
}

/// What changes together when a unit of work waits, starts or ends.
#[derive(Default)]
pub(super) struct Live {
    /// Units waiting for the engine (or a pool session).
    pub waiting: usize,
    /// Units holding the engine (or a pool session).
    pub active: usize,
    /// Engine-busy microseconds up to `busy_since`.
    busy: u64,
    busy_since: u64,
    /// Units running statements (neither idle inside a transaction nor
    /// holding the engine reserved between units), and the engine's
    /// microseconds of running them up to `run_since`.
    running: usize,
    run_time: u64,
    run_since: u64,
    pub holder: Option<Holder>,
    pub paused: bool,
    /// Units let through the pause gate that have not ended.
    pub admitted: usize,
    /// The engine session the latest unit ran on.
    pub session: Option<SessionSeen>,
}

/// The client that took the engine last, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub client: i32,
    /// A time of the activity clock.
    pub since: u64,
}

/// An engine session as a unit found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSeen {
    /// The server process id it reported in `BackendKeyData`.
    pub backend_pid: Option<i32>,
    /// When it was opened, a time of the activity clock.
    pub opened_at: u64,
}

/// A database's totals since pgshare started, in PgBouncer's units.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Times a unit of work was given the engine.
    pub assignments: u64,
    pub units: u64,
    pub statements: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Microseconds the engine was held (PgBouncer's `xact_time`).
    pub xact_time: u64,
    /// Microseconds it ran statements (PgBouncer's `query_time`).
    pub query_time: u64,
    /// Waits for the engine that ended, and their microseconds.
    pub waits: u64,
    pub wait_time: u64,
    pub parses: u64,
    pub binds: u64,
}

/// A database's rates over the last stats period, in PgBouncer's units.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Averages {
    pub assignments_per_second: u64,
    pub units_per_second: u64,
    pub statements_per_second: u64,
    pub received_per_second: u64,
    pub sent_per_second: u64,
    /// Microseconds per unit of work.
    pub xact_time: u64,
    /// Microseconds per statement.
    pub query_time: u64,
    /// Microseconds per wait.
    pub wait_time: u64,
    pub parses_per_second: u64,
    pub binds_per_second: u64,
}

/// Who waits and who holds the engine now.
#[derive(Debug, Clone, Copy)]
pub struct LiveView {
    pub waiting: usize,
    pub active: usize,
    pub holder: Option<Holder>,
    pub session: Option<SessionSeen>,
}

/// The wait-time histogram: each bucket's own count (not cumulative) with
/// its upper bound in seconds, the last one infinite.
#[derive(Debug, Clone)]
pub struct WaitHistogram {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

#[derive(Default)]
struct Period {
    previous: Option<(u64, Totals)>,
    last: (u64, Totals),
}

impl DatabaseActivity {
    pub(super) fn new(name: String, clock: Clock, paused: bool) -> Self {
        Self {
            name,
            clock,
            pooled: AtomicBool::new(false),
            live: Mutex::new(Live {
                paused,
                ..Live::default()
            }),
            drained: Notify::new(),
            resumed: Notify::new(),
            totals: Counters::default(),
            wait_buckets: Default::default(),
            errors: Mutex::new(BTreeMap::new()),
            period: Mutex::new(Period {
                previous: None,
                last: (clock.now(), Totals::default()),
            }),
        }
    }

    pub(super) fn set_pooled(&self, pooled: bool) {
        self.pooled.store(pooled, Relaxed);
    }

    /// Its units run on sessions of a pool rather than on one shared
    /// engine.
    pub fn is_pooled(&self) -> bool {
        self.pooled.load(Relaxed)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Live> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A unit of work got the engine (or a pool session).
    pub(super) fn unit_began(
        &self,
        live: &mut Live,
        client: i32,
        session: Option<SessionSeen>,
        counts_as_unit: bool,
    ) {
        let now = self.clock.now();
        self.settle_busy(live, now);
        live.active += 1;
        live.holder = Some(Holder { client, since: now });
        if session.is_some() {
            live.session = session;
        }
        self.totals.assignments.fetch_add(1, Relaxed);
        if counts_as_unit {
            self.totals.units.fetch_add(1, Relaxed);
        }
    }

    /// The unit of work of `client` gave the engine back.
    pub(super) fn unit_ended(&self, live: &mut Live, client: i32) {
        let now = self.clock.now();
        self.settle_busy(live, now);
        live.active = live.active.saturating_sub(1);
        if live.holder.is_some_and(|holder| holder.client == client) || live.active == 0 {
            live.holder = None;
        }
    }

    /// Adds the busy time since the last change: with a shared engine, the
    /// time any unit held it; with a pool, each session's time.
    fn settle_busy(&self, live: &mut Live, now: u64) {
        live.busy += now.saturating_sub(live.busy_since) * self.busy_weight(live.active);
        live.busy_since = now;
    }

    /// A unit starts running statements.
    pub(super) fn started_running(&self, live: &mut Live) {
        self.settle_running(live);
        live.running += 1;
    }

    /// A unit stops running statements (it ends, or waits inside a
    /// transaction).
    pub(super) fn stopped_running(&self, live: &mut Live) {
        self.settle_running(live);
        live.running = live.running.saturating_sub(1);
    }

    /// Adds the running time since the last change, counted as busy time
    /// is.
    fn settle_running(&self, live: &mut Live) {
        let now = self.clock.now();
        live.run_time += now.saturating_sub(live.run_since) * self.busy_weight(live.running);
        live.run_since = now;
    }

    fn busy_weight(&self, active: usize) -> u64 {
        if self.pooled.load(Relaxed) {
            active as u64
        } else {
            active.min(1) as u64
        }
    }

    /// Lets a unit of work through the pause gate unless the database is
    /// paused.
    pub(super) fn try_admit(&self, live: &mut Live) -> bool {
        if live.paused {
            return false;
        }
        live.admitted += 1;
        true
    }

    pub(super) fn release_admission(&self, live: &mut Live) {
        live.admitted = live.admitted.saturating_sub(1);
        if live.admitted == 0 {
            self.drained.notify_waiters();
        }
    }

    /// What a unit held at the pause gate waits on.
    pub(super) fn resumed(&self) -> &Notify {
        &self.resumed
    }

    /// New units of work wait until `resume`.
    pub fn pause(&self) {
        self.lock().paused = true;
    }

    /// Lets waiting units go; false when the database was not paused.
    pub fn resume(&self) -> bool {
        let was_paused = std::mem::replace(&mut self.lock().paused, false);
        self.resumed.notify_waiters();
        was_paused
    }

    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Completes once no unit let through before a pause is left.
    pub async fn drained(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.lock().admitted == 0 {
                return;
            }
            drained.await;
        }
    }

    pub(super) fn record_wait(&self, micros: u64) {
        let seconds = micros as f64 / 1e6;
        let bucket = WAIT_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(WAIT_BUCKETS.len());
        self.wait_buckets[bucket].fetch_add(1, Relaxed);
        self.totals.waits.fetch_add(1, Relaxed);
        self.totals.wait_time.fetch_add(micros, Relaxed);
    }

    pub(super) fn counted_unit(&self) {
        self.totals.units.fetch_add(1, Relaxed);
    }

    pub(super) fn received(&self, bytes: usize) {
        self.totals.bytes_received.fetch_add(bytes as u64, Relaxed);
    }

    pub(super) fn sent(&self, bytes: usize) {
        self.totals.bytes_sent.fetch_add(bytes as u64, Relaxed);
    }

    pub(super) fn statement(&self) {
        self.totals.statements.fetch_add(1, Relaxed);
    }

    pub(super) fn parse(&self) {
        self.totals.parses.fetch_add(1, Relaxed);
    }

    pub(super) fn bind(&self) {
        self.totals.binds.fetch_add(1, Relaxed);
    }

    pub(super) fn record_error(&self, class: &str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(class.to_string())
            .or_default() += 1;
    }

    /// ErrorResponses its clients received, by SQLSTATE class.
    pub fn errors(&self) -> Vec<(String, u64)> {
        self.errors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(class, count)| (class.clone(), *count))
            .collect()
    }

    pub fn live(&self) -> LiveView {
        let live = self.lock();
        LiveView {
            waiting: live.waiting,
            active: live.active,
            holder: live.holder,
            session: live.session,
        }
    }

    pub fn totals(&self) -> Totals {
        let (xact_time, query_time) = {
            let live = self.lock();
            (
                live.busy
                    + self.clock.since(live.busy_since.max(1)) * self.busy_weight(live.active),
                live.run_time
                    + self.clock.since(live.run_since.max(1)) * self.busy_weight(live.running),
            )
        };
        let t = &self.totals;
        Totals {
            assignments: t.assignments.load(Relaxed),
            units: t.units.load(Relaxed),
            statements: t.statements.load(Relaxed),
            bytes_received: t.bytes_received.load(Relaxed),
            bytes_sent: t.bytes_sent.load(Relaxed),
            xact_time,
            query_time,
            waits: t.waits.load(Relaxed),
            wait_time: t.wait_time.load(Relaxed),
            parses: t.parses.load(Relaxed),
            binds: t.binds.load(Relaxed),
        }
    }

    pub fn wait_histogram(&self) -> WaitHistogram {
        let buckets: Vec<(f64, u64)> = WAIT_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(&self.wait_buckets)
            .map(|(bound, count)| (bound, count.load(Relaxed)))
            .collect();
        WaitHistogram {
            count: buckets.iter().map(|(_, count)| count).sum(),
            sum_seconds: self.totals.wait_time.load(Relaxed) as f64 / 1e6,
            buckets,
        }
    }

    /// Ends a stats period: the averages cover the one just ended.
    pub(super) fn end_period(&self) {
        let now = (self.clock.now(), self.totals());
        let mut period = self
            .period
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        period.previous = Some(std::mem::replace(&mut period.last, now));
    }

    /// The rates of the last stats period; zero before one has ended.
    pub fn averages(&self) -> Averages {
        let period = self
            .period
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some((start, before)) = period.previous else {
            return Averages::default();
        };
        let (end, after) = period.last;
        let seconds = (end.saturating_sub(start) / 1_000_000).max(1);
        let per_second =
            |field: fn(&Totals) -> u64| field(&after).saturating_sub(field(&before)) / seconds;
        let per = |field: fn(&Totals) -> u64, count: fn(&Totals) -> u64| {
            let count = count(&after).saturating_sub(count(&before));
            field(&after).saturating_sub(field(&before)) / count.max(1)
        };
        Averages {
            assignments_per_second: per_second(|t| t.assignments),
            units_per_second: per_second(|t| t.units),
            statements_per_second: per_second(|t| t.statements),
            received_per_second: per_second(|t| t.bytes_received),
            sent_per_second: per_second(|t| t.bytes_sent),
            xact_time: per(|t| t.xact_time, |t| t.units),
            query_time: per(|t| t.query_time, |t| t.statements),
            wait_time: per(|t| t.wait_time, |t| t.waits),
            parses_per_second: per_second(|t| t.parses),
            binds_per_second: per_second(|t| t.binds),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> DatabaseActivity {
        DatabaseActivity::new("app".into(), Clock::new(), false)
    }

    #[test]
    fn waits_land_in_the_first_bucket_that_holds_them() {
        let db = database();
        db.record_wait(50); // 0.05 ms
        db.record_wait(2_000_000); // 2 s
        db.record_wait(600_000_000); // 10 min
        let histogram = db.wait_histogram();
        assert_eq!(histogram.count, 3);
        assert_eq!(histogram.buckets[0], (0.0001, 1));
        assert_eq!(histogram.buckets[9], (5.0, 1));
        assert_eq!(histogram.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert!((histogram.sum_seconds - 602.00005).abs() < 1e-6);
    }

    #[test]
    fn a_shared_engine_is_busy_once_however_many_units_it_holds() {
        let db = database();
        let mut live = db.lock();
        db.unit_began(&mut live, 1, None, true);
        db.unit_began(&mut live, 2, None, true);
        std::thread::sleep(Duration::from_millis(20));
        db.unit_ended(&mut live, 1);
        db.unit_ended(&mut live, 2);
        assert_eq!(live.active, 0);
        assert_eq!(live.holder, None);
        drop(live);
        let busy = db.totals().xact_time;
        assert!((20_000..40_000).contains(&busy), "{busy}");
        db.set_pooled(true);
        let mut live = db.lock();
        db.unit_began(&mut live, 1, None, true);
        db.unit_began(&mut live, 2, None, true);
        drop(live);
        std::thread::sleep(Duration::from_millis(20));
        // Two pool sessions busy for 20 ms each.
        let busy = db.totals().xact_time - busy;
        assert!(busy >= 40_000, "{busy}");
    }

    #[test]
    fn running_time_of_a_shared_engine_is_counted_once() {
        let db = database();
        let mut live = db.lock();
        db.started_running(&mut live);
        db.started_running(&mut live);
        drop(live);
        std::thread::sleep(Duration::from_millis(20));
        let mut live = db.lock();
        db.stopped_running(&mut live);
        db.stopped_running(&mut live);
        drop(live);
        let running = db.totals().query_time;
        assert!((20_000..40_000).contains(&running), "{running}");
    }

    #[test]
    fn a_paused_database_admits_nothing_until_resumed() {
        let db = database();
        let mut live = db.lock();
        assert!(db.try_admit(&mut live));
        drop(live);
        db.pause();
        let mut live = db.lock();
        assert!(!db.try_admit(&mut live));
        assert_eq!(live.admitted, 1);
        db.release_admission(&mut live);
        assert_eq!(live.admitted, 0);
        drop(live);
        assert!(db.resume());
        assert!(!db.resume());
        assert!(db.try_admit(&mut db.lock()));
    }

    #[test]
    fn averages_cover_the_last_period() {
        let db = database();
        assert_eq!(db.averages(), Averages::default());
        db.statement();
        db.statement();
        db.counted_unit();
        db.end_period();
        let averages = db.averages();
        // Less than a second passed: counted per one second.
        assert_eq!(averages.statements_per_second, 2);
        assert_eq!(averages.units_per_second, 1);
    }
}
