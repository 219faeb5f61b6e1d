//! One database's live queries: which exist (read from `pgr._subscriptions`),
//! what each one's result is, and what changed after each commit.
//!
//! The hub listens on channel `pgr_changed` like a client would. The trigger
//! on a table a live query reads sends the table's oid there, and
//! PostgreSQL delivers it only when the transaction commits, so a rolled
//! back transaction recomputes nothing. The hub then takes the engine for a
//! unit of work of its own (behind the clients already waiting, never for
//! longer than `TURN` at a time), runs the queries that read a changed
//! table, and publishes what entered and left each result with
//! `pgr._publish`, which takes the next seq and sends the message on channel
//! `pgr`. Once that commits, the message goes to the query's feed for the
//! sockets. Changes that arrive while the hub works are taken together in
//! its next round: several commits may make one delta.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::database::Database;
use crate::engine::EngineSession;
use crate::protocol::frame::{self, Reader};
use crate::session::listen::Notifier;
use crate::session::settings::{self, Settings};

use super::feed::{Feed, Mode};
use super::frames;
use super::install::VERSION;
use super::result::{Fingerprint, ResultSet};
use super::statements::{Answer, Statement, run_each, run_together};

/// The hub's place among the database's listeners: no client has this
/// process id.
const HUB_LISTENER: i32 = i32::MIN;
/// Where the triggers and `pgr.subscribe` tell the hub of changes.
const CHANGES_CHANNEL: &str = "pgr_changed";
/// The longest the hub keeps the engine before letting waiting clients in.
const TURN: Duration = Duration::from_millis(20);
/// Queries recomputed in one round trip.
const BATCH: usize = 32;
/// How long the hub waits before trying again when it could not get an
/// engine session (a host away, a server down).
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The SQLSTATEs of a database without schema pgr or parts of it:
/// undefined schema, function, table.
const NOT_INSTALLED: &[&str] = &["3F000", "42883", "42P01"];
/// How often the hub checks that notifications still reach it.
const LISTEN_CHECK: Duration = Duration::from_secs(10);
/// `pgr._publish` sends an overflow instead of a delta this long or longer.
const NOTIFY_LIMIT: usize = 8000;

/// One live query.
pub struct Live {
    pub feed: Arc<Feed>,
    meta: Mutex<Meta>,
}

struct Meta {
    generation: i64,
    mode: Mode,
    query: String,
    audience: Option<Value>,
    relations: Vec<u32>,
    result: Known,
}

/// What the hub knows of a live query's result.
enum Known {
    /// Not computed yet (just registered, or the gateway just started).
    Unknown,
    Rows(ResultSet),
    /// Mode notify keeps no rows.
    Fingerprint(Fingerprint),
    /// The query fails, with this error.
    Broken(String),
}

impl Live {
    /// The claims a token must match to read this query.
    pub fn audience(&self) -> Option<Value> {
        self.lock().audience.clone()
    }

    fn ready(&self) -> bool {
        !matches!(self.lock().result, Known::Unknown)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Meta> {
        self.meta
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The hub of one open database.
pub struct Hub {
    database: Weak<Database>,
    name: String,
    queries: Mutex<HashMap<String, Arc<Live>>>,
    /// One round of work on the engine at a time.
    work: tokio::sync::Mutex<()>,
    /// Loads of the subscriptions so far.
    loads: AtomicU64,
    /// The settings the queries run with: the engine's defaults, whatever
    /// the client before set, so that a row's text does not change with
    /// them.
    defaults: Arc<Settings>,
    /// Deltas longer than this reach sockets as an overflow.
    max_message: usize,
    /// Messages published so far.
    published: AtomicU64,
}

/// What a hub has, for the metrics.
pub struct HubStats {
    pub queries: usize,
    pub subscribers: usize,
    pub published: u64,
}

/// What the hub has to do in its next round.
#[derive(Default)]
struct Todo {
    /// Read the subscriptions again.
    load: bool,
    /// DDL ran: the tables of every query may have changed.
    ddl: bool,
    /// Tables changed by committed transactions.
    tables: HashSet<u32>,
}

impl Todo {
    fn is_empty(&self) -> bool {
        !self.load && !self.ddl && self.tables.is_empty()
    }

    fn add(&mut self, notification: &[u8]) {
        let mut reader = Reader::new(frame::body(notification));
        let (Ok(_pid), Ok(_channel), Ok(payload)) = (reader.i32(), reader.cstr(), reader.cstr())
        else {
            return;
        };
        match payload {
            b"subscriptions" => self.load = true,
            // DDL may also have dropped schema pgr.
            b"ddl" => {
                self.ddl = true;
                self.load = true;
            }
            oid => {
                if let Some(oid) = std::str::from_utf8(oid).ok().and_then(|s| s.parse().ok()) {
                    self.tables.insert(oid);
                }
            }
        }
    }
}

/// Whether the hub receives notifications.
enum Listening {
    Yes,
    /// Yes now, but not until now: changes may have gone unseen.
    Again,
    /// No engine session now; try again later.
    Retry,
    /// The database is gone.
    Gone,
}

/// How a round ended.
enum Round {
    Done,
    /// No engine session now; try again later.
    Retry,
    /// The database is gone.
    Gone,
}

impl Hub {
    /// Starts the hub of `database`.
    pub fn start(
        database: &Arc<Database>,
        max_message: usize,
        runtime: &tokio::runtime::Handle,
    ) -> Arc<Self> {
        let inbox = database.notifier.register(HUB_LISTENER);
        let hub = Arc::new(Self {
            database: Arc::downgrade(database),
            name: database.name.clone(),
            queries: Mutex::new(HashMap::new()),
            work: tokio::sync::Mutex::new(()),
            loads: AtomicU64::new(0),
            defaults: Arc::new(Settings::default()),
            max_message,
            published: AtomicU64::new(0),
        });
        runtime.spawn(hub.clone().run(inbox, database.realtime_wake.clone()));
        hub
    }

    /// The live query `query_id`, once its result is known (or known to
    /// fail); reads the subscriptions first when it is not known here (it
    /// may have been registered a moment ago). `Err`: they could not be
    /// read.
    pub async fn live(&self, query_id: &str) -> Result<Option<Arc<Live>>, String> {
        if let Some(live) = self.get(query_id).filter(|live| live.ready()) {
            return Ok(Some(live));
        }
        let loads = self.loads.load(Ordering::SeqCst);
        let _turn = self.work.lock().await;
        let known = self.get(query_id);
        let loaded_since = self.loads.load(Ordering::SeqCst) != loads;
        let stale = match &known {
            Some(live) => !live.ready(),
            None => !loaded_since,
        };
        if stale {
            let mut todo = Todo {
                load: true,
                ..Todo::default()
            };
            match self.round(&mut todo).await {
                Round::Done if !todo.load => {}
                _ => return Err("the subscriptions could not be read".to_string()),
            }
        }
        Ok(self.get(query_id))
    }

    /// Its live queries, their subscribers and the messages published.
    pub fn stats(&self) -> HubStats {
        let queries = self.lock();
        HubStats {
            queries: queries.len(),
            subscribers: queries.values().map(|live| live.feed.subscribers()).sum(),
            published: self.published.load(Ordering::Relaxed),
        }
    }

    /// Whether the database has schema pgr, as far as is known.
    fn installed(&self) -> bool {
        self.database
            .upgrade()
            .is_some_and(|database| database.realtime_installed.load(Ordering::SeqCst))
    }

    fn get(&self, query_id: &str) -> Option<Arc<Live>> {
        self.lock().get(query_id).cloned()
    }

    async fn run(
        self: Arc<Self>,
        mut inbox: mpsc::UnboundedReceiver<BytesMut>,
        wake: Arc<tokio::sync::Notify>,
    ) {
        let mut listening = false;
        let mut todo = Todo {
            load: true,
            ..Todo::default()
        };
        let mut check = tokio::time::interval(LISTEN_CHECK);
        check.tick().await;
        loop {
            // Only a database with schema pgr is listened to: the others'
            // clients see nothing of live queries, not even a channel.
            if !listening && self.installed() {
                match self.listen().await {
                    Listening::Yes => listening = true,
                    Listening::Again => {
                        // Changes may have gone unseen: every query again.
                        listening = true;
                        todo.load = true;
                        todo.ddl = true;
                    }
                    Listening::Gone => break,
                    Listening::Retry => {
                        tokio::time::sleep(RETRY_AFTER).await;
                        continue;
                    }
                }
            }
            if todo.is_empty() {
                tokio::select! {
                    notification = inbox.recv() => match notification {
                        Some(notification) => todo.add(&notification),
                        None => break,
                    },
                    _ = check.tick() => listening = false,
                    _ = wake.notified() => todo.load = true,
                }
            }
            while let Ok(notification) = inbox.try_recv() {
                todo.add(&notification);
            }
            if todo.is_empty() {
                continue;
            }
            let round = {
                let _turn = self.work.lock().await;
                self.round(&mut todo).await
            };
            match round {
                Round::Done => {}
                Round::Retry => tokio::time::sleep(RETRY_AFTER).await,
                Round::Gone => break,
            }
        }
        for live in self.lock().drain().map(|(_, live)| live) {
            live.feed.close("the database closed");
        }
    }

    /// Makes sure the engine session that receives notifications listens
    /// on the changes channel (it may be a new one, after an upstream
    /// server restarted). `Again` when it did not: changes may have gone
    /// unseen since.
    async fn listen(&self) -> Listening {
        let Some(database) = self.database.upgrade() else {
            return Listening::Gone;
        };
        database.notifier.add_channel(HUB_LISTENER, CHANGES_CHANNEL);
        let mut lease = database.scheduler.lease_listener().await;
        let Some(engine) = lease.session.as_mut() else {
            return Listening::Retry;
        };
        let listening = run_each(
            engine,
            &database.notifier,
            &[Statement::new(
                "SELECT count(*)::text FROM pg_catalog.pg_listening_channels() AS c WHERE c = $1",
                vec![Some(CHANGES_CHANNEL.to_string())],
            )],
        )
        .await;
        let listening = match listening {
            Ok(answers) => answers.first().and_then(first_value).as_deref() == Some("1"),
            Err(err) => {
                warn!(
                    "database \"{}\": live queries could not listen for changes: {err}",
                    self.name
                );
                lease.session = None;
                return Listening::Retry;
            }
        };
        if listening {
            return Listening::Yes;
        }
        // A new session: the clients' channels too (with the simple
        // protocol); the hub's alone without touching anything of theirs.
        let listened = if database.notifier.union().len() > 1 {
            database.notifier.reconcile(engine, None, &[]).await
        } else {
            run_each(
                engine,
                &database.notifier,
                &[Statement::new(format!("LISTEN {CHANGES_CHANNEL}"), vec![])],
            )
            .await
            .map(drop)
        };
        match listened {
            Ok(()) => Listening::Again,
            Err(err) => {
                warn!(
                    "database \"{}\": live queries could not listen for changes: {err}",
                    self.name
                );
                lease.session = None;
                Listening::Retry
            }
        }
    }

    /// Does what `todo` says, on engine sessions taken for the purpose;
    /// what is left undone stays in `todo`. Called with `work` held.
    async fn round(&self, todo: &mut Todo) -> Round {
        let Some(database) = self.database.upgrade() else {
            return Round::Gone;
        };
        let mut dirty: Vec<Arc<Live>> = Vec::new();
        loop {
            let mut lease = database.scheduler.lease().await;
            let Some(engine) = lease.session.as_mut() else {
                return Round::Retry;
            };
            let started = Instant::now();
            let result = self
                .work_on(engine, &database, todo, &mut dirty, started)
                .await;
            match result {
                Ok(true) => return Round::Done,
                // Others' turn; then on with the rest.
                Ok(false) => continue,
                Err(err) => {
                    warn!(
                        "database \"{}\": live queries could not be brought up to date: {err}",
                        self.name
                    );
                    lease.session = None;
                    return Round::Retry;
                }
            }
        }
    }

    /// Works through `todo` until done (`true`) or `TURN` is used up.
    async fn work_on(
        &self,
        engine: &mut EngineSession,
        database: &Database,
        todo: &mut Todo,
        dirty: &mut Vec<Arc<Live>>,
        started: Instant,
    ) -> io::Result<bool> {
        let notifier = &database.notifier;
        if let Err(err) = settings::switch(engine, &self.defaults).await? {
            return Err(io::Error::other(err.message));
        }
        if todo.load {
            dirty.extend(self.load(engine, database).await?);
            todo.load = false;
        }
        if todo.ddl {
            self.rewatch(engine, notifier).await?;
            dirty.extend(self.lock().values().cloned());
            todo.ddl = false;
        }
        if !todo.tables.is_empty() {
            let tables = std::mem::take(&mut todo.tables);
            dirty.extend(
                self.lock()
                    .values()
                    .filter(|live| {
                        live.lock()
                            .relations
                            .iter()
                            .any(|table| tables.contains(table))
                    })
                    .cloned(),
            );
        }
        let mut seen = HashSet::new();
        dirty.retain(|live| seen.insert(live.feed.query_id().to_string()));
        while !dirty.is_empty() {
            let batch: Vec<Arc<Live>> = dirty.drain(..dirty.len().min(BATCH)).collect();
            self.recompute(engine, notifier, &batch).await?;
            if started.elapsed() > TURN && !dirty.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads the subscriptions; returns the live queries whose result is
    /// to be computed (new ones, and new registrations of known ones).
    async fn load(
        &self,
        engine: &mut EngineSession,
        database: &Database,
    ) -> io::Result<Vec<Arc<Live>>> {
        let answers = run_each(
            engine,
            &database.notifier,
            &[
                Statement::new("SELECT pgr.version()::text", vec![]),
                Statement::new(
                    "SELECT query_id, query, mode, audience::text, gen::text, seq::text, \
                     relations::text FROM pgr._subscriptions WHERE active",
                    vec![],
                ),
            ],
        )
        .await?;
        let mut answers = answers.into_iter();
        let (version, rows) = (answers.next(), answers.next());
        let rows = match (version, rows) {
            (Some(Ok(version)), Some(Ok(rows))) => {
                let current = version
                    .first()
                    .and_then(|row| row.first().cloned().flatten());
                database
                    .realtime_installed
                    .store(current.as_deref() == Some(VERSION), Ordering::SeqCst);
                rows
            }
            // No schema pgr (or not all of it): nothing is registered.
            (Some(Err(failure)), _) | (_, Some(Err(failure)))
                if NOT_INSTALLED.contains(&failure.code.as_str()) =>
            {
                database.realtime_installed.store(false, Ordering::SeqCst);
                Vec::new()
            }
            (version, rows) => {
                let failure = [version, rows]
                    .into_iter()
                    .flatten()
                    .find_map(Result::err)
                    .map_or_else(|| "no answer".to_string(), |failure| failure.to_string());
                return Err(io::Error::other(format!(
                    "the subscriptions could not be read: {failure}"
                )));
            }
        };
        self.loads.fetch_add(1, Ordering::SeqCst);
        let mut fresh = Vec::new();
        let mut queries = self.lock();
        let mut registered = HashSet::new();
        for row in rows {
            let Some(subscription) = Subscription::from_row(&row) else {
                continue;
            };
            registered.insert(subscription.query_id.clone());
            let meta = Meta {
                generation: subscription.generation,
                mode: subscription.mode,
                query: subscription.query,
                audience: subscription.audience,
                relations: subscription.relations,
                result: Known::Unknown,
            };
            match queries.get(&subscription.query_id) {
                Some(live) if live.lock().generation == subscription.generation => {
                    if !live.ready() {
                        fresh.push(live.clone());
                    }
                }
                Some(live) => {
                    live.feed.reregister(
                        subscription.generation,
                        subscription.mode,
                        subscription.seq,
                    );
                    *live.lock() = meta;
                    fresh.push(live.clone());
                }
                None => {
                    let live = Arc::new(Live {
                        feed: Feed::new(
                            subscription.query_id.clone(),
                            subscription.generation,
                            subscription.mode,
                            subscription.seq,
                        ),
                        meta: Mutex::new(meta),
                    });
                    queries.insert(subscription.query_id, live.clone());
                    fresh.push(live);
                }
            }
        }
        queries.retain(|query_id, live| {
            let keep = registered.contains(query_id);
            if !keep {
                live.feed.close("unsubscribed");
            }
            keep
        });
        if !fresh.is_empty() {
            info!(
                "database \"{}\": {} live quer{} registered",
                self.name,
                queries.len(),
                if queries.len() == 1 { "y" } else { "ies" }
            );
        }
        Ok(fresh)
    }

    /// After DDL: watches the tables each query reads now.
    async fn rewatch(&self, engine: &mut EngineSession, notifier: &Notifier) -> io::Result<()> {
        let lives: Vec<Arc<Live>> = self.lock().values().cloned().collect();
        let statements: Vec<Statement> = lives
            .iter()
            .map(|live| {
                Statement::new(
                    "SELECT pgr._rewatch($1)::text",
                    vec![Some(live.feed.query_id().to_string())],
                )
            })
            .collect();
        let answers = run_each(engine, notifier, &statements).await?;
        for (live, answer) in lives.iter().zip(answers) {
            if let Some(relations) = first_value(&answer) {
                live.lock().relations = parse_oids(&relations);
            }
        }
        Ok(())
    }

    /// Runs `lives`' queries and publishes what changed.
    async fn recompute(
        &self,
        engine: &mut EngineSession,
        notifier: &Notifier,
        lives: &[Arc<Live>],
    ) -> io::Result<()> {
        let statements: Vec<Statement> = lives
            .iter()
            .map(|live| {
                Statement::new(
                    format!(
                        "SELECT row_to_json(pgr_live_row)::text FROM (\n{}\n) AS pgr_live_row",
                        live.lock().query
                    ),
                    vec![],
                )
            })
            .collect();
        let answers = run_each(engine, notifier, &statements).await?;
        let mut changes = Vec::new();
        for (live, answer) in lives.iter().zip(answers) {
            if let Some(change) = self.compare(live, answer) {
                changes.push(change);
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        let statements: Vec<Statement> = changes
            .iter()
            .map(|change| {
                let (kind, body) = match &change.body {
                    Some(body) if body.len() < NOTIFY_LIMIT => ("delta", body.as_str()),
                    Some(_) => ("overflow", ""),
                    None => ("invalidated", ""),
                };
                Statement::new(
                    "SELECT pgr._publish($1, $2, $3, $4)::text",
                    vec![
                        Some(change.live.feed.query_id().to_string()),
                        Some(change.generation.to_string()),
                        Some(kind.to_string()),
                        Some(body.to_string()),
                    ],
                )
            })
            .collect();
        let answers = run_together(engine, notifier, &statements).await?;
        for (change, answer) in changes.into_iter().zip(answers) {
            match answer {
                Ok(rows) => {
                    let seq = rows
                        .first()
                        .and_then(|row| row.first().cloned().flatten())
                        .and_then(|seq| seq.parse::<i64>().ok());
                    if let Some(seq) = seq {
                        self.commit(change, seq);
                    }
                }
                Err(err) => warn!(
                    "database \"{}\": the change of live query \"{}\" could not be published: {err}",
                    self.name,
                    change.live.feed.query_id()
                ),
            }
        }
        Ok(())
    }

    /// What `answer` changes for `live`: nothing to publish (it is
    /// recorded at once), or a change to publish.
    fn compare(&self, live: &Arc<Live>, answer: Answer) -> Option<Change> {
        let mut meta = live.lock();
        let rows: Result<Vec<String>, String> =
            answer.map_err(|failure| failure.message).map(|rows| {
                rows.into_iter()
                    .map(|row| row.into_iter().next().flatten().unwrap_or_default())
                    .collect()
            });
        let generation = meta.generation;
        let (next, body) = match (rows, meta.mode) {
            (Err(err), _) => {
                if matches!(meta.result, Known::Broken(_) | Known::Unknown) {
                    if matches!(meta.result, Known::Unknown) {
                        warn!(
                            "database \"{}\": live query \"{}\" fails: {err}",
                            self.name,
                            live.feed.query_id()
                        );
                    }
                    meta.result = Known::Broken(err.clone());
                    live.feed.set_snapshot(None, Some(err));
                    return None;
                }
                warn!(
                    "database \"{}\": live query \"{}\" fails now, its subscribers are told to fetch again: {err}",
                    self.name,
                    live.feed.query_id()
                );
                (Known::Broken(err), None)
            }
            (Ok(rows), Mode::Notify) => {
                let fingerprint = Fingerprint::of(&rows);
                match &meta.result {
                    Known::Fingerprint(old) if *old == fingerprint => return None,
                    Known::Unknown => {
                        meta.result = Known::Fingerprint(fingerprint);
                        live.feed.set_snapshot(None, None);
                        return None;
                    }
                    _ => (Known::Fingerprint(fingerprint), None),
                }
            }
            (Ok(rows), Mode::Delta) => {
                let next = ResultSet::new(rows);
                match &meta.result {
                    Known::Rows(old) => {
                        let delta = old.delta_to(&next);
                        if delta.is_empty() {
                            live.feed.set_snapshot(Some(next.rows().to_vec()), None);
                            meta.result = Known::Rows(next);
                            return None;
                        }
                        let body = frames::rows_body(&delta.inserted, &delta.deleted);
                        (Known::Rows(next), Some(body))
                    }
                    Known::Unknown => {
                        live.feed.set_snapshot(Some(next.rows().to_vec()), None);
                        meta.result = Known::Rows(next);
                        return None;
                    }
                    // It works again: subscribers fetch it again.
                    Known::Fingerprint(_) | Known::Broken(_) => (Known::Rows(next), None),
                }
            }
        };
        Some(Change {
            live: live.clone(),
            generation,
            next,
            body,
        })
    }

    /// Records a change that `pgr._publish` published as `seq`, and hands
    /// its message to the sockets.
    fn commit(&self, change: Change, seq: i64) {
        let mut meta = change.live.lock();
        if meta.generation != change.generation {
            return;
        }
        let query_id = change.live.feed.query_id();
        let frame = match &change.body {
            Some(body) if body.len() <= self.max_message => {
                frames::delta(query_id, seq, change.generation, body)
            }
            Some(_) => frames::overflow(query_id, seq, change.generation),
            None => frames::invalidated(query_id, seq, change.generation),
        };
        let (rows, broken) = match &change.next {
            Known::Rows(rows) => (Some(rows.rows().to_vec()), None),
            Known::Broken(err) => (None, Some(err.clone())),
            Known::Fingerprint(_) | Known::Unknown => (None, None),
        };
        change.live.feed.publish(seq, frame, rows, broken);
        self.published.fetch_add(1, Ordering::Relaxed);
        meta.result = change.next;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Live>>> {
        self.queries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A recomputed result that differs from the last one published.
struct Change {
    live: Arc<Live>,
    generation: i64,
    next: Known,
    /// The delta's rows; `None` for an invalidation.
    body: Option<String>,
}

/// A row of `pgr._subscriptions`.
struct Subscription {
    query_id: String,
    query: String,
    mode: Mode,
    audience: Option<Value>,
    generation: i64,
    seq: i64,
    relations: Vec<u32>,
}

impl Subscription {
    fn from_row(row: &[Option<String>]) -> Option<Self> {
        let [
            Some(query_id),
            Some(query),
            Some(mode),
            audience,
            Some(generation),
            Some(seq),
            Some(relations),
        ] = row
        else {
            return None;
        };
        Some(Self {
            query_id: query_id.clone(),
            query: query.clone(),
            mode: match mode.as_str() {
                "notify" => Mode::Notify,
                _ => Mode::Delta,
            },
            audience: audience
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok()),
            generation: generation.parse().ok()?,
            seq: seq.parse().ok()?,
            relations: parse_oids(relations),
        })
    }
}

/// The first column of the first row.
fn first_value(answer: &Answer) -> Option<String> {
    answer.as_ref().ok()?.first()?.first()?.clone()
}

/// `{1,2,3}` as the oids it lists.
fn parse_oids(text: &str) -> Vec<u32> {
    text.trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .filter_map(|oid| oid.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_arrays_are_read_from_their_text() {
        assert_eq!(parse_oids("{16416,16420}"), [16416, 16420]);
        assert!(parse_oids("{}").is_empty());
    }

    #[test]
    fn notifications_say_what_to_do() {
        let mut todo = Todo::default();
        for payload in ["16416", "subscriptions", "ddl", "junk"] {
            let mut body = 7i32.to_be_bytes().to_vec();
            body.extend_from_slice(b"pgr_changed\0");
            body.extend_from_slice(payload.as_bytes());
            body.push(0);
            let mut message = Vec::new();
            crate::protocol::backend::push_message(&mut message, b'A', &body);
            todo.add(&message);
        }
        assert!(todo.load && todo.ddl);
        assert_eq!(todo.tables, HashSet::from([16416]));
    }
}
