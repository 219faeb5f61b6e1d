//! Statement and portal names, namespaced per client.
//!
//! Two clients may both `Parse` a statement called `s1`; on the shared engine
//! session they become `pgs<client>_s1` and `pgs<client>_s1` with different
//! client numbers. The unnamed statement and portal keep their empty names: they
//! only live inside one unit of work, which the engine runs for one client.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::BytesMut;

use crate::protocol::backend::push_message;
use crate::protocol::error::PgError;
use crate::protocol::frame::{self, Reader};

use super::pipeline::is_self_contained;
use super::settings::may_change_settings;

/// PostgreSQL compares statement and portal names on their first 63 bytes.
const MAX_NAME_LEN: usize = 63;

/// What the gateway knows of a named prepared statement's SQL.
#[derive(Debug, Clone, Copy)]
struct StatementInfo {
    /// See `pipeline::is_self_contained`.
    self_contained: bool,
    /// See `settings::may_change_settings`.
    changes_settings: bool,
}

/// One client's names and the ones it has on the engine.
pub struct Namespace {
    prefix: String,
    /// The client's named prepared statements, by engine name.
    statements: HashMap<Vec<u8>, StatementInfo>,
}

impl Namespace {
    pub fn new(client_id: i32) -> Self {
        Self {
            prefix: format!("pgs{client_id}_"),
            statements: HashMap::new(),
        }
    }

    /// The engine's name for a client's statement or portal name.
    pub fn engine_name(&self, name: &[u8]) -> Vec<u8> {
        if name.is_empty() {
            return Vec::new();
        }
        let mut out = self.prefix.as_bytes().to_vec();
        if out.len() + name.len() <= MAX_NAME_LEN {
            out.extend_from_slice(name);
        } else {
            let mut hasher = DefaultHasher::new();
            name.hash(&mut hasher);
            out.extend_from_slice(format!("h{:016x}", hasher.finish()).as_bytes());
        }
        out
    }

    /// Engine names of the statements the client still has.
    pub fn statements(&self) -> impl Iterator<Item = &[u8]> {
        self.statements.keys().map(Vec::as_slice)
    }

    /// Whether the client's statement `name` is known and self-contained.
    pub fn is_self_contained(&self, name: &[u8]) -> bool {
        self.info(name).is_some_and(|info| info.self_contained)
    }

    /// Whether running the client's statement `name` may change settings.
    pub fn changes_settings(&self, name: &[u8]) -> bool {
        self.info(name).is_some_and(|info| info.changes_settings)
    }

    fn info(&self, name: &[u8]) -> Option<StatementInfo> {
        self.statements.get(&self.engine_name(name)).copied()
    }

    /// Rewrites a frontend message for the engine when it names a statement or
    /// portal; returns `None` when the message goes through unchanged.
    pub fn rewrite(&mut self, message: &[u8]) -> Result<Option<BytesMut>, PgError> {
        let body = frame::body(message);
        let mut reader = Reader::new(body);
        let mut out = Vec::with_capacity(body.len() + 16);
        match message[0] {
            b'P' => {
                let name = reader.cstr()?;
                if name.is_empty() {
                    return Ok(None);
                }
                let engine = self.engine_name(name);
                push_cstr(&mut out, &engine);
                let sql = Reader::new(reader.rest()).cstr()?;
                let info = StatementInfo {
                    self_contained: is_self_contained(sql),
                    changes_settings: may_change_settings(sql),
                };
                self.statements.insert(engine, info);
            }
            b'B' => {
                let portal = reader.cstr()?;
                let statement = reader.cstr()?;
                if portal.is_empty() && statement.is_empty() {
                    return Ok(None);
                }
                push_cstr(&mut out, &self.engine_name(portal));
                push_cstr(&mut out, &self.engine_name(statement));
            }
            b'E' => {
                let portal = reader.cstr()?;
                if portal.is_empty() {
                    return Ok(None);
                }
                push_cstr(&mut out, &self.engine_name(portal));
            }
            b'D' | b'C' => {
                let kind = reader.byte()?;
                let name = reader.cstr()?;
                if name.is_empty() {
                    return Ok(None);
                }
                let engine = self.engine_name(name);
                if message[0] == b'C' && kind == b'S' {
                    self.statements.remove(&engine);
                }
                out.push(kind);
                push_cstr(&mut out, &engine);
            }
            _ => return Ok(None),
        }
        out.extend_from_slice(reader.rest());
        let mut rewritten = Vec::with_capacity(out.len() + 5);
        push_message(&mut rewritten, message[0], &out);
        Ok(Some(BytesMut::from(&rewritten[..])))
    }
}

fn push_cstr(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(value);
    out.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_message(&mut out, tag, body);
        out
    }

    #[test]
    fn parse_names_are_prefixed_and_remembered() {
        let mut names = Namespace::new(7);
        let parse = message(b'P', b"s1\0SELECT 1\0\0\0");
        let rewritten = names.rewrite(&parse).unwrap().unwrap();
        assert_eq!(
            &rewritten[..],
            &message(b'P', b"pgs7_s1\0SELECT 1\0\0\0")[..]
        );
        assert_eq!(
            names.statements().collect::<Vec<_>>(),
            vec![b"pgs7_s1".as_slice()]
        );
    }

    #[test]
    fn two_clients_get_different_engine_names() {
        let a = Namespace::new(1);
        let b = Namespace::new(2);
        assert_ne!(a.engine_name(b"s1"), b.engine_name(b"s1"));
    }

    #[test]
    fn bind_rewrites_portal_and_statement_and_keeps_parameters() {
        let mut names = Namespace::new(3);
        let bind = message(b'B', b"p\0s\0\0\0\0\x01\0\0\0\x011\0\0");
        let rewritten = names.rewrite(&bind).unwrap().unwrap();
        assert_eq!(
            &rewritten[..],
            &message(b'B', b"pgs3_p\0pgs3_s\0\0\0\0\x01\0\0\0\x011\0\0")[..]
        );
    }

    #[test]
    fn unnamed_statements_pass_unchanged() {
        let mut names = Namespace::new(3);
        assert!(
            names
                .rewrite(&message(b'P', b"\0SELECT 1\0\0\0"))
                .unwrap()
                .is_none()
        );
        assert!(
            names
                .rewrite(&message(b'B', b"\0\0\0\0\0\0\0\0"))
                .unwrap()
                .is_none()
        );
        assert!(
            names
                .rewrite(&message(b'E', b"\0\0\0\0\0"))
                .unwrap()
                .is_none()
        );
        assert!(
            names
                .rewrite(&message(b'Q', b"SELECT 1\0"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn close_forgets_the_statement() {
        let mut names = Namespace::new(4);
        names.rewrite(&message(b'P', b"s\0SELECT 1\0\0\0")).unwrap();
        let close = names.rewrite(&message(b'C', b"Ss\0")).unwrap().unwrap();
        assert_eq!(&close[..], &message(b'C', b"Spgs4_s\0")[..]);
        assert_eq!(names.statements().count(), 0);
    }

    #[test]
    fn long_names_stay_within_the_engine_limit_and_distinct() {
        let names = Namespace::new(123456);
        let long_a = [b'a'; 80];
        let mut long_b = [b'a'; 80];
        long_b[79] = b'b';
        let a = names.engine_name(&long_a);
        let b = names.engine_name(&long_b);
        assert!(a.len() <= MAX_NAME_LEN);
        assert_ne!(a, b);
    }

    #[test]
    fn malformed_messages_are_protocol_violations() {
        let mut names = Namespace::new(1);
        let err = names
            .rewrite(&message(b'B', b"portal-without-terminator"))
            .unwrap_err();
        assert_eq!(err.code, "08P01");
    }
}
