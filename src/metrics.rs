//! The Prometheus metrics served at `/metrics` on the HTTP port, read at
//! each scrape from the same activity record as the admin console: clients
//! by state, and per database its queue, waits, units of work, statements,
//! engine busy time, pool sessions, bytes and errors by SQLSTATE class;
//! engines opened and closed and tunnel hosts attached; live queries, their
//! subscribers and the messages published. Counters only grow
//! (rates are the scraper's job); times are in seconds, sizes in bytes.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::activity::ClientState;
use crate::admin::overview;
use crate::gateway::Gateway;
use crate::realtime::Realtime;

/// The `Content-Type` of what [`Metrics::encode`] makes: Prometheus' text
/// format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The metrics of one gateway.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(gateway: Arc<Gateway>, realtime: Option<Arc<Realtime>>) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(GatewayCollector { gateway, realtime }));
        Self { registry }
    }

    /// Every metric's current value, in Prometheus' text format.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

struct GatewayCollector {
    gateway: Arc<Gateway>,
    realtime: Option<Arc<Realtime>>,
}

impl fmt::Debug for GatewayCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayCollector").finish_non_exhaustive()
    }
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: its name, help, unit and type, and each labelled
/// value.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric_type: MetricType,
    points: Vec<(Labels, M)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, unit.as_ref(), metric_type)?;
    for (labels, value) in points {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn database(name: &str) -> Labels {
    vec![("database", name.to_string())]
}

impl Collector for GatewayCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let gateway = &self.gateway;
        let databases = overview::databases(gateway);
        let clients = gateway.activity.client_list();

        // Clients by database and state, every state present so that
        // graphs do not break off.
        let mut names: Vec<&str> = databases.iter().map(|db| db.name.as_str()).collect();
        for client in &clients {
            if !names.contains(&client.info.database.as_str()) {
                names.push(&client.info.database);
            }
        }
        let mut points = Vec::new();
        for name in names {
            for state in ClientState::ALL {
                let count = clients
                    .iter()
                    .filter(|client| client.info.database == name && client.state() == state)
                    .count();
                let mut labels = database(name);
                labels.push(("state", state.name().replace(' ', "_")));
                points.push((labels, ConstGauge::new(count as i64)));
            }
        }
        family(
            &mut encoder,
            "pgshare_clients",
            "Connected clients by database and state (idle, waiting, running, in_transaction, copy, reserved)",
            None,
            MetricType::Gauge,
            points,
        )?;

        let each = |value: &dyn Fn(&overview::DatabaseView) -> i64| {
            databases
                .iter()
                .map(|db| (database(&db.name), ConstGauge::new(value(db))))
                .collect::<Vec<_>>()
        };
        family(
            &mut encoder,
            "pgshare_queue_length",
            "Units of work waiting for the database's engine (or a pool session)",
            None,
            MetricType::Gauge,
            each(&|db| db.activity.live().waiting as i64),
        )?;
        family(
            &mut encoder,
            "pgshare_paused",
            "1 while an administrator has paused the database (PAUSE, KILL)",
            None,
            MetricType::Gauge,
            each(&|db| i64::from(db.activity.is_paused())),
        )?;

        let mut waits = encoder.encode_descriptor(
            "pgshare_wait",
            "How long units of work waited for the engine (or a pool session)",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for db in &databases {
            let histogram = db.activity.wait_histogram();
            waits
                .encode_family(&database(&db.name))?
                .encode_histogram::<NoLabelSet>(
                    histogram.sum_seconds,
                    histogram.count,
                    &histogram.buckets,
                    None,
                )?;
        }

        let totals: Vec<_> = databases
            .iter()
            .map(|db| (db.name.as_str(), db.activity.totals()))
            .collect();
        let counters = |value: fn(&crate::activity::Totals) -> u64| {
            totals
                .iter()
                .map(|(name, totals)| (database(name), ConstCounter::new(value(totals))))
                .collect::<Vec<_>>()
        };
        family(
            &mut encoder,
            "pgshare_units",
            "Units of work (transactions, or single statements) that ran",
            None,
            MetricType::Counter,
            counters(|totals| totals.units),
        )?;
        family(
            &mut encoder,
            "pgshare_statements",
            "Statements the engine completed for clients",
            None,
            MetricType::Counter,
            counters(|totals| totals.statements),
        )?;
        family(
            &mut encoder,
            "pgshare_engine_busy",
            "Time the engine was held by a unit of work (with a pool: summed over its sessions); its rate is the busy ratio",
            Some(Unit::Seconds),
            MetricType::Counter,
            totals
                .iter()
                .map(|(name, totals)| {
                    (
                        database(name),
                        ConstCounter::new(totals.xact_time as f64 / 1e6),
                    )
                })
                .collect(),
        )?;
        family(
            &mut encoder,
            "pgshare_received",
            "Bytes received from clients",
            Some(Unit::Bytes),
            MetricType::Counter,
            counters(|totals| totals.bytes_received),
        )?;
        family(
            &mut encoder,
            "pgshare_sent",
            "Bytes sent to clients",
            Some(Unit::Bytes),
            MetricType::Counter,
            counters(|totals| totals.bytes_sent),
        )?;

        let mut errors = Vec::new();
        for db in &databases {
            for (class, count) in db.activity.errors() {
                let mut labels = database(&db.name);
                labels.push(("class", class));
                errors.push((labels, ConstCounter::new(count)));
            }
        }
        family(
            &mut encoder,
            "pgshare_errors",
            "ErrorResponses clients received, by the class of their SQLSTATE (its first two characters)",
            None,
            MetricType::Counter,
            errors,
        )?;

        let mut sessions = Vec::new();
        for db in databases.iter().filter(|db| db.open.is_some()) {
            let (active, idle) = db.sessions();
            for (state, count) in [("active", active), ("idle", idle)] {
                let mut labels = database(&db.name);
                labels.push(("state", state.to_string()));
                sessions.push((labels, ConstGauge::new(count as i64)));
            }
        }
        family(
            &mut encoder,
            "pgshare_pool_sessions",
            "Engine sessions of open databases: active (held by a unit of work) or idle",
            None,
            MetricType::Gauge,
            sessions,
        )?;

        let open = gateway.registry.open_databases();
        let (opened, closed) = gateway.registry.engine_counts();
        family(
            &mut encoder,
            "pgshare_engines_open",
            "Databases whose engine is open, by kind (embedded, upstream, tunnel)",
            None,
            MetricType::Gauge,
            ["embedded", "upstream", "tunnel"]
                .into_iter()
                .map(|kind| {
                    let count = open.iter().filter(|db| db.engine_kind() == kind).count();
                    (
                        vec![("kind", kind.to_string())],
                        ConstGauge::new(count as i64),
                    )
                })
                .collect(),
        )?;
        single(
            &mut encoder,
            "pgshare_engines_opened",
            "Engines opened since pgshare started",
            MetricType::Counter,
            ConstCounter::new(opened as u64),
        )?;
        single(
            &mut encoder,
            "pgshare_engines_closed",
            "Engines closed since pgshare started (idle, to make room, dropped)",
            MetricType::Counter,
            ConstCounter::new(closed as u64),
        )?;
        let attached = gateway
            .registry
            .tunnel_databases()
            .iter()
            .filter(|(_, attached)| *attached)
            .count();
        single(
            &mut encoder,
            "pgshare_tunnel_hosts_attached",
            "Hosts (browser tabs, Node processes) attached over the tunnel now",
            MetricType::Gauge,
            ConstGauge::new(attached as i64),
        )?;

        let live = self
            .realtime
            .as_ref()
            .map(|realtime| realtime.stats())
            .unwrap_or_default();
        family(
            &mut encoder,
            "pgshare_live_queries",
            "Live queries registered with pgr.subscribe",
            None,
            MetricType::Gauge,
            live.iter()
                .map(|(name, stats)| (database(name), ConstGauge::new(stats.queries as i64)))
                .collect(),
        )?;
        family(
            &mut encoder,
            "pgshare_live_query_subscribers",
            "WebSockets and event streams following a live query now",
            None,
            MetricType::Gauge,
            live.iter()
                .map(|(name, stats)| (database(name), ConstGauge::new(stats.subscribers as i64)))
                .collect(),
        )?;
        family(
            &mut encoder,
            "pgshare_live_query_messages",
            "Messages (deltas, invalidations, overflows) published for live queries",
            None,
            MetricType::Counter,
            live.iter()
                .map(|(name, stats)| (database(name), ConstCounter::new(stats.published)))
                .collect(),
        )
    }
}

/// A metric without labels.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    value: impl EncodeMetric,
) -> fmt::Result {
    value.encode(encoder.encode_descriptor(name, help, None, metric_type)?)
}
