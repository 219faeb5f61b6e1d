//! What every client and database is doing now, and what they did since
//! pgshare started: the one record that the admin console (`SHOW CLIENTS`,
//! `SHOW POOLS`, `SHOW STATS`, ...) and the Prometheus metrics both read.
//!
//! On a shared engine `pg_stat_activity` shows one session, the engine's;
//! this record is where one sees the clients behind it. The client loop
//! reports with a few calls (its unit of work starts waiting for the engine,
//! gets it, gives it back), its stream ([`Metered`]) counts what crosses it,
//! and the scheduler says when it takes a pipelined unit. The record also
//! holds each database's pause gate (`PAUSE`, `RESUME`) and each client's
//! own shutdown signal, by which `KILL` disconnects it.

mod client;
mod clock;
mod database;
mod metered;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use tokio::sync::watch;

use database::STATS_PERIOD;

pub use client::{
    ClientActivity, ClientInfo, ClientRegistration, ClientState, PipelinedUnit, Waiting,
};
pub use clock::{Clock, format_timestamp};
pub use database::{
    Averages, DatabaseActivity, Holder, LiveView, SessionSeen, Totals, WaitHistogram,
};
pub use metered::Metered;

pub struct Activity {
    clock: Clock,
    clients: Mutex<BTreeMap<i32, Arc<ClientActivity>>>,
    databases: Mutex<BTreeMap<String, Arc<DatabaseActivity>>>,
    /// `PAUSE` without a database: databases seen from now on start paused.
    paused_all: AtomicBool,
    /// What the admin console's own clients count under, listed nowhere.
    console: Arc<DatabaseActivity>,
}

impl Activity {
    /// An empty record; inside a runtime, a task ends a stats period every
    /// 60 s for the averages of `SHOW STATS`.
    pub fn new() -> Arc<Self> {
        let clock = Clock::new();
        let activity = Arc::new(Self {
            clock,
            clients: Mutex::new(BTreeMap::new()),
            databases: Mutex::new(BTreeMap::new()),
            paused_all: AtomicBool::new(false),
            console: Arc::new(DatabaseActivity::new(
                crate::database::CONSOLE_DATABASE.to_string(),
                clock,
                false,
            )),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(end_periods(Arc::downgrade(&activity)));
        }
        activity
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The record of database `name`, made when first asked for;
    /// `pooled` when its clients take sessions of a pool.
    pub fn database(&self, name: &str, pooled: bool) -> Arc<DatabaseActivity> {
        let database = self.database_entry(name);
        database.set_pooled(pooled);
        database
    }

    /// The record of database `name`, made when first asked for, without
    /// knowing how it is served (to pause it before any client came).
    pub fn database_entry(&self, name: &str) -> Arc<DatabaseActivity> {
        let mut databases = lock(&self.databases);
        if let Some(database) = databases.get(name) {
            return database.clone();
        }
        let database = Arc::new(DatabaseActivity::new(
            name.to_string(),
            self.clock,
            self.paused_all.load(Ordering::SeqCst),
        ));
        databases.insert(name.to_string(), database.clone());
        database
    }

    /// The record the admin console's clients count under.
    pub fn console_database(&self) -> Arc<DatabaseActivity> {
        self.console.clone()
    }

    /// Every database record, by name.
    pub fn databases(&self) -> Vec<Arc<DatabaseActivity>> {
        lock(&self.databases).values().cloned().collect()
    }

    /// Records a client that logged in to `database`. Returns its place in
    /// the record and its own view of the gateway's `shutdown`, which
    /// `KILL` also sets.
    pub fn register(
        self: &Arc<Self>,
        info: ClientInfo,
        database: Arc<DatabaseActivity>,
        shutdown: &watch::Sender<Option<Instant>>,
    ) -> (ClientRegistration, watch::Receiver<Option<Instant>>) {
        let mut clients = self.clients();
        // Read under the lock: a shutdown that began before reaches the
        // client through this value, one that begins after through
        // `shut_down`.
        let (own, receiver) = watch::channel(*shutdown.borrow());
        let id = info.id;
        let registration = ClientRegistration::register(self, info, database, own);
        clients.insert(id, registration.handle());
        (registration, receiver)
    }

    pub(crate) fn unregister(&self, id: i32) {
        self.clients().remove(&id);
    }

    /// Every connected client, by id.
    pub fn client_list(&self) -> Vec<Arc<ClientActivity>> {
        self.clients().values().cloned().collect()
    }

    pub fn client(&self, id: i32) -> Option<Arc<ClientActivity>> {
        self.clients().get(&id).cloned()
    }

    /// The gateway shuts down: every client may finish what runs until
    /// `deadline` (the gateway's own shutdown signal is set first).
    pub fn shut_down(&self, deadline: Instant) {
        for client in self.clients().values() {
            client.shut_down(deadline);
        }
    }

    /// Pauses every database, and those seen later; returns the known ones
    /// to wait for.
    pub fn pause_all(&self) -> Vec<Arc<DatabaseActivity>> {
        self.paused_all.store(true, Ordering::SeqCst);
        let databases = self.databases();
        for database in &databases {
            database.pause();
        }
        databases
    }

    /// Resumes every database; false when none was paused.
    pub fn resume_all(&self) -> bool {
        let mut any = self.paused_all.swap(false, Ordering::SeqCst);
        for database in self.databases() {
            any |= database.resume();
        }
        any
    }

    fn clients(&self) -> MutexGuard<'_, BTreeMap<i32, Arc<ClientActivity>>> {
        lock(&self.clients)
    }
}

/// Ends a stats period of every database every `STATS_PERIOD`, until the
/// record is gone.
async fn end_periods(activity: Weak<Activity>) {
    let mut ticks = tokio::time::interval(STATS_PERIOD);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(activity) = activity.upgrade() else {
            return;
        };
        for database in activity.databases() {
            database.end_period();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: i32) -> ClientInfo {
        ClientInfo {
            id,
            user: "postgres".into(),
            database: "app".into(),
            peer: None,
            local: None,
            tls: None,
            application_name: "test".into(),
        }
    }

    #[test]
    fn a_client_is_listed_while_registered_and_its_wait_counted() {
        let activity = Activity::new();
        let database = activity.database("app", false);
        let (shutdown, _) = watch::channel(None);
        let (registration, mut own) = activity.register(info(7), database.clone(), &shutdown);
        assert_eq!(activity.client_list().len(), 1);
        let waiting = registration.wait_for_engine();
        assert_eq!(registration.state(), ClientState::Waiting);
        assert_eq!(database.live().waiting, 1);
        drop(waiting);
        assert_eq!(registration.state(), ClientState::Idle);
        assert_eq!(database.live().waiting, 0);
        assert_eq!(database.totals().waits, 1);
        activity.client(7).unwrap().kill();
        assert!(own.borrow_and_update().is_some());
        drop(registration);
        assert!(activity.client_list().is_empty());
    }

    #[test]
    fn a_pipelined_unit_runs_from_taken_until_dropped() {
        let activity = Activity::new();
        let database = activity.database("app", false);
        let (shutdown, _) = watch::channel(None);
        let (registration, _own) = activity.register(info(8), database.clone(), &shutdown);
        assert!(registration.admit_now());
        let unit = registration.pipelined_unit();
        registration.unit_taken();
        assert_eq!(registration.state(), ClientState::Running);
        assert_eq!(database.live().holder.map(|holder| holder.client), Some(8));
        drop(unit);
        let live = database.live();
        assert_eq!((live.active, live.holder), (0, None));
        assert_eq!(database.totals().units, 1);
        // A unit taken after its client gave up changes nothing.
        registration.unit_taken();
        assert_eq!(registration.state(), ClientState::Idle);
    }

    #[test]
    fn a_shutdown_that_began_reaches_clients_registered_later() {
        let activity = Activity::new();
        let (shutdown, _) = watch::channel(None);
        let deadline = Instant::now();
        shutdown.send_replace(Some(deadline));
        activity.shut_down(deadline);
        let (_registration, own) =
            activity.register(info(9), activity.database("app", false), &shutdown);
        assert_eq!(*own.borrow(), Some(deadline));
    }

    #[test]
    fn pause_all_reaches_databases_seen_later() {
        let activity = Activity::new();
        activity.database("a", false);
        assert_eq!(activity.pause_all().len(), 1);
        assert!(activity.database("b", false).is_paused());
        assert!(activity.resume_all());
        assert!(!activity.database("a", false).is_paused());
        assert!(!activity.resume_all());
    }
}
