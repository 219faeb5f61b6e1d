//! Statement and portal names, namespaced per client.
//!
//! Two clients may both `Parse` a statement called `s1`; on the shared engine
//! session they become `pgs<client>_s1` and `pgs<client>_s1` with different
//! client numbers. The unnamed statement and portal keep their empty names: they
//! only live inside one unit of work, which the engine runs for one client.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::{Bytes, BytesMut};

use crate::protocol::backend::push_message;
use crate::protocol::error::PgError;
use crate::protocol::frame::{self, Reader};

use crate::sql::lexer::{Kind, statements, tokenize};

use super::pipeline::is_self_contained;
use super::settings::may_change_settings;

/// PostgreSQL compares statement and portal names on their first 63 bytes.
const MAX_NAME_LEN: usize = 63;

/// What the gateway knows of a named prepared statement.
#[derive(Debug, Clone)]
struct StatementInfo {
    /// See `pipeline::is_self_contained`.
    self_contained: bool,
    /// See `settings::may_change_settings`.
    changes_settings: bool,
    /// The `Parse` message that creates it on an engine session (engine
    /// names), to create it again on a session that lacks it; `None` for
    /// statements made by SQL `PREPARE`.
    parse: Option<Bytes>,
}

impl StatementInfo {
    fn of(sql: &[u8]) -> Self {
        Self {
            self_contained: is_self_contained(sql),
            changes_settings: may_change_settings(sql),
            parse: None,
        }
    }
}

/// What a frontend message does with a named statement (engine names).
#[derive(Debug, PartialEq, Eq)]
pub enum StatementUse {
    None,
    /// `Parse` creates it.
    Parses(Vec<u8>),
    /// `Bind` or `Describe` needs it to exist.
    Needs(Vec<u8>),
    /// `Close` removes it.
    Closes(Vec<u8>),
}

/// One client's names and the ones it has on the engine.
pub struct Namespace {
    prefix: String,
    /// The client's named prepared statements, by engine name.
    statements: HashMap<Vec<u8>, StatementInfo>,
    /// How many times each statement name was prepared. A name prepared again
    /// gets a new engine name: on an engine with several sessions, a copy of
    /// the closed statement may remain on a session the `Close` never reached.
    generations: HashMap<Vec<u8>, u32>,
}

impl Namespace {
    pub fn new(client_id: i32) -> Self {
        Self {
            prefix: format!("pgs{client_id}_"),
            statements: HashMap::new(),
            generations: HashMap::new(),
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

    /// The engine's name for the client's statement `name` as prepared now.
    pub fn statement_name(&self, name: &[u8]) -> Vec<u8> {
        let generation = self.generations.get(name).copied().unwrap_or(1);
        self.generation_name(name, generation)
    }

    /// The engine name the next `Parse` or `PREPARE` of `name` gets: a new
    /// one, unless the client still has the statement (the engine then
    /// refuses the duplicate with 42P05, as PostgreSQL does).
    fn next_statement_name(&self, name: &[u8]) -> Vec<u8> {
        if self.exists(name) {
            return self.statement_name(name);
        }
        let generation = self.generations.get(name).copied().unwrap_or(0) + 1;
        self.generation_name(name, generation)
    }

    /// The client has a statement called `name` now.
    fn exists(&self, name: &[u8]) -> bool {
        !name.is_empty() && self.statements.contains_key(&self.statement_name(name))
    }

    fn generation_name(&self, name: &[u8], generation: u32) -> Vec<u8> {
        if generation <= 1 || name.is_empty() {
            return self.engine_name(name);
        }
        let mut versioned = name.to_vec();
        versioned.push(0x1f);
        versioned.extend_from_slice(generation.to_string().as_bytes());
        self.engine_name(&versioned)
    }

    /// Gives `name` its next engine name and returns it.
    fn prepare_name(&mut self, name: &[u8]) -> Vec<u8> {
        let engine = self.next_statement_name(name);
        if !name.is_empty() && !self.exists(name) {
            *self.generations.entry(name.to_vec()).or_insert(0) += 1;
        }
        engine
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

    fn info(&self, name: &[u8]) -> Option<&StatementInfo> {
        self.statements.get(&self.statement_name(name))
    }

    /// The `Parse` message that creates the statement with this engine name.
    pub fn parse_message(&self, engine_name: &[u8]) -> Option<Bytes> {
        self.statements.get(engine_name)?.parse.clone()
    }

    /// What the client's `message` does with a named statement.
    pub fn statement_use(&self, message: &[u8]) -> StatementUse {
        let mut reader = Reader::new(frame::body(message));
        let named = |name: Result<&[u8], PgError>| match name {
            Ok(name) if !name.is_empty() => Some(self.statement_name(name)),
            _ => None,
        };
        let kind_is_statement =
            |reader: &mut Reader<'_>| reader.byte().is_ok_and(|kind| kind == b'S');
        let result = match message[0] {
            b'P' => match reader.cstr() {
                Ok(name) if !name.is_empty() => {
                    Some(StatementUse::Parses(self.next_statement_name(name)))
                }
                _ => None,
            },
            b'B' => named(reader.cstr().and_then(|_portal| reader.cstr())).map(StatementUse::Needs),
            b'D' if kind_is_statement(&mut reader) => named(reader.cstr()).map(StatementUse::Needs),
            b'C' if kind_is_statement(&mut reader) => {
                named(reader.cstr()).map(StatementUse::Closes)
            }
            _ => None,
        };
        result.unwrap_or(StatementUse::None)
    }

    /// Forgets every statement, returning their engine names (to close them).
    pub fn take_statements(&mut self) -> Vec<Vec<u8>> {
        self.statements.drain().map(|(name, _)| name).collect()
    }

    /// Rewrites the statement names in SQL-level `PREPARE name`, `EXECUTE
    /// name` and `DEALLOCATE [PREPARE] name`, and records what they create or
    /// remove; `None` when `sql` names no statement. `DEALLOCATE ALL` is left
    /// alone: the gateway carries it out itself.
    pub fn rewrite_sql(&mut self, sql: &[u8]) -> Option<Vec<u8>> {
        let tokens = tokenize(sql)?;
        let mut replacements = Vec::new();
        for statement in statements(&tokens) {
            let first = statement[0];
            let (name_at, action) = if first.is_word(sql, "prepare") {
                (1, NameUse::Prepare)
            } else if first.is_word(sql, "execute") {
                (1, NameUse::Execute)
            } else if first.is_word(sql, "deallocate") {
                let skip = usize::from(statement.get(1).is_some_and(|t| t.is_word(sql, "prepare")));
                (1 + skip, NameUse::Deallocate)
            } else {
                continue;
            };
            let Some(token) = statement.get(name_at) else {
                continue;
            };
            let two_phase = action == NameUse::Prepare
                && token.is_word(sql, "transaction")
                && statement.get(2).is_some_and(|t| t.kind == Kind::String);
            if two_phase || (action == NameUse::Deallocate && token.is_word(sql, "all")) {
                continue;
            }
            let name = match token.kind {
                Kind::Word => token.text(sql).to_ascii_lowercase(),
                Kind::QuotedIdent => unquote(token.text(sql)),
                _ => continue,
            };
            let duplicate = self.exists(&name);
            let engine = if action == NameUse::Prepare {
                self.prepare_name(&name)
            } else {
                self.statement_name(&name)
            };
            match action {
                NameUse::Prepare if !duplicate => {
                    let body = statement
                        .iter()
                        .position(|t| t.is_word(sql, "as"))
                        .and_then(|at| statement.get(at + 1))
                        .map_or(&b""[..], |t| {
                            &sql[t.start..statement[statement.len() - 1].end]
                        });
                    self.statements
                        .insert(engine.clone(), StatementInfo::of(body));
                }
                NameUse::Deallocate => {
                    self.statements.remove(&engine);
                }
                NameUse::Prepare | NameUse::Execute => {}
            }
            replacements.push((token.start, token.end, quote_identifier(&engine)));
        }
        if replacements.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(sql.len() + 16 * replacements.len());
        let mut at = 0;
        for (start, end, replacement) in replacements {
            out.extend_from_slice(&sql[at..start]);
            out.extend_from_slice(&replacement);
            at = end;
        }
        out.extend_from_slice(&sql[at..]);
        Some(out)
    }

    /// Rewrites a frontend message for the engine when it names a statement or
    /// portal; returns `None` when the message goes through unchanged.
    pub fn rewrite(&mut self, message: &[u8]) -> Result<Option<BytesMut>, PgError> {
        let body = frame::body(message);
        let mut reader = Reader::new(body);
        let mut out = Vec::with_capacity(body.len() + 16);
        let mut created = None;
        match message[0] {
            b'Q' => {
                let sql = reader.cstr()?;
                let Some(sql) = self.rewrite_sql(sql) else {
                    return Ok(None);
                };
                push_cstr(&mut out, &sql);
            }
            b'P' => {
                let name = reader.cstr()?;
                let sql = reader.cstr()?;
                let rewritten_sql = self.rewrite_sql(sql);
                if name.is_empty() && rewritten_sql.is_none() {
                    return Ok(None);
                }
                let duplicate = self.exists(name);
                let engine = self.prepare_name(name);
                push_cstr(&mut out, &engine);
                push_cstr(&mut out, rewritten_sql.as_deref().unwrap_or(sql));
                if !name.is_empty() && !duplicate {
                    created = Some((engine, StatementInfo::of(sql)));
                }
            }
            b'B' => {
                let portal = reader.cstr()?;
                let statement = reader.cstr()?;
                if portal.is_empty() && statement.is_empty() {
                    return Ok(None);
                }
                push_cstr(&mut out, &self.engine_name(portal));
                push_cstr(&mut out, &self.statement_name(statement));
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
                let engine = if kind == b'S' {
                    self.statement_name(name)
                } else {
                    self.engine_name(name)
                };
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
        if let Some((engine, mut info)) = created {
            info.parse = Some(Bytes::copy_from_slice(&rewritten));
            self.statements.insert(engine, info);
        }
        Ok(Some(BytesMut::from(&rewritten[..])))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameUse {
    Prepare,
    Execute,
    Deallocate,
}

/// The name inside a `"quoted"` identifier.
fn unquote(quoted: &[u8]) -> Vec<u8> {
    let inner = &quoted[1..quoted.len() - 1];
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        out.push(inner[i]);
        i += if inner[i] == b'"' { 2 } else { 1 };
    }
    out
}

fn quote_identifier(name: &[u8]) -> Vec<u8> {
    let mut out = vec![b'"'];
    for &b in name {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
    out
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
    fn sql_level_prepare_execute_deallocate_use_the_same_names() {
        let mut names = Namespace::new(5);
        let sql = names
            .rewrite_sql(b"PREPARE Plan(int) AS SELECT $1; EXECUTE plan(1); EXECUTE \"plan\"(2)")
            .unwrap();
        assert_eq!(
            String::from_utf8(sql).unwrap(),
            "PREPARE \"pgs5_plan\"(int) AS SELECT $1; EXECUTE \"pgs5_plan\"(1); EXECUTE \"pgs5_plan\"(2)"
        );
        assert!(
            names.is_self_contained(b"plan"),
            "the protocol sees the same statement"
        );
        let sql = names.rewrite_sql(b"DEALLOCATE PREPARE plan").unwrap();
        assert_eq!(
            String::from_utf8(sql).unwrap(),
            "DEALLOCATE PREPARE \"pgs5_plan\""
        );
        assert_eq!(names.statements().count(), 0);
        assert!(names.rewrite_sql(b"DEALLOCATE ALL").is_none());
        assert!(names.rewrite_sql(b"PREPARE TRANSACTION 'gid'").is_none());
        assert!(
            names
                .rewrite_sql(b"SELECT 'PREPARE x AS SELECT 1'")
                .is_none()
        );
    }

    #[test]
    fn a_statement_prepared_again_gets_a_new_engine_name() {
        let mut names = Namespace::new(8);
        let parse = message(b'P', b"s\0SELECT 1\0\0\0");
        names.rewrite(&parse).unwrap();
        names.rewrite(&message(b'C', b"Ss\0")).unwrap();
        let next = names.statement_use(&parse);
        let again = names.rewrite(&parse).unwrap().unwrap();
        let StatementUse::Parses(second) = next else {
            panic!("a Parse creates a statement");
        };
        assert_ne!(second, b"pgs8_s".to_vec());
        assert_eq!(names.statement_name(b"s"), second);
        assert!(again.windows(second.len()).any(|w| w == second.as_slice()));
    }

    #[test]
    fn preparing_a_name_the_client_still_has_reaches_the_engine_unchanged() {
        let mut names = Namespace::new(9);
        let first = message(b'P', b"s\0SELECT 1\0\0\0");
        let first_rewritten = names.rewrite(&first).unwrap().unwrap();
        // The engine refuses this one with 42P05; the first SQL stays the
        // statement's.
        let again = names
            .rewrite(&message(b'P', b"s\0SELECT 2\0\0\0"))
            .unwrap()
            .unwrap();
        assert!(again.starts_with(b"P") && again.windows(7).any(|w| w == b"pgs9_s\0"));
        assert_eq!(
            names.parse_message(b"pgs9_s").unwrap(),
            &first_rewritten[..]
        );
    }

    #[test]
    fn statement_uses_name_the_engine_statement() {
        let mut names = Namespace::new(6);
        let parse = message(b'P', b"s\0SELECT 1\0\0\0");
        assert_eq!(
            names.statement_use(&parse),
            StatementUse::Parses(b"pgs6_s".to_vec())
        );
        let rewritten = names.rewrite(&parse).unwrap().unwrap();
        assert_eq!(names.parse_message(b"pgs6_s").unwrap(), &rewritten[..]);
        assert_eq!(
            names.statement_use(&message(b'B', b"\0s\0\0\0\0\0\0\0")),
            StatementUse::Needs(b"pgs6_s".to_vec())
        );
        assert_eq!(
            names.statement_use(&message(b'D', b"Ss\0")),
            StatementUse::Needs(b"pgs6_s".to_vec())
        );
        assert_eq!(
            names.statement_use(&message(b'D', b"Pp\0")),
            StatementUse::None
        );
        assert_eq!(
            names.statement_use(&message(b'C', b"Ss\0")),
            StatementUse::Closes(b"pgs6_s".to_vec())
        );
        assert_eq!(
            names.statement_use(&message(b'B', b"\0\0\0\0\0\0\0\0")),
            StatementUse::None
        );
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
