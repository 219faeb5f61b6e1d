//! `CREATE DATABASE` and `DROP DATABASE`, carried out by the gateway.
//!
//! Each database is an engine of its own, so these act on the gateway's
//! registry rather than inside the engine a client happens to be connected
//! to. They are recognised when a client sends one alone in a simple query,
//! as psql, Prisma and `createdb` do, or runs one as the only statement of
//! an extended-protocol `Sync` group, as drivers do (see
//! `gateway_commands`); their options (owner, template, encoding, ...) are
//! accepted and have no effect.

use crate::protocol::frame::{self, Reader};
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

/// The database command `sql` is, if it holds exactly one.
pub fn database_command_sql(sql: &[u8]) -> Option<DatabaseCommand> {
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
