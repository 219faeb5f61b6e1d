//! The registry of databases the gateway serves, by the name clients ask for.
//!
//! With the embedded engine, every database is an engine instance of its own,
//! in its own directory under the data directory (or in memory), opened when
//! a client first asks for it and created then when `auto_create` allows.
//! `CREATE DATABASE` and `DROP DATABASE` act on this registry. An upstream
//! server's databases are the ones configured, fixed at startup. A tunnel
//! database is served by a host that attached over a WebSocket; it stays
//! known when its host leaves, so that its clients learn that the host is
//! away rather than finding an empty database of the same name.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::catalog;
use crate::engine::EngineSession;
use crate::engine::connect::Connect;
use crate::engine::embedded::{self, EmbeddedEngine, Storage};
use crate::engine::tunnel::slot::{HostClaim, HostSlot};
use crate::protocol::error::{PgError, sqlstate};
use crate::scheduler::{Reopen, Scheduler};
use crate::session::listen::Notifier;
use crate::session::statements::SessionStatements;

/// The virtual database of the admin console (see `admin`): no database
/// may take its name.
pub const CONSOLE_DATABASE: &str = "pgshare";

/// PostgreSQL's limit on identifiers, database names included.
const MAX_NAME_LEN: usize = 63;
/// Where each database's directory lives under the data directory.
const DATABASES_DIR: &str = "databases";

/// One database: its engine session behind a scheduler, and the parameters the
/// engine reported at startup (every client gets them after login).
pub struct Database {
    pub name: String,
    pub scheduler: Scheduler,
    pub parameters: Vec<(String, String)>,
    /// Who listens to which channel.
    pub notifier: Arc<Notifier>,
    /// Schema `pgr` of live queries is there, at the version the gateway
    /// installs (see `realtime::install`).
    pub realtime_installed: AtomicBool,
    /// Told when a client installed schema `pgr` (perhaps in a transaction
    /// still open): the database's hub then starts listening for changes.
    pub realtime_wake: Arc<tokio::sync::Notify>,
    /// The embedded engine behind it, closed when the database is.
    engine: Mutex<Option<EmbeddedEngine>>,
    /// Clients connected to it now.
    clients: AtomicUsize,
    /// When its last client left.
    idle_since: Mutex<Instant>,
    /// An embedded engine (rather than an upstream server) serves it.
    embedded: bool,
    /// The slot its host attaches to, when a host serves it.
    host: Option<Arc<HostSlot>>,
}

impl Database {
    /// A database served by `scheduler`; `engine` is the embedded engine
    /// behind it, if any.
    pub fn new(
        name: String,
        session_parameters: Vec<(String, String)>,
        scheduler: Scheduler,
        notifier: Arc<Notifier>,
        engine: Option<EmbeddedEngine>,
    ) -> Self {
        Self {
            name,
            scheduler,
            parameters: session_parameters,
            notifier,
            realtime_installed: AtomicBool::new(false),
            realtime_wake: Arc::default(),
            embedded: engine.is_some(),
            engine: Mutex::new(engine),
            clients: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            host: None,
        }
    }

    /// Whether a host serves it (see `engine::tunnel`).
    pub fn is_tunnel(&self) -> bool {
        self.host.is_some()
    }

    /// What serves it: `embedded`, `upstream` or `tunnel`.
    pub fn engine_kind(&self) -> &'static str {
        match (&self.host, self.embedded) {
            (Some(_), _) => "tunnel",
            (None, true) => "embedded",
            (None, false) => "upstream",
        }
    }

    /// Whether its engine is there now: always, but for a tunnel database
    /// whose host is away.
    pub fn engine_present(&self) -> bool {
        self.host.as_ref().is_none_or(|slot| slot.is_attached())
    }

    /// What a client gets when no engine session can be had for a new unit
    /// of work: with a host away, an error that leaves the client connected
    /// to try again; otherwise the end of the connection.
    pub fn unavailable(&self) -> PgError {
        match &self.host {
            Some(_) => host_not_connected(&self.name).into_error(),
            None => PgError::fatal(
                sqlstate::CONNECTION_FAILURE,
                "terminating connection because the database engine is not available",
            ),
        }
    }

    /// What a client gets when the engine session failed under its unit of
    /// work.
    pub fn lost(&self) -> PgError {
        match &self.host {
            Some(_) => PgError::fatal(
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection because the database host disconnected",
            )
            .with_hint(format!(
                "the tab or process that shares database \"{}\" went away; its open transaction is rolled back. Reconnect once the host is back",
                self.name
            )),
            None => self.unavailable(),
        }
    }

    fn add_client(&self) {
        let count = self.clients.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(slot) = &self.host {
            slot.clients.send_replace(count);
        }
    }

    /// Closes the engine behind it after its last unit of work, flushing
    /// everything committed to disk.
    async fn close(&self) {
        if self.host.as_ref().is_some_and(|slot| !slot.is_attached()) {
            // Nothing to flush, and no host to wait for.
            return;
        }
        let mut lease = self.scheduler.lease().await;
        if let Some(session) = lease.session.take()
            && session.status() != b'I'
        {
            warn!(
                "database \"{}\": rolling back a transaction left open at shutdown",
                self.name
            );
        }
        drop(lease);
        let engine = lock(&self.engine).take();
        if let Some(engine) = engine {
            match engine.shutdown().await {
                Ok(()) => info!(
                    "database \"{}\" closed; its committed data is on disk",
                    self.name
                ),
                Err(err) => warn!("database \"{}\" did not close cleanly: {err:#}", self.name),
            }
        }
    }
}

/// A client's use of a database; the database cannot be dropped while any
/// exist.
pub struct Connected {
    database: Arc<Database>,
}

impl Connected {
    pub fn database(&self) -> &Arc<Database> {
        &self.database
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        let count = self.database.clients.fetch_sub(1, Ordering::SeqCst) - 1;
        if count == 0 {
            *lock(&self.database.idle_since) = Instant::now();
        }
        if let Some(slot) = &self.database.host {
            slot.clients.send_replace(count);
        }
    }
}

/// How new embedded databases are made.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    pub storage: Storage,
    pub relaxed_durability: bool,
    pub max_prepared_statements: usize,
    /// Create a database a client asks for that does not exist yet.
    pub auto_create: bool,
    /// A database without clients for this long is closed (and opened again
    /// when a client comes).
    pub idle_timeout: Option<Duration>,
    /// Databases open at once at most; opening another closes the one idle
    /// the longest.
    pub max_open: usize,
}

/// What `Registry::on_open` calls for each database that opens.
type OpenObserver = Box<dyn Fn(&Arc<Database>) + Send + Sync>;

pub struct Registry {
    /// How databases are made on demand; `None` when only the configured
    /// upstream databases are served.
    embedded: Option<EmbeddedOptions>,
    open: Mutex<HashMap<String, Arc<Database>>>,
    /// The databases hosts serve, attached or not, with their slots.
    tunnels: Mutex<HashMap<String, Arc<HostSlot>>>,
    /// How long a unit of work waits for a host that left to come back.
    host_wait: Duration,
    /// One open, create or drop at a time.
    changing: tokio::sync::Mutex<()>,
    /// Engines opened and closed since the start.
    engines_opened: AtomicUsize,
    engines_closed: AtomicUsize,
    /// Told of each database as it opens (see `on_open`).
    opened: OnceLock<OpenObserver>,
}

impl Registry {
    /// A registry serving `upstream` databases (opened already) and, with
    /// `embedded`, any other name as an embedded database. `postgres` is then
    /// opened now, so that an unusable data directory stops the gateway
    /// before it serves anyone.
    pub async fn new(
        embedded: Option<EmbeddedOptions>,
        upstream: Vec<Database>,
        configured: &[String],
        tunnels: &[(String, Option<String>)],
        host_wait: Duration,
    ) -> anyhow::Result<Arc<Self>> {
        let mut idle_timeout = None;
        if let Some(options) = &embedded {
            match &options.storage {
                Storage::Directory(root) => {
                    // An earlier pgshare kept one engine at the top.
                    embedded::refuse_old_layout(root)?;
                    idle_timeout = options.idle_timeout;
                }
                // Closing an in-memory database would lose it.
                Storage::Memory => {}
            }
        }
        let upstream_count = upstream.len();
        let registry = Self {
            embedded,
            open: Mutex::new(
                upstream
                    .into_iter()
                    .map(|database| (database.name.clone(), Arc::new(database)))
                    .collect(),
            ),
            tunnels: Mutex::new(
                tunnels
                    .iter()
                    .map(|(name, secret)| (name.clone(), Arc::new(HostSlot::new(secret.clone()))))
                    .collect(),
            ),
            host_wait,
            changing: tokio::sync::Mutex::new(()),
            engines_opened: AtomicUsize::new(upstream_count),
            engines_closed: AtomicUsize::new(0),
            opened: OnceLock::new(),
        };
        if registry.embedded.is_some() {
            // `postgres` and the configured embedded databases exist from the
            // start, whatever auto_create says.
            for name in std::iter::once("postgres").chain(configured.iter().map(String::as_str)) {
                if !registry.is_open(name) {
                    let database = registry.open_embedded(name).await?;
                    registry.insert(database);
                }
            }
        }
        let registry = Arc::new(registry);
        if let Some(timeout) = idle_timeout {
            tokio::spawn(close_idle(Arc::downgrade(&registry), timeout));
        }
        Ok(registry)
    }

    /// Whether `CREATE DATABASE` and `DROP DATABASE` act on this registry.
    pub fn manages_databases(&self) -> bool {
        self.embedded.is_some()
    }

    /// Connects a client to database `name`, opening it (and creating it
    /// when allowed) first.
    pub async fn connect(&self, name: &str) -> Result<Connected, PgError> {
        if let Some(slot) = self.host_slot(name) {
            // A host that just attached for the first time is still logging
            // in on its PGlite.
            let deadline = Instant::now() + self.host_wait;
            while slot.is_attached() {
                if let Some(connected) = self.connect_open(name) {
                    return Ok(connected);
                }
                if Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            return Err(host_not_connected(name));
        }
        if let Some(connected) = self.connect_open(name) {
            return Ok(connected);
        }
        let Some(options) = &self.embedded else {
            return Err(does_not_exist(name));
        };
        validate_name(name)?;
        let _changing = self.changing.lock().await;
        if let Some(connected) = self.connect_open(name) {
            return Ok(connected);
        }
        if !options.auto_create && !self.exists_on_disk(name) {
            return Err(does_not_exist(name).with_hint(
                "create it with CREATE DATABASE, or start pgshare with --auto-create true",
            ));
        }
        let created = !self.exists_on_disk(name);
        self.make_room(options.max_open).await?;
        let database = self.open_embedded(name).await.map_err(|err| {
            warn!("could not open database \"{name}\": {err:#}");
            PgError::fatal(
                sqlstate::CONNECTION_FAILURE,
                format!("database \"{name}\" could not be opened"),
            )
        })?;
        self.insert(database);
        drop(_changing);
        if created {
            // Its own catalog lists it already; the others learn of it.
            self.refresh_catalogs(name);
        }
        self.connect_open(name).ok_or_else(|| does_not_exist(name))
    }

    /// Carries out `CREATE DATABASE name` for a client connected to
    /// `current`.
    pub async fn create(&self, name: &str, current: &str) -> Result<(), PgError> {
        validate_name(name).map_err(PgError::into_error)?;
        let _changing = self.changing.lock().await;
        if self.is_open(name) || self.exists_on_disk(name) || self.host_slot(name).is_some() {
            return Err(PgError::error(
                sqlstate::DUPLICATE_DATABASE,
                format!("database \"{name}\" already exists"),
            ));
        }
        if let Some(options) = &self.embedded {
            self.make_room(options.max_open)
                .await
                .map_err(PgError::into_error)?;
        }
        let database = self.open_embedded(name).await.map_err(|err| {
            warn!("could not create database \"{name}\": {err:#}");
            PgError::error(
                sqlstate::INTERNAL_ERROR,
                format!("database \"{name}\" could not be created"),
            )
        })?;
        info!("created database \"{name}\"");
        self.insert(database);
        drop(_changing);
        self.refresh_catalogs(current);
        Ok(())
    }

    /// Carries out `DROP DATABASE name` for a client connected to
    /// `current`. Returns whether it existed.
    pub async fn drop_database(&self, name: &str, current: &str) -> Result<bool, PgError> {
        if name == current {
            return Err(PgError::error(
                sqlstate::OBJECT_IN_USE,
                "cannot drop the currently open database",
            ));
        }
        if validate_name(name).is_err() {
            return Ok(false);
        }
        if self.host_slot(name).is_some() {
            return Err(PgError::error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("database \"{name}\" is served by a host that attached to pgshare"),
            )
            .with_hint("its data lives with the host; drop its tables there"));
        }
        let _changing = self.changing.lock().await;
        let removed = {
            let mut open = lock(&self.open);
            if let Some(database) = open.get(name) {
                if !database.embedded {
                    return Err(PgError::error(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        format!("database \"{name}\" is served by an upstream server"),
                    )
                    .with_hint("remove it from the configuration file instead"));
                }
                let others = database.clients.load(Ordering::SeqCst);
                if others > 0 {
                    return Err(PgError::error(
                        sqlstate::OBJECT_IN_USE,
                        format!("database \"{name}\" is being accessed by other users"),
                    )
                    .with_detail(format!(
                        "There {} {others} other session{} using the database.",
                        if others == 1 { "is" } else { "are" },
                        if others == 1 { "" } else { "s" },
                    )));
                }
            }
            open.remove(name)
        };
        let on_disk = self.exists_on_disk(name);
        if removed.is_none() && !on_disk {
            return Ok(false);
        }
        if let Some(database) = removed {
            self.close(&database).await;
        }
        if let Some(dir) = self.directory(name)
            && on_disk
        {
            std::fs::remove_dir_all(&dir).map_err(|err| {
                warn!("could not remove {}: {err}", dir.display());
                PgError::error(
                    sqlstate::INTERNAL_ERROR,
                    format!("could not remove the files of database \"{name}\": {err}"),
                )
            })?;
        }
        info!("dropped database \"{name}\"");
        drop(_changing);
        self.refresh_catalogs(current);
        Ok(true)
    }

    /// Brings the `pg_database` of every open embedded engine but
    /// `current`'s up to date, in the background (they may be busy). The
    /// client that changed the registry brings its own up to date with
    /// `sync_catalog`, on the session it holds or waits for.
    fn refresh_catalogs(&self, current: &str) {
        let names = self.names();
        for database in self.open_databases() {
            if !database.embedded || database.name == current {
                continue;
            }
            let names = names.clone();
            tokio::spawn(async move {
                let mut lease = database.scheduler.lease().await;
                if let Some(engine) = lease.session.as_mut()
                    && let Err(err) = catalog::sync_database_rows(engine, &names).await
                {
                    warn!("database \"{}\": {err}", database.name);
                }
            });
        }
    }

    /// Makes the `pg_database` of `engine`, a session of `database`, list
    /// every database, when `database` is embedded (an upstream server's
    /// catalog is its own).
    pub async fn sync_catalog(
        &self,
        database: &Database,
        held: Option<&mut EngineSession>,
    ) -> std::io::Result<()> {
        if !database.embedded {
            return Ok(());
        }
        let names = self.names();
        match held {
            Some(engine) => catalog::sync_database_rows(engine, &names).await,
            None => match database.scheduler.lease().await.session.as_mut() {
                Some(engine) => catalog::sync_database_rows(engine, &names).await,
                None => Ok(()),
            },
        }
    }

    /// The names of every database: open ones and, with a data directory,
    /// those on disk.
    pub fn names(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = lock(&self.open).keys().cloned().collect();
        if let Some(EmbeddedOptions {
            storage: Storage::Directory(root),
            ..
        }) = &self.embedded
            && let Ok(entries) = std::fs::read_dir(root.join(DATABASES_DIR))
        {
            names.extend(
                entries
                    .flatten()
                    .filter_map(|entry| entry.file_name().into_string().ok())
                    .filter(|name| validate_name(name).is_ok()),
            );
        }
        names.into_iter().collect()
    }

    /// Every open database.
    pub fn open_databases(&self) -> Vec<Arc<Database>> {
        lock(&self.open).values().cloned().collect()
    }

    /// Closes every database, flushing committed data to disk.
    pub async fn close_all(&self) {
        let databases: Vec<Arc<Database>> = lock(&self.open).drain().map(|(_, db)| db).collect();
        for database in databases {
            self.close(&database).await;
        }
    }

    /// Closes the database idle the longest when `max_open` are open; fails
    /// when all of them have clients. Called with `changing` held.
    async fn make_room(&self, max_open: usize) -> Result<(), PgError> {
        let victim = {
            let mut open = lock(&self.open);
            let embedded = open.values().filter(|database| database.embedded).count();
            if embedded < max_open.max(1) {
                return Ok(());
            }
            // Closing an in-memory database would lose it.
            let in_memory = matches!(
                self.embedded,
                Some(EmbeddedOptions {
                    storage: Storage::Memory,
                    ..
                })
            );
            let idlest = open
                .values()
                .filter(|database| {
                    database.embedded && !in_memory && database.clients.load(Ordering::SeqCst) == 0
                })
                .min_by_key(|database| *lock(&database.idle_since))
                .map(|database| database.name.clone());
            match idlest {
                Some(name) => open.remove(&name),
                None => {
                    return Err(PgError::fatal(
                        sqlstate::INSUFFICIENT_RESOURCES,
                        format!(
                            "{} databases are open and none can be closed (all have clients, or they live in memory)",
                            embedded
                        ),
                    )
                    .with_hint("raise --max-open-engines, or try again when a database is idle"));
                }
            }
        };
        if let Some(database) = victim {
            info!(
                "closing database \"{}\", idle the longest, to stay within --max-open-engines",
                database.name
            );
            self.close(&database).await;
        }
        Ok(())
    }

    fn connect_open(&self, name: &str) -> Option<Connected> {
        let open = lock(&self.open);
        let database = open.get(name)?.clone();
        database.add_client();
        Some(Connected { database })
    }

    /// The slot of tunnel database `name`, if it is one.
    fn host_slot(&self, name: &str) -> Option<Arc<HostSlot>> {
        lock(&self.tunnels).get(name).cloned()
    }

    /// Lets a new host serve database `name`, unless another host serves it
    /// now or the gateway serves it itself.
    pub fn claim_host(&self, name: &str) -> Result<(Arc<HostSlot>, HostClaim), String> {
        let mut tunnels = lock(&self.tunnels);
        let slot = match tunnels.get(name) {
            Some(slot) => slot.clone(),
            None => {
                if self.is_open(name) || self.exists_on_disk(name) {
                    return Err(format!(
                        "database \"{name}\" is served by pgshare itself; a host can only serve a database of its own"
                    ));
                }
                let slot = Arc::new(HostSlot::new(None));
                tunnels.insert(name.to_string(), slot.clone());
                slot
            }
        };
        let claim = slot
            .claim()
            .ok_or_else(|| format!("another host serves database \"{name}\" now"))?;
        Ok((slot, claim))
    }

    /// The own secret of tunnel database `name`, if it has one.
    pub fn tunnel_secret(&self, name: &str) -> Option<String> {
        self.host_slot(name).and_then(|slot| slot.secret.clone())
    }

    /// A host attached for `name` and opened `session` on its PGlite: the
    /// database takes it for its next unit of work, and is created when this
    /// is the first host it has had.
    pub fn host_attached(
        &self,
        name: &str,
        slot: &Arc<HostSlot>,
        claim: &HostClaim,
        session: EngineSession,
    ) {
        if !self.is_open(name) {
            let notifier = Arc::new(Notifier::default());
            let host_wait = self.host_wait;
            let waiting = slot.clone();
            let listens = notifier.clone();
            let connect: Connect = Arc::new(move || {
                let slot = waiting.clone();
                let notifier = listens.clone();
                Box::pin(async move {
                    let mut session = slot
                        .take(host_wait)
                        .await
                        .ok_or_else(|| anyhow::anyhow!("the database host is not connected"))?;
                    // The clients' LISTENs, on the new session too.
                    notifier.reconcile(&mut session, None, &[]).await?;
                    Ok(session)
                })
            });
            let mut database = Database::new(
                name.to_string(),
                session.parameters.clone(),
                Scheduler::start(None, notifier.clone(), Reopen::Waiting(connect)),
                notifier,
                None,
            );
            database.host = Some(slot.clone());
            self.insert(database);
            self.refresh_catalogs(name);
        }
        claim.offer(session);
    }

    fn is_open(&self, name: &str) -> bool {
        lock(&self.open).contains_key(name)
    }

    /// Closes `database`, which is out of the registry already.
    async fn close(&self, database: &Database) {
        database.close().await;
        self.engines_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Engines opened and closed since the start.
    pub fn engine_counts(&self) -> (usize, usize) {
        (
            self.engines_opened.load(Ordering::Relaxed),
            self.engines_closed.load(Ordering::Relaxed),
        )
    }

    /// The databases hosts serve, and whether each one's host is attached.
    pub fn tunnel_databases(&self) -> Vec<(String, bool)> {
        lock(&self.tunnels)
            .iter()
            .map(|(name, slot)| (name.clone(), slot.is_attached()))
            .collect()
    }

    fn insert(&self, database: Database) {
        self.engines_opened.fetch_add(1, Ordering::Relaxed);
        let database = Arc::new(database);
        lock(&self.open).insert(database.name.clone(), database.clone());
        if let Some(observer) = self.opened.get() {
            observer(&database);
        }
    }

    /// Has `observer` told of every database that opens from now on, and
    /// of those open already. Set once, before clients are served.
    pub fn on_open(&self, observer: impl Fn(&Arc<Database>) + Send + Sync + 'static) {
        if self.opened.set(Box::new(observer)).is_err() {
            return;
        }
        if let Some(observer) = self.opened.get() {
            for database in self.open_databases() {
                observer(&database);
            }
        }
    }

    /// Connects to database `name` when it exists, opening it if needed but
    /// never creating it; `None` when there is no such database.
    pub async fn connect_existing(&self, name: &str) -> Option<Result<Connected, PgError>> {
        if let Some(connected) = self.connect_open(name) {
            return Some(Ok(connected));
        }
        let exists = self.host_slot(name).is_some()
            || validate_name(name).is_ok() && self.exists_on_disk(name);
        if !exists {
            return None;
        }
        Some(self.connect(name).await)
    }

    fn directory(&self, name: &str) -> Option<PathBuf> {
        match &self.embedded {
            Some(EmbeddedOptions {
                storage: Storage::Directory(root),
                ..
            }) => Some(root.join(DATABASES_DIR).join(name)),
            _ => None,
        }
    }

    fn exists_on_disk(&self, name: &str) -> bool {
        self.directory(name).is_some_and(|dir| dir.is_dir())
    }

    async fn open_embedded(&self, name: &str) -> anyhow::Result<Database> {
        let Some(options) = &self.embedded else {
            anyhow::bail!("database \"{name}\" is not embedded");
        };
        let storage = match &options.storage {
            Storage::Directory(_) => Storage::Directory(
                self.directory(name)
                    .expect("a directory registry has database directories"),
            ),
            Storage::Memory => Storage::Memory,
        };
        let (engine, mut session) =
            EmbeddedEngine::open(storage, options.relaxed_durability, name).await?;
        let mut names = self.names();
        if !names.iter().any(|known| known == name) {
            names.push(name.to_string());
        }
        catalog::sync_database_rows(&mut session, &names).await?;
        session.statements = SessionStatements::with_limit(options.max_prepared_statements);
        Ok(embedded_database(name, engine, session))
    }
}

fn embedded_database(name: &str, engine: EmbeddedEngine, session: EngineSession) -> Database {
    let notifier = Arc::new(Notifier::default());
    Database::new(
        name.to_string(),
        session.parameters.clone(),
        Scheduler::start(Some(session), notifier.clone(), Reopen::Never),
        notifier,
        Some(engine),
    )
}

/// Checks that `name` can name a database and its directory: no path
/// separators or parent references, no control characters, not too long.
pub fn validate_name(name: &str) -> Result<(), PgError> {
    if name.len() > MAX_NAME_LEN {
        return Err(PgError::fatal(
            sqlstate::INVALID_NAME,
            format!("database name \"{name}\" is too long (at most {MAX_NAME_LEN} bytes)"),
        ));
    }
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '$' | ' ');
    if name.is_empty() || name.starts_with('.') || !name.chars().all(allowed) {
        return Err(PgError::fatal(
            sqlstate::INVALID_NAME,
            format!("invalid database name \"{}\"", name.escape_default()),
        )
        .with_hint("database names may hold letters, digits, and _ - . $ or spaces, and may not start with a dot"));
    }
    if name == CONSOLE_DATABASE {
        return Err(PgError::fatal(
            sqlstate::RESERVED_NAME,
            format!("database name \"{name}\" is reserved for the admin console"),
        ));
    }
    if name == "template0" {
        return Err(PgError::fatal(
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            "database \"template0\" is not currently accepting connections",
        ));
    }
    Ok(())
}

fn host_not_connected(name: &str) -> PgError {
    PgError::fatal(
        sqlstate::CANNOT_CONNECT_NOW,
        "the database host is not connected",
    )
    .with_hint(format!(
        "database \"{name}\" is served by a browser tab or process that shares its PGlite; open it (or start it) again"
    ))
}

fn does_not_exist(name: &str) -> PgError {
    PgError::fatal(
        sqlstate::INVALID_CATALOG_NAME,
        format!("database \"{name}\" does not exist"),
    )
}

/// Closes databases idle for longer than `timeout`, until the registry is
/// gone. A client arriving meanwhile waits for the close and opens it again.
async fn close_idle(registry: std::sync::Weak<Registry>, timeout: Duration) {
    let period = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        tokio::time::sleep(period).await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let _changing = registry.changing.lock().await;
        let idle: Vec<Arc<Database>> = {
            let mut open = lock(&registry.open);
            let names: Vec<String> = open
                .values()
                .filter(|database| {
                    database.embedded
                        && database.clients.load(Ordering::SeqCst) == 0
                        && lock(&database.idle_since).elapsed() >= timeout
                })
                .map(|database| database.name.clone())
                .collect();
            names.iter().filter_map(|name| open.remove(name)).collect()
        };
        for database in idle {
            info!(
                "closing database \"{}\": no clients for {}s (engine_idle_timeout)",
                database.name,
                timeout.as_secs()
            );
            registry.close(&database).await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_data_directory_are_refused() {
        for name in [
            "../x", "a/b", "/", ".hidden", "..", "", "a\0b", "a\\b", "x\ny",
        ] {
            let err = validate_name(name).unwrap_err();
            assert_eq!(err.code, sqlstate::INVALID_NAME, "{name:?}");
        }
        let long = "x".repeat(64);
        assert_eq!(
            validate_name(&long).unwrap_err().code,
            sqlstate::INVALID_NAME
        );
        for name in [
            "app",
            "prisma_migrate_shadow_db_0c5e7d2e-8b3b-4f1e-9a51-2f6a0c1d9e77",
            "Mixed.Case-1",
            &"x".repeat(63),
        ] {
            assert!(validate_name(name).is_ok(), "{name}");
        }
    }
}
