//! Which units of work may be pipelined behind other clients' units: those
//! that are whole, need one round trip, and are certain to leave the engine
//! idle (`ReadyForQuery` status `I`) when they start it idle, without touching
//! the session's settings.
//!
//! The test is deliberately narrow: exactly one statement whose first word can
//! never open a transaction block or start COPY, calling no function that
//! changes session state. Anything else takes the exclusive path, which is
//! always correct, only slower under load.

use std::collections::{HashMap, VecDeque};

use bytes::BytesMut;

use crate::protocol::frame::{self, Reader};
use crate::sql::lexer::{statements, tokenize};

use super::names::Namespace;

/// Statements that, run alone outside a transaction block, end outside one.
const SELF_CONTAINED_KEYWORDS: &[&str] = &[
    "select", "values", "table", "show", "insert", "update", "delete", "with",
];

/// Functions that change the session's state beyond the statement.
const SESSION_FUNCTIONS: &[&str] = &[
    "set_config",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all",
    "pg_export_snapshot",
];

/// True when `sql` is exactly one statement that cannot leave a transaction
/// open, start COPY or change session state.
pub fn is_self_contained(sql: &[u8]) -> bool {
    let Some(tokens) = tokenize(sql) else {
        return false;
    };
    let [statement] = statements(&tokens)[..] else {
        return false;
    };
    SELF_CONTAINED_KEYWORDS
        .iter()
        .any(|keyword| statement[0].is_word(sql, keyword))
        && !statement
            .iter()
            .any(|token| SESSION_FUNCTIONS.iter().any(|f| token.is_word(sql, f)))
}

/// A unit of work that may be pipelined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipelinable {
    /// It ends with its own `Sync` or is one simple `Query`.
    Whole,
    /// It prepares and describes statements and ends with a `Flush`, as
    /// asyncpg's `prepare` does, waiting for the answers before it binds
    /// them. The engine gets a `Sync` after it, whose `ReadyForQuery` the
    /// client never sees, so that the client does not hold the engine until
    /// it sends one.
    Prepares,
}

/// Whether everything in `pending` is exactly one pipelinable unit.
pub fn single_pipelinable_unit(
    pending: &VecDeque<BytesMut>,
    names: &Namespace,
) -> Option<Pipelinable> {
    // Flushes after the end of the unit ask for nothing more (libpq's
    // pipeline mode sends one after each Sync).
    let len = pending.len() - pending.iter().rev().take_while(|m| m[0] == b'H').count();
    let first = pending.front()?;
    if first[0] == b'Q' {
        let sql = Reader::new(frame::body(first)).cstr().ok()?;
        return (len == 1 && is_self_contained(sql)).then_some(Pipelinable::Whole);
    }
    // Parse, Bind, Describe and Close never change the transaction state;
    // only what an Execute runs can.
    let mut unnamed: Option<bool> = None;
    let mut parsed: HashMap<&[u8], bool> = HashMap::new();
    let mut bound: HashMap<&[u8], bool> = HashMap::new();
    for (index, message) in pending.iter().take(len).enumerate() {
        let mut reader = Reader::new(frame::body(message));
        match message[0] {
            b'P' => {
                let name = reader.cstr().ok()?;
                let ok = is_self_contained(reader.cstr().ok()?);
                if name.is_empty() {
                    unnamed = Some(ok);
                } else {
                    parsed.insert(name, ok);
                }
            }
            b'B' => {
                let portal = reader.cstr().ok()?;
                let statement = reader.cstr().ok()?;
                let ok = if statement.is_empty() {
                    unnamed == Some(true)
                } else {
                    parsed
                        .get(statement)
                        .copied()
                        .unwrap_or_else(|| names.is_self_contained(statement))
                };
                bound.insert(portal, ok);
            }
            b'E' => {
                if bound.get(reader.cstr().ok()?) != Some(&true) {
                    return None;
                }
            }
            b'D' | b'C' => {}
            b'S' => return (index + 1 == len).then_some(Pipelinable::Whole),
            _ => return None,
        }
    }
    only_prepares(pending, len).then_some(Pipelinable::Prepares)
}

/// True when the first `len` messages of `pending` only prepare, describe
/// and close statements, and a `Flush` follows them.
fn only_prepares(pending: &VecDeque<BytesMut>, len: usize) -> bool {
    len > 0
        && len < pending.len()
        && pending.iter().take(len).all(|message| match message[0] {
            b'P' => true,
            b'D' | b'C' => message.get(5) == Some(&b'S'),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::backend::push_message;

    #[test]
    fn single_reads_and_writes_are_self_contained() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 5;",
            "  select 1",
            "SELECT 'a;b', \"weird;name\" FROM t",
            "SELECT 'it''s' ;  ",
            "UPDATE t SET x = $1 WHERE id = $2",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "TABLE t",
            // Semicolons inside quotes and comments do not end the statement.
            "SELECT $$;$$",
            "SELECT 1 -- ; BEGIN",
            "SELECT 1 /* ; */",
            "SELECT E'\\'; BEGIN; '",
        ] {
            assert!(is_self_contained(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn anything_that_may_change_the_transaction_state_is_not() {
        for sql in [
            "BEGIN",
            "start transaction",
            "COMMIT",
            "SELECT 1; BEGIN",
            "SELECT 1; SELECT 2",
            "COPY t FROM STDIN",
            "SET search_path = x",
            "DO $$ BEGIN COMMIT; END $$",
            "SELECT set_config('search_path', 'x', false)",
            "SELECT pg_advisory_lock(1)",
            "SELECT 'unterminated",
            "CALL p()",
            "",
        ] {
            assert!(!is_self_contained(sql.as_bytes()), "{sql}");
        }
    }

    fn message(tag: u8, body: &[u8]) -> BytesMut {
        let mut out = Vec::new();
        push_message(&mut out, tag, body);
        BytesMut::from(&out[..])
    }

    fn parse(name: &str, sql: &str) -> BytesMut {
        message(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
    }

    fn bind(portal: &str, statement: &str) -> BytesMut {
        message(
            b'B',
            format!("{portal}\0{statement}\0\0\0\0\0\0\0").as_bytes(),
        )
    }

    fn execute(portal: &str) -> BytesMut {
        message(b'E', format!("{portal}\0\0\0\0\0").as_bytes())
    }

    #[test]
    fn one_extended_select_with_its_sync_is_pipelinable() {
        let names = Namespace::new(1);
        let unit: VecDeque<_> = [
            parse("", "SELECT 1"),
            bind("", ""),
            execute(""),
            message(b'S', b""),
        ]
        .into();
        assert_eq!(
            single_pipelinable_unit(&unit, &names),
            Some(Pipelinable::Whole)
        );
    }

    #[test]
    fn a_statement_prepared_earlier_counts_by_its_sql() {
        let mut names = Namespace::new(1);
        names.plan(parse("read", "SELECT 1")).unwrap();
        names.plan(parse("begin", "BEGIN")).unwrap();
        let read: VecDeque<_> = [bind("", "read"), execute(""), message(b'S', b"")].into();
        let begin: VecDeque<_> = [bind("", "begin"), execute(""), message(b'S', b"")].into();
        assert_eq!(
            single_pipelinable_unit(&read, &names),
            Some(Pipelinable::Whole)
        );
        assert_eq!(single_pipelinable_unit(&begin, &names), None);
    }

    #[test]
    fn preparing_any_statement_is_pipelinable_but_executing_it_may_not_be() {
        let names = Namespace::new(1);
        let describe = message(b'D', b"Sbegin\0");
        let prepare: VecDeque<_> = [parse("begin", "BEGIN"), describe, message(b'S', b"")].into();
        assert_eq!(
            single_pipelinable_unit(&prepare, &names),
            Some(Pipelinable::Whole)
        );
        let run: VecDeque<_> = [
            parse("", "BEGIN"),
            bind("", ""),
            execute(""),
            message(b'S', b""),
        ]
        .into();
        assert_eq!(single_pipelinable_unit(&run, &names), None);
    }

    #[test]
    fn unfinished_or_several_units_take_the_exclusive_path() {
        let names = Namespace::new(1);
        let unsynced: VecDeque<_> = [parse("", "SELECT 1"), bind("", ""), execute("")].into();
        assert_eq!(single_pipelinable_unit(&unsynced, &names), None);
        let two: VecDeque<_> = [message(b'Q', b"SELECT 1\0"), message(b'Q', b"SELECT 2\0")].into();
        assert_eq!(single_pipelinable_unit(&two, &names), None);
        let flush: VecDeque<_> = [parse("", "SELECT 1"), message(b'H', b"")].into();
        assert_eq!(
            single_pipelinable_unit(&flush, &names),
            Some(Pipelinable::Prepares)
        );
        let bound: VecDeque<_> = [bind("", ""), message(b'H', b"")].into();
        assert_eq!(single_pipelinable_unit(&bound, &names), None);
        let portal: VecDeque<_> = [message(b'D', b"P\0"), message(b'H', b"")].into();
        assert_eq!(single_pipelinable_unit(&portal, &names), None);
    }

    #[test]
    fn flushes_after_the_end_of_a_unit_do_not_change_it() {
        let names = Namespace::new(1);
        let flush = || message(b'H', b"");
        let simple: VecDeque<_> = [message(b'Q', b"SELECT 1\0"), flush()].into();
        assert_eq!(
            single_pipelinable_unit(&simple, &names),
            Some(Pipelinable::Whole)
        );
        let extended: VecDeque<_> = [
            parse("", "SELECT 1"),
            bind("", ""),
            execute(""),
            message(b'S', b""),
            flush(),
            flush(),
        ]
        .into();
        assert_eq!(
            single_pipelinable_unit(&extended, &names),
            Some(Pipelinable::Whole)
        );
    }
}
