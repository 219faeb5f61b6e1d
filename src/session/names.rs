//! Statement and portal names: what a client calls them, and what the engine
//! session calls them.
//!
//! Many clients share an engine session, so their names must not collide.
//!
//! - A statement prepared through the protocol (`Parse`) is named on the
//!   engine after its text and parameter types: `pgs_<digest>`. Every client
//!   that prepares the same query uses the one engine statement, and a session
//!   holds one copy per distinct query however many clients prepared it. The
//!   client's own name maps to it; closing it only forgets the mapping.
//! - A statement made with SQL `PREPARE` is the client's alone:
//!   `pgs<client>v<generation>_<name>`. The generation grows each time the
//!   name is prepared anew, so a stale copy left on another session never
//!   collides or answers for a deallocated one.
//! - Portals live inside one unit of work at most, on one session:
//!   `pgs<client>_<name>`.
//!
//! The unnamed statement and portal keep their empty names: they only live
//! inside one unit of work, which the engine runs for one client.
//!
//! What a message needs (statements the session must have before it runs) is
//! worked out here, without looking at any session; `placement` then compares
//! it with the session the message runs on.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

use crate::protocol::backend::push_message;
use crate::protocol::error::PgError;
use crate::protocol::frame::{self, Reader};

use crate::sql::lexer::{Kind, Token, mentions_any, statements, tokenize};

use super::cleanup::query;
use super::effects::SessionEffects;
use super::reset::{
    DEALLOCATE_ALL_STAND_IN, DISCARD_ALL_REFUSAL, ResetCommand, reset_command_sql, reset_statement,
};
use super::self_contained::is_self_contained;

/// PostgreSQL compares statement and portal names on their first 63 bytes.
const MAX_NAME_LEN: usize = 63;

/// A statement name no one ever prepares: a client's `Close` of a shared
/// statement closes this instead, which PostgreSQL answers with
/// `CloseComplete` like any other.
pub const NO_STATEMENT: &[u8] = b"pgs_none";

/// How to create a statement on a session that lacks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recreate {
    /// This `Parse` message (engine names).
    Parse(Bytes),
    /// This simple `Query` message: the client's SQL `PREPARE`.
    Prepare(Bytes),
}

/// A statement that must exist on the session before a message runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub engine: Vec<u8>,
    pub recreate: Recreate,
}

/// A client's `Parse` of a statement shared by query text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedParse {
    pub engine: Vec<u8>,
    /// The client's name for it, forgotten again if the `Parse` fails.
    pub client_name: Vec<u8>,
}

/// A client message as the engine gets it, and what it does with the
/// session's statements.
#[derive(Debug, Default, Clone)]
pub struct Planned {
    /// The message with engine names.
    pub message: BytesMut,
    /// Statements it uses, which the session must have first.
    pub needs: Vec<Need>,
    /// Set when the message prepares a shared statement, which a session that
    /// already has it need not prepare again.
    pub shared_parse: Option<SharedParse>,
    /// Statements it creates on the session (SQL `PREPARE`).
    pub creates: Vec<Vec<u8>>,
    /// Statements it removes from the session (SQL `DEALLOCATE`).
    pub removes: Vec<Vec<u8>>,
    /// Commands whose answers the client must see with their own tag (a
    /// `DEALLOCATE ALL` run as a stand-in).
    pub rewrites: Vec<CommandRewrite>,
    /// What did not happen when the message fails (a simple `Query` that is
    /// one `PREPARE`).
    pub undone_on_error: Vec<Undone>,
}

/// Something that did not happen because its message failed or was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undone {
    /// The session lacks this statement (engine name).
    NotPrepared(Vec<u8>),
    /// The client's statement `name` does not exist after all.
    ClientForgets { name: Vec<u8>, engine: Vec<u8> },
    /// The client's statement `name` exists after all: its `Close` did not
    /// run.
    ClientKeeps { name: Vec<u8>, statement: Forgotten },
    /// The client's sequence failed before a `Sync` the gateway added: its
    /// messages up to its own `Sync` are skipped, as PostgreSQL skips them.
    SkipToSync,
}

/// A command whose `CommandComplete` the client must see with another tag,
/// and what its effect undoes when it never completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRewrite {
    /// Which command of its message: a statement of a simple `Query`, or 0
    /// for an `Execute`.
    pub index: u32,
    pub tag: &'static str,
    pub undone_if_skipped: Vec<Undone>,
}

/// A client's statement that a `Close` removed, kept to restore it if the
/// `Close` did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgotten(ClientStatement);

/// What the gateway knows of one of a client's statements.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClientStatement {
    engine: Vec<u8>,
    recreate: Recreate,
    /// See `pipeline::is_self_contained`.
    self_contained: bool,
    /// What running it may change in the client's session.
    effects: SessionEffects,
    /// The statement is a `DISCARD ALL` or `DEALLOCATE ALL`.
    reset: Option<ResetCommand>,
}

impl ClientStatement {
    fn is_shared(&self) -> bool {
        matches!(self.recreate, Recreate::Parse(_))
    }

    fn need(&self) -> Need {
        Need {
            engine: self.engine.clone(),
            recreate: self.recreate.clone(),
        }
    }
}

/// What SQL text does with statement names.
#[derive(Debug, Default)]
struct SqlEffects {
    needs: Vec<Need>,
    creates: Vec<Vec<u8>>,
    removes: Vec<Vec<u8>>,
    rewrites: Vec<CommandRewrite>,
    /// The statements `PREPARE` makes, by the client's name and the
    /// engine's.
    prepared: Vec<(Vec<u8>, Vec<u8>)>,
    /// How many statements the SQL holds.
    statement_count: usize,
}

/// One client's names.
pub struct Namespace {
    prefix: String,
    /// The client's prepared statements, by the client's name.
    statements: HashMap<Vec<u8>, ClientStatement>,
    /// How many times each name was given to SQL `PREPARE`.
    generations: HashMap<Vec<u8>, u32>,
    /// The unnamed statement is a `DISCARD ALL` or `DEALLOCATE ALL`.
    unnamed_reset: Option<ResetCommand>,
    /// What running the unnamed statement may change.
    unnamed_effects: SessionEffects,
    /// Portals bound to such a statement, by the client's name.
    reset_portals: HashMap<Vec<u8>, ResetCommand>,
}

impl Namespace {
    pub fn new(client_id: i32) -> Self {
        Self {
            prefix: format!("pgs{client_id}_"),
            statements: HashMap::new(),
            generations: HashMap::new(),
            unnamed_reset: None,
            unnamed_effects: SessionEffects::default(),
            reset_portals: HashMap::new(),
        }
    }

    /// The engine's name for a client's portal name, or for a statement
    /// name the client does not have (which no session has either, so the
    /// engine reports it missing as PostgreSQL would).
    pub fn engine_name(&self, name: &[u8]) -> Vec<u8> {
        self.scoped_name(&self.prefix, name)
    }

    fn scoped_name(&self, prefix: &str, name: &[u8]) -> Vec<u8> {
        if name.is_empty() {
            return Vec::new();
        }
        let mut out = prefix.as_bytes().to_vec();
        if out.len() + name.len() <= MAX_NAME_LEN {
            out.extend_from_slice(name);
        } else {
            let mut hasher = DefaultHasher::new();
            name.hash(&mut hasher);
            out.extend_from_slice(format!("h{:016x}", hasher.finish()).as_bytes());
        }
        out
    }

    /// The engine's name for the client's statement `name`.
    pub fn statement_name(&self, name: &[u8]) -> Vec<u8> {
        match self.statements.get(name) {
            Some(statement) => statement.engine.clone(),
            None => self.engine_name(name),
        }
    }

    /// A new engine name for SQL `PREPARE name`.
    fn next_prepared_name(&mut self, name: &[u8]) -> Vec<u8> {
        let generation = self.generations.entry(name.to_vec()).or_insert(0);
        *generation += 1;
        let prefix = format!("{}v{generation}_", self.prefix.trim_end_matches('_'));
        self.scoped_name(&prefix, name)
    }

    /// Engine names of the statements only this client uses (its SQL
    /// `PREPARE`s), to close when it leaves.
    pub fn own_statements(&self) -> Vec<Vec<u8>> {
        self.statements
            .values()
            .filter(|statement| !statement.is_shared())
            .map(|statement| statement.engine.clone())
            .collect()
    }

    /// Forgets every statement (`DISCARD ALL`, `DEALLOCATE ALL`), returning
    /// the engine names of the client's own ones, to close.
    pub fn take_statements(&mut self) -> Vec<Vec<u8>> {
        let own = self.own_statements();
        self.statements.clear();
        own
    }

    /// Forgets every statement for a `DEALLOCATE ALL` that the engine runs
    /// as a stand-in, returning what restores them if it does not run. Their
    /// copies stay on the session, where nothing names them any more, until
    /// its limit closes them.
    fn forget_all(&mut self) -> Vec<Undone> {
        self.statements
            .drain()
            .map(|(name, statement)| Undone::ClientKeeps {
                name,
                statement: Forgotten(statement),
            })
            .collect()
    }

    /// Whether the client's statement `name` (the unnamed one for an empty
    /// name) is a `DISCARD ALL` or `DEALLOCATE ALL`.
    pub fn reset_of(&self, name: &[u8]) -> Option<ResetCommand> {
        if name.is_empty() {
            return self.unnamed_reset;
        }
        self.statements
            .get(name)
            .and_then(|statement| statement.reset)
    }

    /// Forgets the client's statement `name` if it is still `engine`: its
    /// `Parse` failed or was skipped.
    fn forget(&mut self, name: &[u8], engine: &[u8]) {
        if self
            .statements
            .get(name)
            .is_some_and(|statement| statement.engine == engine)
        {
            self.statements.remove(name);
        }
    }

    /// Corrects the client's names for a message that failed or was
    /// skipped; what concerns only the session is left to the caller.
    pub fn undo(&mut self, undone: Undone) {
        match undone {
            Undone::ClientForgets { name, engine } => self.forget(&name, &engine),
            // Unless the name was used again since.
            Undone::ClientKeeps { name, statement } => {
                self.statements.entry(name).or_insert(statement.0);
            }
            Undone::NotPrepared(_) | Undone::SkipToSync => {}
        }
    }

    /// Whether the client's statement `name` is known and self-contained.
    pub fn is_self_contained(&self, name: &[u8]) -> bool {
        self.statements
            .get(name)
            .is_some_and(|statement| statement.self_contained)
    }

    /// What running the client's statement `name` (the unnamed one for an
    /// empty name) may change in its session.
    pub fn effects_of(&self, name: &[u8]) -> Option<&SessionEffects> {
        if name.is_empty() {
            return Some(&self.unnamed_effects);
        }
        self.statements
            .get(name)
            .map(|statement| &statement.effects)
    }

    /// The SQL of the client's statement `name`, when it was prepared
    /// through the protocol.
    pub fn statement_sql(&self, name: &[u8]) -> Option<&[u8]> {
        let Recreate::Parse(parse) = &self.statements.get(name)?.recreate else {
            return None;
        };
        let mut reader = Reader::new(frame::body(parse));
        reader.cstr().ok()?;
        reader.cstr().ok()
    }

    /// The need for the client's statement `name`, if it has one by that
    /// name.
    fn need(&self, name: &[u8]) -> Option<Need> {
        self.statements.get(name).map(ClientStatement::need)
    }

    /// Rewrites the statement names in SQL-level `PREPARE name`, `EXECUTE
    /// name` and `DEALLOCATE [PREPARE] name`, and records what they create or
    /// remove; `None` when `sql` names no statement. `DEALLOCATE ALL` becomes
    /// a stand-in that leaves other clients' statements alone, and so does a
    /// `DISCARD ALL` being prepared (see `reset`); run in a simple query, the
    /// former makes the client forget its statements.
    fn rewrite_sql(&mut self, sql: &[u8], in_query: bool) -> Option<(Vec<u8>, SqlEffects)> {
        if !mentions_any(sql, &["prepare", "execute", "deallocate", "discard"]) {
            return None;
        }
        let tokens = tokenize(sql)?;
        let mut replacements = Vec::new();
        let mut effects = SqlEffects::default();
        let all = statements(&tokens);
        effects.statement_count = all.len();
        for (index, statement) in all.into_iter().enumerate() {
            let first = statement[0];
            let whole = (first.start, statement[statement.len() - 1].end);
            match reset_statement(sql, statement) {
                Some(ResetCommand::DeallocateAll) => {
                    replacements.push((whole.0, whole.1, DEALLOCATE_ALL_STAND_IN.to_vec()));
                    if in_query {
                        effects.rewrites.push(CommandRewrite {
                            index: index as u32,
                            tag: ResetCommand::DeallocateAll.tag(),
                            undone_if_skipped: self.forget_all(),
                        });
                    }
                    continue;
                }
                // Among other statements of a query, or inside a
                // transaction, the engine refuses it as PostgreSQL does.
                Some(ResetCommand::DiscardAll) if in_query => continue,
                Some(ResetCommand::DiscardAll) => {
                    replacements.push((whole.0, whole.1, DISCARD_ALL_REFUSAL.to_vec()));
                    continue;
                }
                None => {}
            }
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
            if two_phase {
                continue;
            }
            let name = match token.kind {
                Kind::Word => token.text(sql).to_ascii_lowercase(),
                Kind::QuotedIdent => unquote(token.text(sql)),
                _ => continue,
            };
            let existing = self.need(&name);
            let engine = match (action, &existing) {
                (_, Some(need)) => need.engine.clone(),
                (NameUse::Prepare, None) => self.next_prepared_name(&name),
                (_, None) => self.engine_name(&name),
            };
            match (action, existing) {
                // Preparing a name the client has: the engine refuses it
                // with 42P05 once the session has the first one.
                (NameUse::Prepare, Some(need)) | (NameUse::Execute, Some(need)) => {
                    effects.needs.push(need);
                }
                (NameUse::Prepare, None) => {
                    let body = statement
                        .iter()
                        .position(|t| t.is_word(sql, "as"))
                        .and_then(|at| statement.get(at + 1))
                        .map_or(&b""[..], |t| {
                            &sql[t.start..statement[statement.len() - 1].end]
                        });
                    let prepare = replaced(sql, statement, token, &quote_identifier(&engine));
                    effects.prepared.push((name.clone(), engine.clone()));
                    self.statements.insert(
                        name,
                        ClientStatement {
                            engine: engine.clone(),
                            recreate: Recreate::Prepare(Bytes::from(query(&prepare))),
                            self_contained: is_self_contained(body),
                            effects: SessionEffects::of_sql(body),
                            reset: None,
                        },
                    );
                    effects.creates.push(engine.clone());
                }
                (NameUse::Deallocate, Some(need)) => {
                    // DEALLOCATE of a missing statement is an error, so the
                    // session gets it first.
                    self.statements.remove(&name);
                    effects.removes.push(need.engine.clone());
                    effects.needs.push(need);
                }
                (NameUse::Execute | NameUse::Deallocate, None) => {}
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
        Some((out, effects))
    }

    /// The message as the engine gets it, and what it needs; records the
    /// statements the message creates or closes.
    pub fn plan(&mut self, message: BytesMut) -> Result<Planned, PgError> {
        let body = frame::body(&message);
        let mut reader = Reader::new(body);
        let mut planned = Planned::default();
        let mut out = Vec::with_capacity(body.len() + 40);
        match message[0] {
            b'Q' => {
                let sql = reader.cstr()?;
                let Some((sql, effects)) = self.rewrite_sql(sql, true) else {
                    planned.message = message;
                    return Ok(planned);
                };
                if effects.statement_count == 1 {
                    // An error can only be the PREPARE's own: then there is
                    // no such statement, on the session or for the client.
                    for (name, engine) in &effects.prepared {
                        planned
                            .undone_on_error
                            .push(Undone::NotPrepared(engine.clone()));
                        planned.undone_on_error.push(Undone::ClientForgets {
                            name: name.clone(),
                            engine: engine.clone(),
                        });
                    }
                }
                planned.take_effects(effects);
                push_cstr(&mut out, &sql);
            }
            b'P' => {
                let name = reader.cstr()?;
                let sql = reader.cstr()?;
                let reset = reset_command_sql(sql);
                if name.is_empty() {
                    self.unnamed_reset = reset;
                    self.unnamed_effects = SessionEffects::of_sql(sql);
                }
                let rewritten = self.rewrite_sql(sql, false);
                let sql_for_engine = match rewritten {
                    Some((sql, effects)) => {
                        planned.take_effects(effects);
                        sql
                    }
                    None if name.is_empty() => {
                        planned.message = message;
                        return Ok(planned);
                    }
                    None => sql.to_vec(),
                };
                let mut rest = Vec::with_capacity(sql_for_engine.len() + reader.rest().len() + 1);
                push_cstr(&mut rest, &sql_for_engine);
                rest.extend_from_slice(reader.rest());
                if let Some(existing) = (!name.is_empty()).then(|| self.need(name)).flatten() {
                    // The client has this name already: the engine refuses
                    // the duplicate with 42P05 once the session has it.
                    push_cstr(&mut out, &existing.engine);
                    planned.needs.push(existing);
                } else if !name.is_empty() {
                    let engine = shared_name(&rest);
                    push_cstr(&mut out, &engine);
                    let mut parse = Vec::with_capacity(out.len() + rest.len() + 5);
                    push_message(&mut parse, b'P', &[&out[..], &rest[..]].concat());
                    self.statements.insert(
                        name.to_vec(),
                        ClientStatement {
                            engine: engine.clone(),
                            recreate: Recreate::Parse(Bytes::from(parse)),
                            self_contained: is_self_contained(sql),
                            effects: SessionEffects::of_sql(sql),
                            reset,
                        },
                    );
                    planned.shared_parse = Some(SharedParse {
                        engine,
                        client_name: name.to_vec(),
                    });
                } else {
                    push_cstr(&mut out, b"");
                }
                out.extend_from_slice(&rest);
                planned.message = finish(message[0], &out);
                return Ok(planned);
            }
            b'B' => {
                let portal = reader.cstr()?;
                let statement = reader.cstr()?;
                match self.reset_of(statement) {
                    Some(reset) => self.reset_portals.insert(portal.to_vec(), reset),
                    None => self.reset_portals.remove(portal),
                };
                if portal.is_empty() && statement.is_empty() {
                    planned.message = message;
                    return Ok(planned);
                }
                push_cstr(&mut out, &self.engine_name(portal));
                push_cstr(&mut out, &self.statement_name(statement));
                planned.needs.extend(self.need(statement));
            }
            b'E' => {
                let portal = reader.cstr()?;
                if self.reset_portals.get(portal) == Some(&ResetCommand::DeallocateAll) {
                    planned.rewrites.push(CommandRewrite {
                        index: 0,
                        tag: ResetCommand::DeallocateAll.tag(),
                        undone_if_skipped: self.forget_all(),
                    });
                }
                if portal.is_empty() {
                    planned.message = message;
                    return Ok(planned);
                }
                push_cstr(&mut out, &self.engine_name(portal));
            }
            b'D' | b'C' => {
                let kind = reader.byte()?;
                let name = reader.cstr()?;
                if kind == b'P' && message[0] == b'C' {
                    self.reset_portals.remove(name);
                }
                if name.is_empty() {
                    planned.message = message;
                    return Ok(planned);
                }
                let engine = if kind != b'S' {
                    self.engine_name(name)
                } else if message[0] == b'D' {
                    planned.needs.extend(self.need(name));
                    self.statement_name(name)
                } else {
                    let removed = self.statements.remove(name);
                    if let Some(statement) = &removed {
                        // Skipped after an error, the Close leaves it.
                        planned.undone_on_error.push(Undone::ClientKeeps {
                            name: name.to_vec(),
                            statement: Forgotten(statement.clone()),
                        });
                    }
                    match removed {
                        Some(statement) if statement.is_shared() => NO_STATEMENT.to_vec(),
                        Some(statement) => {
                            planned.removes.push(statement.engine.clone());
                            statement.engine
                        }
                        None => self.engine_name(name),
                    }
                };
                out.push(kind);
                push_cstr(&mut out, &engine);
            }
            _ => {
                planned.message = message;
                return Ok(planned);
            }
        }
        out.extend_from_slice(reader.rest());
        planned.message = finish(message[0], &out);
        Ok(planned)
    }
}

impl Planned {
    fn take_effects(&mut self, effects: SqlEffects) {
        self.needs.extend(effects.needs);
        self.creates.extend(effects.creates);
        self.removes.extend(effects.removes);
        self.rewrites.extend(effects.rewrites);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameUse {
    Prepare,
    Execute,
    Deallocate,
}

/// The engine name of a shared statement: a digest of what follows the name
/// in its `Parse` (query text and parameter types).
fn shared_name(definition: &[u8]) -> Vec<u8> {
    let digest = Sha256::digest(definition);
    let mut name = b"pgs_".to_vec();
    for byte in &digest[..16] {
        name.extend_from_slice(format!("{byte:02x}").as_bytes());
    }
    name
}

/// The text of one statement of `sql` with `token` replaced.
fn replaced(sql: &[u8], statement: &[Token], token: &Token, replacement: &[u8]) -> Vec<u8> {
    let start = statement[0].start;
    let end = statement[statement.len() - 1].end;
    let mut out = sql[start..token.start].to_vec();
    out.extend_from_slice(replacement);
    out.extend_from_slice(&sql[token.end..end]);
    out
}

fn finish(tag: u8, body: &[u8]) -> BytesMut {
    let mut message = Vec::with_capacity(body.len() + 5);
    push_message(&mut message, tag, body);
    BytesMut::from(&message[..])
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

    fn message(tag: u8, body: &[u8]) -> BytesMut {
        let mut out = Vec::new();
        push_message(&mut out, tag, body);
        BytesMut::from(&out[..])
    }

    fn first_name(message: &[u8]) -> Vec<u8> {
        let body = &message[5..];
        body[..body.iter().position(|&b| b == 0).unwrap()].to_vec()
    }

    #[test]
    fn clients_preparing_the_same_text_share_one_engine_statement() {
        let (mut a, mut b) = (Namespace::new(1), Namespace::new(2));
        let one = a.plan(message(b'P', b"s1\0SELECT 1\0\0\0")).unwrap();
        let other = b.plan(message(b'P', b"x\0SELECT 1\0\0\0")).unwrap();
        let different = b.plan(message(b'P', b"y\0SELECT 2\0\0\0")).unwrap();
        let typed = b
            .plan(message(b'P', b"z\0SELECT 1\0\0\x01\0\0\0\x17"))
            .unwrap();
        assert_eq!(first_name(&one.message), first_name(&other.message));
        assert!(first_name(&one.message).starts_with(b"pgs_"));
        assert_ne!(first_name(&one.message), first_name(&different.message));
        assert_ne!(first_name(&one.message), first_name(&typed.message));
        assert_eq!(
            one.shared_parse.unwrap().client_name,
            b"s1".to_vec(),
            "a failed Parse makes the client forget its name"
        );
        assert_eq!(a.statement_name(b"s1"), first_name(&one.message));
    }

    #[test]
    fn portals_are_prefixed_per_client_and_binds_need_their_statement() {
        let mut names = Namespace::new(3);
        names.plan(message(b'P', b"s\0SELECT 1\0\0\0")).unwrap();
        let engine = names.statement_name(b"s");
        let bind = names
            .plan(message(b'B', b"p\0s\0\0\0\0\x01\0\0\0\x011\0\0"))
            .unwrap();
        let mut expected = b"pgs3_p\0".to_vec();
        expected.extend_from_slice(&engine);
        expected.extend_from_slice(b"\0\0\0\0\x01\0\0\0\x011\0\0");
        assert_eq!(&bind.message[..], &message(b'B', &expected)[..]);
        assert_eq!(bind.needs.len(), 1);
        assert_eq!(bind.needs[0].engine, engine);
        assert_ne!(
            Namespace::new(1).engine_name(b"p"),
            Namespace::new(2).engine_name(b"p")
        );
    }

    #[test]
    fn unnamed_statements_pass_unchanged() {
        let mut names = Namespace::new(3);
        for m in [
            message(b'P', b"\0SELECT 1\0\0\0"),
            message(b'B', b"\0\0\0\0\0\0\0\0"),
            message(b'E', b"\0\0\0\0\0"),
            message(b'Q', b"SELECT 1\0"),
        ] {
            let planned = names.plan(m.clone()).unwrap();
            assert_eq!(planned.message, m);
            assert!(planned.needs.is_empty() && planned.shared_parse.is_none());
        }
    }

    #[test]
    fn closing_a_shared_statement_only_forgets_the_clients_name() {
        let mut names = Namespace::new(4);
        names.plan(message(b'P', b"s\0SELECT 1\0\0\0")).unwrap();
        let close = names.plan(message(b'C', b"Ss\0")).unwrap();
        assert_eq!(&close.message[..], &message(b'C', b"Spgs_none\0")[..]);
        assert!(close.removes.is_empty());
        assert_eq!(names.statement_name(b"s"), b"pgs4_s".to_vec());
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

    fn sql_of(planned: &Planned) -> String {
        String::from_utf8_lossy(&planned.message[5..planned.message.len() - 1]).into_owned()
    }

    #[test]
    fn sql_level_prepare_execute_deallocate_use_the_same_names() {
        let mut names = Namespace::new(5);
        let planned = names
            .plan(message(
                b'Q',
                b"PREPARE Plan(int) AS SELECT $1; EXECUTE plan(1); EXECUTE \"plan\"(2)\0",
            ))
            .unwrap();
        assert_eq!(
            sql_of(&planned),
            "PREPARE \"pgs5v1_plan\"(int) AS SELECT $1; EXECUTE \"pgs5v1_plan\"(1); EXECUTE \"pgs5v1_plan\"(2)"
        );
        assert_eq!(planned.creates, vec![b"pgs5v1_plan".to_vec()]);
        assert!(
            names.is_self_contained(b"plan"),
            "the protocol sees the same statement"
        );
        let planned = names
            .plan(message(b'Q', b"DEALLOCATE PREPARE plan\0"))
            .unwrap();
        assert_eq!(sql_of(&planned), "DEALLOCATE PREPARE \"pgs5v1_plan\"");
        assert_eq!(planned.removes, vec![b"pgs5v1_plan".to_vec()]);
        assert!(names.own_statements().is_empty());
        // Prepared again, the name gets a new engine name.
        let planned = names
            .plan(message(b'Q', b"PREPARE plan AS SELECT 2\0"))
            .unwrap();
        assert_eq!(planned.creates, vec![b"pgs5v2_plan".to_vec()]);
        // A name the client does not have is one no session has.
        let planned = names.plan(message(b'Q', b"EXECUTE other\0")).unwrap();
        assert_eq!(sql_of(&planned), "EXECUTE \"pgs5_other\"");
        for sql in [
            "PREPARE TRANSACTION 'gid'",
            "SELECT 'PREPARE x AS SELECT 1'",
        ] {
            let planned = names
                .plan(message(b'Q', format!("{sql}\0").as_bytes()))
                .unwrap();
            assert_eq!(sql_of(&planned), sql);
        }
    }

    #[test]
    fn deallocate_all_among_other_statements_runs_a_stand_in_and_forgets_the_clients_statements() {
        let mut names = Namespace::new(5);
        names
            .plan(message(b'Q', b"PREPARE plan AS SELECT 1\0"))
            .unwrap();
        names.plan(message(b'P', b"s\0SELECT 2\0\0\0")).unwrap();
        let planned = names
            .plan(message(
                b'Q',
                b"SELECT 1; deallocate prepare all; SELECT 2\0",
            ))
            .unwrap();
        assert_eq!(
            sql_of(&planned),
            format!(
                "SELECT 1; {}; SELECT 2",
                String::from_utf8_lossy(DEALLOCATE_ALL_STAND_IN)
            )
        );
        assert_eq!(planned.rewrites.len(), 1);
        assert_eq!(planned.rewrites[0].index, 1);
        assert_eq!(planned.rewrites[0].tag, "DEALLOCATE ALL");
        assert_eq!(planned.rewrites[0].undone_if_skipped.len(), 2);
        assert!(
            planned.removes.is_empty(),
            "the session keeps its statements"
        );
        assert_eq!(names.statement_name(b"s"), b"pgs5_s".to_vec());
        // When it does not run, the client keeps them.
        for undone in planned
            .rewrites
            .into_iter()
            .flat_map(|r| r.undone_if_skipped)
        {
            names.undo(undone);
        }
        assert_eq!(names.own_statements(), vec![b"pgs5v1_plan".to_vec()]);
        // DISCARD ALL among other statements is left to the engine, which
        // refuses it as PostgreSQL does.
        let planned = names
            .plan(message(b'Q', b"SELECT 1; DISCARD ALL\0"))
            .unwrap();
        assert_eq!(sql_of(&planned), "SELECT 1; DISCARD ALL");
        assert_eq!(names.own_statements(), vec![b"pgs5v1_plan".to_vec()]);
    }

    #[test]
    fn prepared_resets_run_as_stand_ins_and_take_effect_when_executed() {
        let mut names = Namespace::new(7);
        names.plan(message(b'P', b"s\0SELECT 2\0\0\0")).unwrap();
        let parse = names
            .plan(message(b'P', b"\0DEALLOCATE ALL\0\0\0"))
            .unwrap();
        assert_eq!(
            &parse.message[..],
            &message(b'P', &[b"\0", DEALLOCATE_ALL_STAND_IN, b"\0\0\0"].concat())[..]
        );
        assert_eq!(names.reset_of(b""), Some(ResetCommand::DeallocateAll));
        assert_eq!(names.statement_name(b"s").len(), 36, "still known");
        names.plan(message(b'B', b"\0\0\0\0\0\0\0\0")).unwrap();
        let execute = names.plan(message(b'E', b"\0\0\0\0\0")).unwrap();
        assert_eq!(execute.rewrites.len(), 1);
        assert_eq!(names.statement_name(b"s"), b"pgs7_s".to_vec(), "forgotten");
        let discard = names.plan(message(b'P', b"d\0DISCARD ALL\0\0\0")).unwrap();
        assert_eq!(names.reset_of(b"d"), Some(ResetCommand::DiscardAll));
        let Recreate::Parse(parse) = &names.need(b"d").unwrap().recreate else {
            panic!("a protocol-level statement");
        };
        assert!(
            parse
                .windows(DISCARD_ALL_REFUSAL.len())
                .any(|w| w == DISCARD_ALL_REFUSAL)
        );
        assert!(discard.shared_parse.is_some());
        assert_eq!(names.reset_of(b"other"), None);
    }

    #[test]
    fn preparing_a_name_the_client_still_has_reaches_the_engine_under_the_first_name() {
        let mut names = Namespace::new(9);
        let first = names.plan(message(b'P', b"s\0SELECT 1\0\0\0")).unwrap();
        // The engine refuses this one with 42P05 once the session has the
        // first; the first SQL stays the statement's.
        let again = names.plan(message(b'P', b"s\0SELECT 2\0\0\0")).unwrap();
        assert_eq!(first_name(&again.message), first_name(&first.message));
        assert!(again.shared_parse.is_none());
        assert_eq!(again.needs.len(), 1);
        assert_eq!(
            again.needs[0].recreate,
            Recreate::Parse(Bytes::from(first.message.to_vec()))
        );
    }

    #[test]
    fn a_failed_parse_is_forgotten() {
        let mut names = Namespace::new(6);
        let planned = names.plan(message(b'P', b"s\0SELEC 1\0\0\0")).unwrap();
        let shared = planned.shared_parse.unwrap();
        names.forget(&shared.client_name, &shared.engine);
        let again = names.plan(message(b'P', b"s\0SELECT 1\0\0\0")).unwrap();
        assert!(
            again.shared_parse.is_some(),
            "a new statement, not a duplicate"
        );
    }

    #[test]
    fn a_prepare_that_fails_alone_is_undone_and_a_skipped_close_kept() {
        let mut names = Namespace::new(2);
        let failing = names
            .plan(message(b'Q', b"PREPARE p AS SELEC 1\0"))
            .unwrap();
        for undone in failing.undone_on_error {
            names.undo(undone);
        }
        let again = names
            .plan(message(b'Q', b"PREPARE p AS SELECT 1\0"))
            .unwrap();
        assert_eq!(again.creates, vec![b"pgs2v2_p".to_vec()], "a new statement");
        let close = names.plan(message(b'C', b"Sp\0")).unwrap();
        for undone in close.undone_on_error {
            names.undo(undone);
        }
        assert_eq!(names.statement_name(b"p"), b"pgs2v2_p".to_vec());
    }

    #[test]
    fn malformed_messages_are_protocol_violations() {
        let mut names = Namespace::new(1);
        let err = names
            .plan(message(b'B', b"portal-without-terminator"))
            .unwrap_err();
        assert_eq!(err.code, "08P01");
    }
}
