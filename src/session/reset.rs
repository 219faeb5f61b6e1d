//! `DISCARD ALL` and `DEALLOCATE ALL` for one client.
//!
//! Run on the shared engine session as they are, they would drop every
//! client's prepared statements, settings and LISTENs. The gateway carries
//! them out itself, on the client's own state only, when a client sends one
//! alone in a simple query (as drivers and poolers do), and answers with the
//! command tag PostgreSQL would.

use crate::protocol::frame::{self, Reader};
use crate::sql::lexer::{mentions_any, statements, tokenize};

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
    let sql = Reader::new(frame::body(message)).cstr().ok()?;
    if !mentions_any(sql, &["all"]) {
        return None;
    }
    let tokens = tokenize(sql)?;
    let [statement] = statements(&tokens)[..] else {
        return None;
    };
    let words: Vec<String> = statement
        .iter()
        .map(|t| String::from_utf8_lossy(t.text(sql)).to_ascii_lowercase())
        .collect();
    match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["discard", "all"] => Some(ResetCommand::DiscardAll),
        ["deallocate", "all"] | ["deallocate", "prepare", "all"] => {
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
    }
}
