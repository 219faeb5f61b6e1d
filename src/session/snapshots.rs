//! `pg_export_snapshot()` on a database served by one shared engine session
//! (an embedded database, a Live Share host, an upstream server with one
//! session).
//!
//! Another session can import a snapshot (`SET TRANSACTION SNAPSHOT`) only
//! while the transaction that exported it is open. On one shared session
//! that transaction holds the engine, so the importing client (a worker of
//! `pg_dump -j`) waits for it while the exporter waits for its workers,
//! until `idle_in_transaction_timeout` ends the exporter and the workers
//! find no snapshot. The gateway refuses the export at once instead, in the
//! engine, so that the exporter's transaction fails as PostgreSQL's would,
//! with an error that names the cause and the way out.

use bytes::BytesMut;

use crate::protocol::backend::push_message;
use crate::protocol::frame::{self, Reader};
use crate::sql::lexer::{mentions_any, tokenize};

/// What the engine runs instead of a query that exports a snapshot.
const EXPORT_REFUSAL: &str = "DO $pgshare$BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE = 'pg_export_snapshot() is not supported here: this database is served by one engine session that all its clients share, so no other connection could import the snapshot while this transaction holds the engine', HINT = 'Run pg_dump without -j (or with -j 1). A parallel dump needs sessions of its own: a PostgreSQL server behind pgshare with --pool-size above 1 has them.'; END$pgshare$";

/// True when `sql` calls `pg_export_snapshot`.
pub fn exports_snapshot(sql: &[u8]) -> bool {
    mentions_any(sql, &["pg_export_snapshot"])
        && tokenize(sql).is_some_and(|tokens| {
            tokens
                .iter()
                .any(|token| token.is_word(sql, "pg_export_snapshot"))
        })
}

/// `message` with a query or a statement that exports a snapshot replaced
/// by one that fails with the reason.
pub fn refuse_export(message: BytesMut) -> BytesMut {
    let mut reader = Reader::new(frame::body(&message));
    let mut body = Vec::new();
    match message[0] {
        b'Q' if reader.cstr().is_ok_and(exports_snapshot) => {}
        b'P' => {
            let Ok(name) = reader.cstr() else {
                return message;
            };
            if !reader.cstr().is_ok_and(exports_snapshot) {
                return message;
            }
            body.extend_from_slice(name);
            body.push(0);
        }
        _ => return message,
    }
    body.extend_from_slice(EXPORT_REFUSAL.as_bytes());
    body.push(0);
    if message[0] == b'P' {
        body.extend_from_slice(&0i16.to_be_bytes());
    }
    let mut out = Vec::with_capacity(body.len() + 5);
    push_message(&mut out, message[0], &body);
    BytesMut::from(&out[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> BytesMut {
        let mut out = Vec::new();
        push_message(&mut out, tag, body);
        BytesMut::from(&out[..])
    }

    #[test]
    fn only_an_export_is_refused() {
        let export = message(b'Q', b"SELECT pg_catalog.pg_export_snapshot()\0");
        let refused = refuse_export(export);
        assert!(refused.starts_with(b"Q"));
        assert!(
            refused
                .windows(b"feature_not_supported".len())
                .any(|w| w == b"feature_not_supported")
        );
        let parse = refuse_export(message(b'P', b"s\0SELECT PG_EXPORT_SNAPSHOT()\0\0\0"));
        assert!(parse[5..].starts_with(b"s\0DO $pgshare$"));
        assert!(parse.ends_with(b"\0\0\0"));
        for untouched in [
            message(b'Q', b"SELECT 'pg_export_snapshot()'\0"),
            message(b'Q', b"SET TRANSACTION SNAPSHOT '00000003-1'\0"),
            message(b'B', b"\0\0\0\0\0\0\0\0"),
        ] {
            assert_eq!(refuse_export(untouched.clone()), untouched);
        }
    }
}
