//! Fitting a client's planned messages to the engine session they run on.
//!
//! A client's statements are not on every session: a pooled server session
//! may never have seen them, and any session closes the least recently used
//! ones beyond its limit. So before a message that uses a statement the
//! session lacks, the statement is prepared; a shared statement the session
//! already has is not prepared twice; and at the start of a unit of work,
//! statements beyond the limit are closed. Every answer the client did not
//! ask for is hidden by the `ReplyFilter`.

use bytes::BytesMut;

use crate::protocol::backend::push_message;

use super::names::Undone;
use super::names::{NO_STATEMENT, Need, Planned, Recreate};
use super::replies::{Answer, ReplyFilter};
use super::statements::SessionStatements;

const SYNC: &[u8] = b"S\0\0\0\x04";

/// Appends what the engine session must receive for `planned` to `out`.
/// `unit_start` says the session is idle and starting a client's unit of
/// work: the moment to close statements beyond the limit, since no portal of
/// a transaction can depend on them.
pub fn place(
    planned: Planned,
    statements: &mut SessionStatements,
    replies: &mut ReplyFilter,
    out: &mut BytesMut,
    unit_start: bool,
) {
    if unit_start && replies.at_group_start() && statements.len() > statements.limit {
        for victim in statements.evict() {
            out.extend_from_slice(&close(&victim));
        }
        out.extend_from_slice(SYNC);
        replies.sent_hidden_group(Vec::new());
    }
    let tag = planned.message[0];
    for need in planned.needs {
        if statements.contains(&need.engine) {
            statements.touch(&need.engine);
        } else {
            prepare_first(need, tag, statements, replies, out);
        }
    }
    if let Some(shared) = planned.shared_parse {
        let forgets = Undone::ClientForgets {
            name: shared.client_name,
            engine: shared.engine.clone(),
        };
        if statements.contains(&shared.engine) {
            statements.touch(&shared.engine);
            out.extend_from_slice(&close(NO_STATEMENT));
            replies.sent(b'C', Answer::AsParseComplete, vec![forgets], Vec::new());
        } else {
            // A copy the tracking missed would make the Parse fail.
            out.extend_from_slice(&close(&shared.engine));
            replies.sent(b'C', Answer::Hide, Vec::new(), Vec::new());
            out.extend_from_slice(&planned.message);
            replies.sent(
                b'P',
                Answer::Pass,
                vec![Undone::NotPrepared(shared.engine.clone()), forgets],
                Vec::new(),
            );
            statements.touch(&shared.engine);
        }
        return;
    }
    for name in &planned.removes {
        statements.remove(name);
    }
    for name in &planned.creates {
        statements.touch(name);
    }
    out.extend_from_slice(&planned.message);
    replies.sent(tag, Answer::Pass, planned.undone_on_error, planned.rewrites);
}

/// Prepares a statement the session lacks before a message of type `tag`
/// that needs it.
fn prepare_first(
    need: Need,
    tag: u8,
    statements: &mut SessionStatements,
    replies: &mut ReplyFilter,
    out: &mut BytesMut,
) {
    let not_prepared = vec![Undone::NotPrepared(need.engine.clone())];
    match need.recreate {
        // Inside an extended-protocol group: an error in the added Parse
        // fails the group, as the client's own Parse would have.
        Recreate::Parse(parse) if !matches!(tag, b'Q' | b'F') => {
            out.extend_from_slice(&close(&need.engine));
            replies.sent(b'C', Answer::Hide, Vec::new(), Vec::new());
            out.extend_from_slice(&parse);
            replies.sent(b'P', Answer::Hide, not_prepared, Vec::new());
        }
        // Before a simple Query, a Parse needs a Sync of its own: an error
        // would otherwise make the engine skip the Query.
        Recreate::Parse(parse) if replies.at_group_start() => {
            out.extend_from_slice(&close(&need.engine));
            out.extend_from_slice(&parse);
            out.extend_from_slice(SYNC);
            replies.sent_hidden_group(not_prepared);
        }
        Recreate::Prepare(prepare) if replies.at_group_start() => {
            out.extend_from_slice(&close(&need.engine));
            out.extend_from_slice(SYNC);
            replies.sent_hidden_group(Vec::new());
            out.extend_from_slice(&prepare);
            replies.sent_hidden_group(not_prepared);
        }
        // A statement made by SQL PREPARE cannot be made again inside an
        // extended-protocol group: the engine reports it missing.
        Recreate::Parse(_) | Recreate::Prepare(_) => return,
    }
    statements.touch(&need.engine);
}

/// A `Close` of the statement `name`.
fn close(name: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(name.len() + 2);
    body.push(b'S');
    body.extend_from_slice(name);
    body.push(0);
    let mut message = Vec::with_capacity(body.len() + 5);
    push_message(&mut message, b'C', &body);
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::names::Namespace;

    fn message(tag: u8, body: &[u8]) -> BytesMut {
        let mut out = Vec::new();
        push_message(&mut out, tag, body);
        BytesMut::from(&out[..])
    }

    /// The tags and first name of each message in `bytes`.
    fn summary(bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while rest.len() >= 5 {
            let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize + 1;
            let (message, tail) = rest.split_at(len);
            let body = &message[5..];
            let name = match message[0] {
                b'C' | b'D' => &body[1..],
                _ => body,
            };
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            let name = String::from_utf8_lossy(name);
            let short = if name.starts_with("pgs_") && name != "pgs_none" {
                "shared"
            } else {
                &name
            };
            out.push(format!("{}:{short}", message[0] as char));
            rest = tail;
        }
        out
    }

    fn place_all(
        names: &mut Namespace,
        messages: Vec<BytesMut>,
        statements: &mut SessionStatements,
        replies: &mut ReplyFilter,
    ) -> Vec<String> {
        let mut out = BytesMut::new();
        for (index, message) in messages.into_iter().enumerate() {
            let planned = names.plan(message).unwrap();
            place(planned, statements, replies, &mut out, index == 0);
        }
        summary(&out)
    }

    #[test]
    fn a_shared_statement_is_prepared_once_per_session() {
        let (mut a, mut b) = (Namespace::new(1), Namespace::new(2));
        let mut session = SessionStatements::default();
        let mut replies = ReplyFilter::default();
        let parse = || message(b'P', b"s\0SELECT 1\0\0\0");
        let sync = || message(b'S', b"");
        let first = place_all(&mut a, vec![parse(), sync()], &mut session, &mut replies);
        assert_eq!(first, ["C:shared", "P:shared", "S:"]);
        // The second client's Parse of the same text becomes a Close whose
        // answer is its ParseComplete.
        let second = place_all(&mut b, vec![parse(), sync()], &mut session, &mut replies);
        assert_eq!(second, ["C:pgs_none", "S:"]);
        assert_eq!(session.len(), 1);
    }

    #[test]
    fn a_statement_the_session_lacks_is_prepared_before_its_use() {
        let mut names = Namespace::new(1);
        let mut elsewhere = SessionStatements::default();
        let mut replies = ReplyFilter::default();
        place_all(
            &mut names,
            vec![message(b'P', b"s\0SELECT 1\0\0\0"), message(b'S', b"")],
            &mut elsewhere,
            &mut replies,
        );
        let mut session = SessionStatements::default();
        let bind = message(b'B', b"\0s\0\0\0\0\0\0\0");
        let placed = place_all(
            &mut names,
            vec![bind, message(b'S', b"")],
            &mut session,
            &mut replies,
        );
        assert_eq!(placed, ["C:shared", "P:shared", "B:", "S:"]);
        // Before a simple Query, in a group of its own.
        let mut session = SessionStatements::default();
        let placed = place_all(
            &mut names,
            vec![message(b'Q', b"EXECUTE s\0")],
            &mut session,
            &mut replies,
        );
        assert_eq!(placed[..3], ["C:shared", "P:shared", "S:"]);
        assert!(placed[3].starts_with("Q:EXECUTE \"pgs_"), "{placed:?}");
    }

    #[test]
    fn sql_prepared_statements_are_prepared_again_before_a_query() {
        let mut names = Namespace::new(4);
        let mut first = SessionStatements::default();
        let mut replies = ReplyFilter::default();
        let prepare = message(b'Q', b"PREPARE q(int) AS SELECT $1\0");
        assert_eq!(
            place_all(&mut names, vec![prepare], &mut first, &mut replies),
            ["Q:PREPARE \"pgs4v1_q\"(int) AS SELECT $1"]
        );
        assert!(first.contains(b"pgs4v1_q"));
        let mut other = SessionStatements::default();
        let execute = message(b'Q', b"EXECUTE q(1)\0");
        assert_eq!(
            place_all(&mut names, vec![execute], &mut other, &mut replies),
            [
                "C:pgs4v1_q",
                "S:",
                "Q:PREPARE \"pgs4v1_q\"(int) AS SELECT $1",
                "Q:EXECUTE \"pgs4v1_q\"(1)"
            ]
        );
        assert_eq!(replies.hidden_pending(), 2);
    }

    #[test]
    fn statements_beyond_the_limit_are_closed_at_the_start_of_a_unit() {
        let mut names = Namespace::new(1);
        let mut session = SessionStatements::with_limit(1);
        let mut replies = ReplyFilter::default();
        for sql in ["SELECT 1", "SELECT 2"] {
            let parse = message(b'P', format!("s{sql}\0{sql}\0\0\0").as_bytes());
            place_all(
                &mut names,
                vec![parse, message(b'S', b"")],
                &mut session,
                &mut replies,
            );
        }
        assert_eq!(session.len(), 2);
        let placed = place_all(
            &mut names,
            vec![message(b'Q', b"SELECT 3\0")],
            &mut session,
            &mut replies,
        );
        assert_eq!(placed, ["C:shared", "S:", "Q:SELECT 3"]);
        assert_eq!(session.len(), 1);
    }
}
