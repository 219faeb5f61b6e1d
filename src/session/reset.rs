//! `DISCARD ALL` and `DEALLOCATE ALL` for one client.
//!
//! Run on the shared engine session as they are, they would drop every
//! client's prepared statements, settings and LISTENs. So they never reach
//! the engine as they are:
//!
//! - sent alone, as a simple query or as the one command of an
//!   extended-protocol group, the gateway carries them out itself on the
//!   client's own state and answers with the command tag PostgreSQL would;
//! - `DEALLOCATE ALL` anywhere else (among other statements, in a pipeline,
//!   in a transaction) reaches the engine as a statement that does nothing,
//!   whose answer gets PostgreSQL's tag back, while the client forgets its
//!   own statements;
//! - `DISCARD ALL` anywhere else is refused as PostgreSQL refuses it inside
//!   a transaction block or a pipeline.

use crate::protocol::frame::{self, Reader};
use crate::sql::lexer::{Token, mentions_any, statements, tokenize};

/// What the engine runs in place of a `DEALLOCATE ALL` that the gateway
/// does not carry out itself: nothing, answered with `CommandComplete`.
pub const DEALLOCATE_ALL_STAND_IN: &[u8] = b"DO $pgshare$BEGIN END$pgshare$";

/// What the engine runs in place of a `DISCARD ALL` that is not alone: the
/// error PostgreSQL gives for one inside a transaction block or a pipeline.
pub const DISCARD_ALL_REFUSAL: &[u8] = b"DO $pgshare$BEGIN RAISE EXCEPTION USING ERRCODE = 'active_sql_transaction', MESSAGE = 'DISCARD ALL cannot run inside a transaction block or a pipeline', HINT = 'pgshare carries out DISCARD ALL when it is sent alone outside a transaction: as a query of its own, or as the only command before a Sync'; END$pgshare$";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetCommand {
    DeallocateAll,
    DiscardAll,
}

impl ResetCommand {
    /// The `CommandComplete` tag PostgreSQL answers with.
    pub fn tag(self) -> &'static str {
        match self {
            ResetCommand::DeallocateAll => "DEALLOCATE ALL",
            ResetCommand::DiscardAll => "DISCARD ALL",
        }
    }
}

/// The reset command `message` is, if it is a simple query holding exactly
/// one `DISCARD ALL` or `DEALLOCATE [PREPARE] ALL`.
pub fn reset_command(message: &[u8]) -> Option<ResetCommand> {
    if message[0] != b'Q' {
        return None;
    }
    reset_command_sql(Reader::new(frame::body(message)).cstr().ok()?)
}

/// The reset command `sql` is, if it holds exactly one.
pub fn reset_command_sql(sql: &[u8]) -> Option<ResetCommand> {
    if !mentions_any(sql, &["all"]) {
        return None;
    }
    let tokens = tokenize(sql)?;
    let [statement] = statements(&tokens)[..] else {
        return None;
    };
    reset_statement(sql, statement)
}

/// The reset command one statement of `sql` (its tokens) is.
pub fn reset_statement(sql: &[u8], statement: &[Token]) -> Option<ResetCommand> {
    let word = |at: usize, word: &str| statement.get(at).is_some_and(|t| t.is_word(sql, word));
    match statement.len() {
        2 if word(0, "discard") && word(1, "all") => Some(ResetCommand::DiscardAll),
        2 if word(0, "deallocate") && word(1, "all") => Some(ResetCommand::DeallocateAll),
        3 if word(0, "deallocate") && word(1, "prepare") && word(2, "all") => {
            Some(ResetCommand::DeallocateAll)
        }
        _ => None,
    }
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
    fn only_a_lone_reset_statement_is_taken_over() {
        assert_eq!(
            reset_command(&query("DISCARD ALL")),
            Some(ResetCommand::DiscardAll)
        );
        assert_eq!(
            reset_command(&query("discard all;")),
            Some(ResetCommand::DiscardAll)
        );
        assert_eq!(
            reset_command(&query("DEALLOCATE PREPARE ALL")),
            Some(ResetCommand::DeallocateAll)
        );
        assert_eq!(reset_command(&query("DISCARD TEMP")), None);
        assert_eq!(reset_command(&query("SELECT 1; DISCARD ALL")), None);
        assert_eq!(reset_command(&query("DEALLOCATE \"all\"")), None);
        assert_eq!(reset_command(&query("DISCARD SEQUENCES ALL")), None);
    }
}
