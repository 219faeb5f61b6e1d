//! `CREATE DATABASE` and `DROP DATABASE`, carried out by the gateway.
//!
//! Each database is an engine of its own, so these act on the gateway's
//! registry rather than inside the engine a client happens to be connected
//! to. They are recognised when a client sends one alone in a simple query,
//! as psql, Prisma and `createdb` do, or runs one as the only statement of
//! an extended-protocol `Sync` group, as drivers do; their options (owner,
//! template, encoding, ...) are accepted and have no effect.

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::protocol::backend::push_message;
use crate::protocol::frame::{self, Reader};

use super::names::Namespace;
use crate::sql::lexer::{mentions_any, statements, tokenize};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseCommand {
    Create(String),
    Drop { name: String, if_exists: bool },
}

impl DatabaseCommand {
    /// The `CommandComplete` tag PostgreSQL answers with.
    pub fn tag(&self) -> &'static str {
        match self {
            DatabaseCommand::Create(_) => "CREATE DATABASE",
            DatabaseCommand::Drop { .. } => "DROP DATABASE",
        }
    }
}

/// The database command `message` is, if it is a simple query holding
/// exactly one `CREATE DATABASE` or `DROP DATABASE`.
pub fn database_command(message: &[u8]) -> Option<DatabaseCommand> {
    if message[0] != b'Q' {
        return None;
    }
    database_command_sql(Reader::new(frame::body(message)).cstr().ok()?)
}

/// When `pending` is one extended-protocol group that runs a database
/// command (`Parse`, `Bind`, `Describe`, `Execute`, `Sync`, the `Parse`
/// left out for a statement prepared before), the command and the answers
/// PostgreSQL gives to the messages before its `Execute`.
pub fn extended_database_command(
    pending: &VecDeque<BytesMut>,
    names: &Namespace,
) -> Option<(DatabaseCommand, Vec<u8>)> {
    let mut parsed: Option<(&[u8], &[u8])> = None;
    let mut command = None;
    let mut answers = Vec::new();
    let last = pending.len().checked_sub(1)?;
    for (index, message) in pending.iter().enumerate() {
        let mut reader = Reader::new(frame::body(message));
        match (message[0], index) {
            (b'P', 0) => {
                parsed = Some((reader.cstr().ok()?, reader.cstr().ok()?));
                push_message(&mut answers, b'1', &[]);
            }
            (b'B', _) if command.is_none() => {
                let _portal = reader.cstr().ok()?;
                let statement = reader.cstr().ok()?;
                let sql = match parsed {
                    Some((name, sql)) if name == statement => sql,
                    _ => names.statement_sql(statement)?,
                };
                command = Some(database_command_sql(sql)?);
                push_message(&mut answers, b'2', &[]);
            }
            (b'D', _) => {
                if reader.byte().ok()? == b'S' {
                    push_message(&mut answers, b't', &0i16.to_be_bytes());
                }
                push_message(&mut answers, b'n', &[]);
            }
            (b'E', _) if command.is_some() && index + 1 == last => {}
            (b'S', _) if index == last && index > 0 && pending[index - 1][0] == b'E' => {}
            _ => return None,
        }
    }
    Some((command?, answers))
}

/// The database command `sql` is, if it holds exactly one.
fn database_command_sql(sql: &[u8]) -> Option<DatabaseCommand> {
    if !mentions_any(sql, &["database"]) {
        return None;
    }
    let tokens = tokenize(sql)?;
    let [statement] = statements(&tokens)[..] else {
        return None;
    };
    let word = |at: usize, word: &str| statement.get(at).is_some_and(|t| t.is_word(sql, word));
    if !word(1, "database") {
        return None;
    }
    if word(0, "create") {
        return Some(DatabaseCommand::Create(statement.get(2)?.identifier(sql)?));
    }
    if word(0, "drop") {
        let if_exists = word(2, "if") && word(3, "exists");
        let at = if if_exists { 4 } else { 2 };
        return Some(DatabaseCommand::Drop {
            name: statement.get(at)?.identifier(sql)?,
            if_exists,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::backend::push_message;

    fn query(sql: &str) -> Vec<u8> {
        let mut out = Vec::new();
        push_message(&mut out, b'Q', format!("{sql}\0").as_bytes());
        out
    }

    #[test]
    fn create_and_drop_are_recognised_with_their_names() {
        assert_eq!(
            database_command(&query("CREATE DATABASE App")),
            Some(DatabaseCommand::Create("app".into()))
        );
        assert_eq!(
            database_command(&query(
                "create database \"prisma_migrate_shadow_db_1-2\" WITH OWNER postgres;"
            )),
            Some(DatabaseCommand::Create(
                "prisma_migrate_shadow_db_1-2".into()
            ))
        );
        assert_eq!(
            database_command(&query("DROP DATABASE IF EXISTS \"Shadow\"")),
            Some(DatabaseCommand::Drop {
                name: "Shadow".into(),
                if_exists: true
            })
        );
        assert_eq!(
            database_command(&query("drop database x")),
            Some(DatabaseCommand::Drop {
                name: "x".into(),
                if_exists: false
            })
        );
    }

    fn message(tag: u8, body: &[u8]) -> BytesMut {
        let mut out = Vec::new();
        push_message(&mut out, tag, body);
        BytesMut::from(&out[..])
    }

    #[test]
    fn a_driver_running_one_in_the_extended_protocol_is_recognised() {
        let mut names = Namespace::new(1);
        let unit: VecDeque<BytesMut> = [
            message(b'P', b"\0CREATE DATABASE app\0\0\0"),
            message(b'B', b"\0\0\0\0\0\0\0\0"),
            message(b'D', b"P\0"),
            message(b'E', b"\0\0\0\0\0"),
            message(b'S', b""),
        ]
        .into();
        let (command, answers) = extended_database_command(&unit, &names).unwrap();
        assert_eq!(command, DatabaseCommand::Create("app".into()));
        assert_eq!(answers, b"1\0\0\0\x042\0\0\0\x04n\0\0\0\x04");
        // A statement prepared earlier, bound and executed.
        names
            .plan(message(b'P', b"s0\0DROP DATABASE app\0\0\0"))
            .unwrap();
        let unit: VecDeque<BytesMut> = [
            message(b'B', b"\0s0\0\0\0\0\0\0\0"),
            message(b'E', b"\0\0\0\0\0"),
            message(b'S', b""),
        ]
        .into();
        let (command, _) = extended_database_command(&unit, &names).unwrap();
        assert_eq!(
            command,
            DatabaseCommand::Drop {
                name: "app".into(),
                if_exists: false
            }
        );
        let select: VecDeque<BytesMut> = [
            message(b'P', b"\0SELECT 1\0\0\0"),
            message(b'B', b"\0\0\0\0\0\0\0\0"),
            message(b'E', b"\0\0\0\0\0"),
            message(b'S', b""),
        ]
        .into();
        assert!(extended_database_command(&select, &names).is_none());
    }

    #[test]
    fn anything_else_is_left_to_the_engine() {
        for sql in [
            "SELECT 'CREATE DATABASE x'",
            "CREATE DATABASE a; CREATE DATABASE b",
            "CREATE TABLE database (x int)",
            "ALTER DATABASE x RENAME TO y",
            "DROP DATABASE",
        ] {
            assert_eq!(database_command(&query(sql)), None, "{sql}");
        }
    }
}
