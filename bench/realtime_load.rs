//! The load client of `bench/realtime.sh`: thousands of live-query
//! subscribers and one writer, measuring how long a committed change takes
//! to reach the last subscriber, and what the server spends on it.
//!
//! Every change is `UPDATE ... SET n = <change number>, at = <µs since the
//! epoch> WHERE id = ...`, so a subscriber that gets the delta knows which
//! change it carries and when it was sent; per change the client keeps the
//! longest latency and how many subscribers got it.
//!
//! Usage (`cargo bench --bench realtime_load -- <target> ...`):
//!   gateway --pg URL --http PORT --pid PID   pgshare's own sockets: memory,
//!       fan-out, the fan-out beside sockets that never read, many queries
//!   fanout --pg URL --ws PORT --query NAME --pid PID --gateway-pid PID
//!       one query's fan-out through whatever serves /ws/{query_id} on
//!       PORT (pgshare, or `bench/relay/relay.js`), whose process is PID
//! Prints one line of `key=value` per measurement.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::{StreamExt, TryStreamExt};
use rand::seq::SliceRandom;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::AbortHandle;
use tokio_postgres::NoTls;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Sockets being opened at once.
const CONNECTING: usize = 256;
/// Linux reports /proc CPU times in USER_HZ, 100 on every architecture it
/// runs on.
const TICKS_PER_SECOND: f64 = 100.0;
/// The receive buffer of a socket that never reads: small, so that the
/// gateway's writes to it stall within seconds.
const STALLED_RECEIVE_BUFFER: u32 = 4096;
/// Rows of a fan-out table; the writer updates them in turn.
const FANOUT_ROWS: i32 = 100;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    target: Target,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, global = true, hide = true)]
    bench: bool,
}

#[derive(Subcommand)]
enum Target {
    /// pgshare's own WebSockets.
    Gateway {
        /// The gateway's Postgres address (the writer and the setup).
        #[arg(long)]
        pg: String,
        /// The gateway's HTTP port.
        #[arg(long)]
        http: u16,
        /// The gateway's process id, for its CPU time and memory.
        #[arg(long)]
        pid: u32,
        #[command(flatten)]
        load: Load,
        /// Sockets that never read, beside the fan-out of the second run.
        #[arg(long, default_value_t = 1000)]
        stalled: usize,
        /// Live queries of the many-queries run.
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        /// Subscribers of each of them.
        #[arg(long, default_value_t = 10)]
        per_query: usize,
    },
    /// One query's fan-out through whatever serves `/ws/{query_id}`.
    Fanout {
        /// The gateway's Postgres address (the writer and the setup).
        #[arg(long)]
        pg: String,
        /// The port of the WebSockets.
        #[arg(long)]
        ws: u16,
        /// The live query, and the table it reads; created here.
        #[arg(long)]
        query: String,
        /// The process that serves the WebSockets.
        #[arg(long)]
        pid: u32,
        /// The gateway's process id (it computes the deltas).
        #[arg(long)]
        gateway_pid: u32,
        #[command(flatten)]
        load: Load,
    },
}

#[derive(clap::Args, Clone, Copy)]
struct Load {
    /// Subscribers of the fan-out query.
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// Committed changes per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds each run writes.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
}

impl Load {
    fn changes(&self) -> usize {
        (self.rate * self.seconds).round() as usize
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Args::parse().target {
        Target::Gateway {
            pg,
            http,
            pid,
            load,
            stalled,
            queries,
            per_query,
        } => gateway(&pg, http, pid, load, stalled, queries, per_query).await,
        Target::Fanout {
            pg,
            ws,
            query,
            pid,
            gateway_pid,
            load,
        } => fanout(&pg, ws, &query, pid, gateway_pid, load).await,
    }
}

async fn gateway(
    pg: &str,
    http: u16,
    pid: u32,
    load: Load,
    stalled: usize,
    queries: usize,
    per_query: usize,
) -> anyhow::Result<()> {
    let setup = connect_pg(pg).await?;
    create_fanout(&setup, "fanout").await?;
    let rows = i32::try_from(queries * per_query)?;
    create_table(&setup, "many", rows).await?;

    // Memory, and the subscribers of the fan-out runs.
    let before = rss_kib(pid)?;
    let started = Instant::now();
    let tally = Arc::new(Tally::new(2 * load.changes()));
    let url = format!("ws://127.0.0.1:{http}/ws/fanout");
    let subscribers = open(vec![url; load.subscribers], &tally).await?;
    let connect_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid)?;
    println!(
        "run=memory subscribers={} connect_s={connect_s:.1} before_kib={before} idle_kib={idle} per_subscriber_kib={:.1}",
        load.subscribers,
        (idle.saturating_sub(before)) as f64 / load.subscribers as f64
    );

    let ids: Vec<i32> = (0..FANOUT_ROWS).collect();
    let expected = load.subscribers as u32;
    let alone = measure(pg, "fanout", &ids, 0, load, &tally, expected, pid).await?;
    println!(
        "run=fanout subscribers={} queries=1 {alone}",
        load.subscribers
    );

    // The same again, beside sockets that never read.
    let mut sockets = Vec::with_capacity(stalled);
    for _ in 0..stalled {
        sockets.push(stall(http, "/ws/fanout").await?);
    }
    let beside = measure(
        pg,
        "fanout",
        &ids,
        load.changes(),
        load,
        &tally,
        expected,
        pid,
    )
    .await?;
    let (blocked, queued) = unsent(http, &sockets)?;
    println!(
        "run=stalled subscribers={} stalled={stalled} queries=1 {beside} blocked={blocked} \
         queued_kib={} still_open={}",
        load.subscribers,
        queued >> 10,
        still_open(&mut sockets).await
    );
    drop(sockets);
    close(subscribers);

    // Many queries with a few subscribers each.
    let mut sql = String::new();
    for query in 0..queries {
        let first = query * per_query;
        let last = first + per_query - 1;
        writeln!(
            sql,
            "SELECT pgr.subscribe('many{query}', 'SELECT id, n, at FROM many WHERE id BETWEEN {first} AND {last}');"
        )?;
    }
    setup.batch_execute(&sql).await?;
    let urls = (0..queries)
        .flat_map(|query| {
            let url = format!("ws://127.0.0.1:{http}/ws/many{query}");
            std::iter::repeat_n(url, per_query)
        })
        .collect();
    let tally = Arc::new(Tally::new(load.changes()));
    let subscribers = open(urls, &tally).await?;
    let mut ids: Vec<i32> = (0..rows).collect();
    ids.shuffle(&mut rand::thread_rng());
    let spread = measure(pg, "many", &ids, 0, load, &tally, per_query as u32, pid).await?;
    println!(
        "run=many subscribers={} queries={queries} {spread}",
        queries * per_query
    );
    close(subscribers);
    Ok(())
}

async fn fanout(
    pg: &str,
    ws: u16,
    query: &str,
    pid: u32,
    gateway_pid: u32,
    load: Load,
) -> anyhow::Result<()> {
    let setup = connect_pg(pg).await?;
    create_fanout(&setup, query).await?;
    let tally = Arc::new(Tally::new(load.changes()));
    let url = format!("ws://127.0.0.1:{ws}/ws/{query}");
    let subscribers = open(vec![url; load.subscribers], &tally).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let gateway_cpu = cpu_seconds(gateway_pid)?;
    let ids: Vec<i32> = (0..FANOUT_ROWS).collect();
    let expected = load.subscribers as u32;
    let result = measure(pg, query, &ids, 0, load, &tally, expected, pid).await?;
    println!(
        "run={query} subscribers={} queries=1 {result} gateway_cpu_s={:.2}",
        load.subscribers,
        cpu_seconds(gateway_pid)? - gateway_cpu
    );
    close(subscribers);
    Ok(())
}

async fn connect_pg(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

async fn create_table(
    client: &tokio_postgres::Client,
    table: &str,
    rows: i32,
) -> anyhow::Result<()> {
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, n bigint NOT NULL, at bigint NOT NULL);
             INSERT INTO {table} SELECT id, -1, 0 FROM generate_series(0, {}) AS id;",
            rows - 1
        ))
        .await?;
    Ok(())
}

/// Table `name` of `FANOUT_ROWS` rows, and live query `name` of all of them.
async fn create_fanout(client: &tokio_postgres::Client, name: &str) -> anyhow::Result<()> {
    create_table(client, name, FANOUT_ROWS).await?;
    client
        .batch_execute(&format!(
            "SELECT pgr.subscribe('{name}', 'SELECT id, n, at FROM {name} WHERE id < {FANOUT_ROWS}');"
        ))
        .await?;
    Ok(())
}

/// What every subscriber of one group received.
struct Tally {
    /// Per change number: the longest latency so far, in µs.
    slowest: Vec<AtomicU64>,
    /// Per change number: subscribers that got it.
    deliveries: Vec<AtomicU32>,
    /// Deltas received.
    frames: AtomicU64,
    /// When the newest one arrived, µs since the epoch.
    last_arrival: AtomicU64,
    overflows: AtomicU64,
    /// Sockets that ended before the client closed them.
    ended: AtomicU64,
}

impl Tally {
    fn new(changes: usize) -> Self {
        Self {
            slowest: (0..changes).map(|_| AtomicU64::new(0)).collect(),
            deliveries: (0..changes).map(|_| AtomicU32::new(0)).collect(),
            frames: AtomicU64::new(0),
            last_arrival: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            ended: AtomicU64::new(0),
        }
    }

    /// Counts `frame`, arrived at `arrived` (µs since the epoch): for a
    /// delta, each change among its inserted rows.
    fn record(&self, frame: &str, arrived: u64) {
        if frame.starts_with(r#"{"type":"#) {
            if frame.starts_with(r#"{"type":"overflow""#) {
                self.overflows.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.last_arrival.fetch_max(arrived, Ordering::Relaxed);
        let Some(start) = frame.find(r#""inserted":["#) else {
            return;
        };
        let inserted = &frame[start..];
        let mut rows = &inserted[..inserted.find(r#""deleted":["#).unwrap_or(inserted.len())];
        while let Some((n, rest)) = number_after(rows, r#""n":"#) {
            let Some((at, rest)) = number_after(rest, r#""at":"#) else {
                break;
            };
            rows = rest;
            if let (Some(slowest), Some(deliveries)) = (
                self.slowest.get(n as usize),
                self.deliveries.get(n as usize),
            ) {
                slowest.fetch_max(arrived.saturating_sub(at), Ordering::Relaxed);
                deliveries.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The unsigned integer after the next `key` in `text`, and the text after
/// it.
fn number_after<'a>(text: &'a str, key: &str) -> Option<(u64, &'a str)> {
    let start = text.find(key)? + key.len();
    let digits = text[start..].bytes().take_while(u8::is_ascii_digit).count();
    let value = text[start..start + digits].parse().ok()?;
    Some((value, &text[start + digits..]))
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_micros() as u64
}

/// Opens a WebSocket to each of `urls`, each read by a task of its own
/// that counts into `tally`. An upgraded socket gets every change after
/// (pgshare joins it to the query's feed before it answers the upgrade).
async fn open(urls: Vec<String>, tally: &Arc<Tally>) -> anyhow::Result<Vec<AbortHandle>> {
    futures_util::stream::iter(urls)
        .map(|url| {
            let tally = tally.clone();
            async move {
                let socket = connect_ws(&url).await?;
                Ok::<_, anyhow::Error>(tokio::spawn(read(socket, tally)).abort_handle())
            }
        })
        .buffer_unordered(CONNECTING)
        .try_collect()
        .await
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A subscriber's socket; tries again for a while when refused (pgshare
/// may still be computing the query).
async fn connect_ws(url: &str) -> anyhow::Result<Socket> {
    // Subscribers only read small frames: small buffers, as a browser has.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let mut attempts = 0;
    loop {
        match tokio_tungstenite::connect_async_with_config(url, Some(config), true).await {
            Ok((socket, _)) => return Ok(socket),
            Err(err) => {
                attempts += 1;
                if attempts == 50 {
                    bail!("subscribing at {url}: {err}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn read(mut socket: Socket, tally: Arc<Tally>) {
    while let Some(Ok(message)) = socket.next().await {
        if let Message::Text(text) = message {
            tally.record(&text, now_micros());
        }
    }
    tally.ended.fetch_add(1, Ordering::Relaxed);
}

fn close(sockets: Vec<AbortHandle>) {
    for socket in sockets {
        socket.abort();
    }
}

/// A subscriber that upgrades and then never reads, with a receive buffer
/// that fills at once.
async fn stall(http: u16, path: &str) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(STALLED_RECEIVE_BUFFER)?;
    let mut stream = socket.connect(([127, 0, 0, 1], http).into()).await?;
    stream
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{http}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 512];
    while !answer.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            bail!("the upgrade of {path} was not answered");
        }
        answer.extend_from_slice(&buffer[..read]);
    }
    if !answer.starts_with(b"HTTP/1.1 101") {
        bail!(
            "the upgrade of {path} was refused: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(stream)
}

/// How many of `sockets` the gateway has bytes for that they did not take
/// (its end's send queue in /proc/net/tcp), and how many bytes in all.
fn unsent(http: u16, sockets: &[TcpStream]) -> anyhow::Result<(usize, u64)> {
    let ports: HashSet<u16> = sockets
        .iter()
        .map(|socket| Ok(socket.local_addr()?.port()))
        .collect::<std::io::Result<_>>()?;
    let (mut blocked, mut queued) = (0, 0);
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    for (local, remote, tx_queue) in table.lines().skip(1).filter_map(tcp_entry) {
        if local == http && ports.contains(&remote) && tx_queue > 0 {
            blocked += 1;
            queued += tx_queue;
        }
    }
    Ok((blocked, queued))
}

/// The local port, remote port and send queue of a line of /proc/net/tcp
/// (`sl local_address rem_address st tx_queue:rx_queue ...`, in hex).
fn tcp_entry(line: &str) -> Option<(u16, u16, u64)> {
    let mut fields = line.split_whitespace().skip(1);
    let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
    let local = port(fields.next()?)?;
    let remote = port(fields.next()?)?;
    let queues = fields.nth(1)?;
    let tx_queue = u64::from_str_radix(queues.split(':').next()?, 16).ok()?;
    Some((local, remote, tx_queue))
}

/// How many of `sockets` the gateway has not closed yet: read now, a
/// closed one comes to its end after what was buffered; an open one goes
/// quiet.
async fn still_open(sockets: &mut [TcpStream]) -> usize {
    let open = futures_util::future::join_all(sockets.iter_mut().map(|socket| async move {
        let mut buffer = [0u8; 16 << 10];
        loop {
            match tokio::time::timeout(Duration::from_millis(200), socket.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => return false,
                Ok(Ok(_)) => continue,
                Err(_) => return true,
            }
        }
    }))
    .await;
    open.into_iter().filter(|&open| open).count()
}

/// Writes `load`'s changes numbered from `first` (updating `ids` in turn),
/// waits for them to arrive, and says what it measured.
#[allow(clippy::too_many_arguments)]
async fn measure(
    pg: &str,
    table: &str,
    ids: &[i32],
    first: usize,
    load: Load,
    tally: &Tally,
    expected: u32,
    server: u32,
) -> anyhow::Result<String> {
    let frames_before = tally.frames.load(Ordering::Relaxed);
    let overflows_before = tally.overflows.load(Ordering::Relaxed);
    let server_cpu = cpu_seconds(server)?;
    let client_cpu = cpu_seconds(std::process::id())?;
    let rss_before = rss_kib(server)?;
    let rss_max = Arc::new(AtomicU64::new(rss_before));
    let sampler = tokio::spawn(sample_rss(server, rss_max.clone()));
    let started = now_micros();
    let statements = {
        let (pg, table, ids) = (pg.to_string(), table.to_string(), ids.to_vec());
        // Its own thread, so that its pace does not depend on the readers.
        tokio::task::spawn_blocking(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(write(&pg, &table, &ids, first, load))
        })
        .await??
    };
    let changes = first..first + statements.changes;
    let complete = |tally: &Tally| {
        changes
            .clone()
            .filter(|&n| tally.deliveries[n].load(Ordering::Relaxed) >= expected)
            .count()
    };
    // Until everything arrived, or nothing did for two seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    while complete(tally) < changes.len()
        && Instant::now() < deadline
        && now_micros().saturating_sub(tally.last_arrival.load(Ordering::Relaxed)) < 2_000_000
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server_cpu = cpu_seconds(server)? - server_cpu;
    let client_cpu = cpu_seconds(std::process::id())? - client_cpu;
    sampler.abort();
    let rss_after = rss_kib(server)?;
    let frames = tally.frames.load(Ordering::Relaxed) - frames_before;
    let elapsed = tally
        .last_arrival
        .load(Ordering::Relaxed)
        .saturating_sub(started)
        .max(1) as f64
        / 1e6;
    let mut latencies: Vec<u64> = changes
        .clone()
        .filter(|&n| tally.deliveries[n].load(Ordering::Relaxed) > 0)
        .map(|n| tally.slowest[n].load(Ordering::Relaxed))
        .collect();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let rank = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies
            .get(rank - 1)
            .map_or(f64::NAN, |&us| us as f64 / 1000.0)
    };
    Ok(format!(
        "changes={} rate={:.1} statement_p50_ms={:.2} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} \
         complete={} frames={frames} frames_per_s={:.0} overflows={} ended={} cpu_s={:.2} \
         cpu_us_per_frame={:.2} client_cpu_s={:.2} rss_before_kib={rss_before} \
         rss_max_kib={} rss_after_kib={rss_after}",
        changes.len(),
        statements.rate,
        statements.p50_ms,
        percentile(0.5),
        percentile(0.99),
        percentile(1.0),
        complete(tally),
        frames as f64 / elapsed,
        tally.overflows.load(Ordering::Relaxed) - overflows_before,
        tally.ended.load(Ordering::Relaxed),
        server_cpu,
        server_cpu * 1e6 / frames.max(1) as f64,
        client_cpu,
        rss_max.load(Ordering::Relaxed),
    ))
}

/// How the writer did.
struct Written {
    changes: usize,
    /// Changes per second it made.
    rate: f64,
    /// The median time of one statement.
    p50_ms: f64,
}

/// Makes `load`'s changes, numbered from `first`, at its rate for its
/// seconds: fewer when statements wait.
async fn write(
    pg: &str,
    table: &str,
    ids: &[i32],
    first: usize,
    load: Load,
) -> anyhow::Result<Written> {
    let client = connect_pg(pg).await?;
    let update = client
        .prepare(&format!("UPDATE {table} SET n = $2, at = $3 WHERE id = $1"))
        .await?;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / load.rate));
    // Behind its pace, the writer goes on at it rather than catching up.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut durations = Vec::with_capacity(load.changes());
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(load.seconds);
    for (i, id) in ids.iter().cycle().take(load.changes()).enumerate() {
        ticks.tick().await;
        if Instant::now() >= deadline {
            break;
        }
        let sent = Instant::now();
        let n = (first + i) as i64;
        client
            .execute(&update, &[id, &n, &(now_micros() as i64)])
            .await?;
        durations.push(sent.elapsed());
    }
    let elapsed = started.elapsed().as_secs_f64();
    durations.sort_unstable();
    Ok(Written {
        changes: durations.len(),
        rate: durations.len() as f64 / elapsed,
        p50_ms: durations[durations.len() / 2].as_secs_f64() * 1000.0,
    })
}

/// User and system CPU seconds of process `pid` so far.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which may hold spaces: state is
    // field 3, utime and stime are 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')').context("/proc stat")? + 2..]
        .split(' ')
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / TICKS_PER_SECOND)
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS")?.parse()?)
}

/// Keeps the largest resident memory of `pid` in `max`.
async fn sample_rss(pid: u32, max: Arc<AtomicU64>) {
    let mut every = tokio::time::interval(Duration::from_millis(250));
    loop {
        every.tick().await;
        if let Ok(kib) = rss_kib(pid) {
            max.fetch_max(kib, Ordering::Relaxed);
        }
    }
}
