//! Which units of work may be pipelined behind other clients' units: those
//! that are whole, need one round trip, and are certain to leave the engine
//! idle (`ReadyForQuery` status `I`) when they start it idle, without touching
//! the session's settings.
//!
//! The test is deliberately narrow (see `self_contained`); anything else
//! takes the exclusive path, which is always correct, only slower under load.

use std::collections::{HashMap, VecDeque};

use bytes::BytesMut;

use super::names::Namespace;
use super::self_contained::is_self_contained;
use crate::protocol::frame::{self, Reader};

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
