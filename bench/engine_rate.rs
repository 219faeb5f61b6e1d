//! The embedded engine's own rate, in-process, for pgbench's select-only
//! statement: the ceiling the gateway is measured against.
//!
//! Usage: cargo bench --bench engine_rate -- [SECONDS]
//! Prints one line per protocol: `engine <protocol> tps=<n>`.

use std::time::{Duration, Instant};

use oliphaunt_wasix::Oliphaunt;

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(out: &mut Vec<u8>, value: &str) {
    out.extend_from_slice(value.as_bytes());
    out.push(0);
}

fn query(sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, sql);
    message(b'Q', &body)
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, name);
    cstr(&mut body, sql);
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&23i32.to_be_bytes());
    message(b'P', &body)
}

fn bind_execute_sync(statement: &str, aid: u32) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, "");
    cstr(&mut body, statement);
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    let value = aid.to_string();
    body.extend_from_slice(&(value.len() as i32).to_be_bytes());
    body.extend_from_slice(value.as_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    let mut out = message(b'B', &body);
    let mut execute = Vec::new();
    cstr(&mut execute, "");
    execute.extend_from_slice(&0i32.to_be_bytes());
    out.extend(message(b'E', &execute));
    out.extend(message(b'S', &[]));
    out
}

fn run(seconds: f64, mut step: impl FnMut(u32)) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut done = 0u64;
    let mut aid = 1u32;
    while Instant::now() < deadline {
        step(aid);
        aid = aid % 100_000 + 1;
        done += 1;
    }
    done as f64 / started.elapsed().as_secs_f64()
}

fn main() -> anyhow::Result<()> {
    let seconds: f64 = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(5.0);
    let mut db = Oliphaunt::open()?;
    for sql in [
        "CREATE TABLE pgbench_accounts(aid int PRIMARY KEY, bid int, abalance int, filler char(84))",
        "INSERT INTO pgbench_accounts SELECT i, 1, 0, '' FROM generate_series(1, 100000) i",
        "VACUUM ANALYZE pgbench_accounts",
    ] {
        let reply = db.exec_protocol_raw(query(sql))?;
        anyhow::ensure!(reply.first() != Some(&b'E'), "setup failed: {sql}");
    }
    let simple = run(seconds, |aid| {
        let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};");
        let reply = db.exec_protocol_raw(query(&sql)).expect("simple query");
        assert_eq!(reply.first(), Some(&b'T'), "select failed");
    });
    println!("engine simple tps={simple:.0}");
    let mut prepare = parse("p", "SELECT abalance FROM pgbench_accounts WHERE aid = $1;");
    prepare.extend(message(b'S', &[]));
    let reply = db.exec_protocol_raw(&prepare)?;
    anyhow::ensure!(reply.first() == Some(&b'1'), "prepare failed");
    let prepared = run(seconds, |aid| {
        let reply = db
            .exec_protocol_raw(bind_execute_sync("p", aid))
            .expect("prepared query");
        assert_eq!(reply.first(), Some(&b'2'), "execute failed");
    });
    println!("engine prepared tps={prepared:.0}");
    db.close()?;
    Ok(())
}
