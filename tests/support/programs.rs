//! Client programs (psql, pgbench, pg_dump) run as processes, as a user
//! would run them.

use std::process::Command;

/// Runs `program` with `args` and returns what it printed on stdout and
/// stderr; fails the test when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap_or_else(|err| {
            panic!("{program} must be installed (it is in the README's requirements): {err}")
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    stdout + &stderr
}

/// Runs `sql` with psql, unaligned and without headers, stopping at the
/// first error.
pub fn psql(url: &str, sql: &str) -> String {
    run(
        "psql",
        &[url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
    )
}

/// The line of pgbench's `output` that counts failed transactions.
pub fn failed_transactions(output: &str) -> String {
    output
        .lines()
        .find(|line| line.starts_with("number of failed transactions"))
        .unwrap_or_else(|| panic!("pgbench printed no failure count:\n{output}"))
        .to_string()
}
