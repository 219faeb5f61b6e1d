//! Session state that cannot be kept apart on one engine session: temporary
//! tables, session-level advisory locks and `WITH HOLD` cursors.
//!
//! While a client holds any of them, the engine session is reserved for it
//! (its lease is not given back between units of work), so no other client
//! sees its temporary tables, is blocked by its locks or meets its cursors by
//! surprise. The client is told so once with a notice. When it drops the last
//! of them the engine is shared again; when it disconnects, the gateway drops
//! them for it.

use std::io;

use crate::engine::EngineSession;
use crate::sql::lexer::{Kind, mentions_any, statements, tokenize};

use super::cleanup::query;

/// Words that can create such state: `CREATE TEMP ...`, `... INTO TEMPORARY`,
/// `pg_temp.`, session advisory locks, `DECLARE ... WITH HOLD`.
const STATE_WORDS: &[&str] = &[
    "temp",
    "temporary",
    "pg_temp",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "hold",
];

/// How many such things the engine session holds now.
const COUNT: &[u8] = b"SELECT (SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()) \
    + (SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) \
    + (SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable)";

/// Drops all of it; run only for the one client that can hold any.
pub const RELEASE: &[u8] = b"CLOSE ALL; SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD TEMP";

/// What the client is told when the engine becomes reserved for it.
pub const RESERVED_NOTICE: &str = "this session now holds temporary tables, session-level advisory locks or WITH HOLD cursors: the shared engine is reserved for it until they are gone, and other clients wait";

/// True when running `sql` may create such state.
pub fn may_create_session_state(sql: &[u8]) -> bool {
    if !mentions_any(sql, &["temp", "advisory", "hold"]) {
        return false;
    }
    let Some(tokens) = tokenize(sql) else {
        return false;
    };
    statements(&tokens).iter().any(|statement| {
        statement
            .iter()
            .any(|t| t.kind == Kind::Word && STATE_WORDS.iter().any(|w| t.is_word(sql, w)))
    })
}

/// Whether the engine session holds any such state now.
pub async fn holds_session_state(engine: &mut EngineSession) -> io::Result<bool> {
    let reply = engine.run_collecting(&query(COUNT)).await?;
    let count = reply
        .text_rows()
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten());
    Ok(count.as_deref() != Some("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_that_may_create_session_state() {
        for sql in [
            "CREATE TEMP TABLE t(x int)",
            "create temporary view v as select 1",
            "SELECT 1 INTO TEMP t",
            "CREATE TABLE pg_temp.t(x int)",
            "SELECT pg_advisory_lock(1)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        ] {
            assert!(may_create_session_state(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SELECT pg_advisory_xact_lock(1)",
            "SELECT 'temp'",
            "CREATE TABLE t(x int)",
            "DECLARE c CURSOR FOR SELECT 1",
        ] {
            assert!(!may_create_session_state(sql.as_bytes()), "{sql}");
        }
    }
}
