//! Schema `pgr` in a database: created the first time a client's statement
//! there names it (`SELECT pgr.subscribe(...)`), right before that
//! statement runs, on the client's own engine session. Databases that never
//! use live queries carry nothing of them (and their dumps neither).
//!
//! Inside the client's transaction the schema is created in that
//! transaction, so a rollback takes it away again with the subscription;
//! it is then created again at the next statement that names it.

use std::io;

use crate::engine::EngineSession;
use crate::protocol::frame::{self, Reader};
use crate::session::cleanup::query;

/// The SQL surface (see the file's own comment).
const SCHEMA: &str = include_str!("schema.sql");
/// What `pgr.version()` returns when `SCHEMA` is installed.
pub const VERSION: &str = "1";

/// Whether a `Query` or `Parse` among `messages` names schema pgr.
pub fn names_schema<'a>(messages: impl IntoIterator<Item = &'a [u8]>) -> bool {
    messages.into_iter().any(|message| {
        let mut reader = Reader::new(frame::body(message));
        let sql = match message[0] {
            b'Q' => reader.cstr(),
            b'P' => reader.cstr().and_then(|_name| reader.cstr()),
            _ => return false,
        };
        sql.is_ok_and(mentions_pgr)
    })
}

/// `pgr.` anywhere in the text, in any case. A false positive (in a string
/// or a comment) costs one installation.
fn mentions_pgr(sql: &[u8]) -> bool {
    sql.windows(4).any(|w| w.eq_ignore_ascii_case(b"pgr."))
}

/// Installs (or upgrades) the schema on `engine`, in its current
/// transaction if one is open. `Ok(Err(_))` is the engine's refusal (no
/// right to create a schema, a failed transaction), which leaves the
/// client's own statement to fail or not on its own.
pub async fn install(engine: &mut EngineSession) -> io::Result<Result<(), String>> {
    let reply = engine.run_collecting(&query(SCHEMA.as_bytes())).await?;
    Ok(match reply.error {
        Some(error) => Err(crate::engine::error_message(&error)),
        None => Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::backend::push_message;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_message(&mut out, tag, body);
        out
    }

    #[test]
    fn statements_naming_pgr_are_found_in_queries_and_parses() {
        let q = message(b'Q', b"SELECT PGR.subscribe('a', 'SELECT 1')\0");
        let p = message(b'P', b"s1\0select pgr.unsubscribe($1)\0\0\0");
        let plain = message(b'Q', b"SELECT 1\0");
        let bind = message(b'B', b"\0pgr.x\0\0\0\0\0\0\0");
        assert!(names_schema([&q[..]]));
        assert!(names_schema([&plain[..], &p[..]]));
        assert!(!names_schema([&plain[..], &bind[..]]));
    }

    #[test]
    fn the_schema_states_its_version() {
        assert!(SCHEMA.contains(&format!("LANGUAGE sql IMMUTABLE AS 'SELECT {VERSION}'")));
    }
}
