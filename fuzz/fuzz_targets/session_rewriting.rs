//! The session rewriting layer against a fake engine: a client's messages,
//! built from the fuzz input, go through name rewriting, statement placement
//! on one of two engine sessions (each keeping at most two statements) and
//! the reply filter, and the client must see exactly the answers a dedicated
//! session would have given it.
#![no_main]

use std::collections::HashSet;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgshare::protocol::backend::push_message;
use pgshare::protocol::frame::{self, Reader};
use pgshare::session::placement::place;
use pgshare::session::names::{Namespace, Undone};
use pgshare::session::replies::ReplyFilter;
use pgshare::session::statements::SessionStatements;

const NAMES: &[&str] = &["", "a", "b", "c"];
const SQL: &[&str] = &["SELECT 1", "SELECT 2", "SELECT $1", "SELEC 1"];
const QUERIES: &[&str] = &[
    "SELECT 1",
    "PREPARE p AS SELECT 1",
    "PREPARE q AS SELECT 2",
    "PREPARE p AS SELEC 1",
    "EXECUTE p",
    "EXECUTE q",
    "DEALLOCATE p",
    "EXECUTE a",
    "SELECT 1; EXECUTE p",
    "SELEC 1",
];

/// A PostgreSQL session reduced to what statements exist and which message
/// fails: enough to answer in the same shapes and order.
#[derive(Default)]
struct FakeSession {
    statements: HashSet<Vec<u8>>,
    unnamed: bool,
    skipping: bool,
}

impl FakeSession {
    fn answer(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = BytesMut::from(input);
        while let Ok(Some(message)) = frame::split_message(&mut buf, 1 << 20) {
            self.message(&message, &mut out);
        }
        out
    }

    fn fail(&mut self, out: &mut Vec<u8>) {
        push_message(out, b'E', b"SERROR\0C42000\0Mfails\0\0");
        self.skipping = true;
    }

    fn message(&mut self, message: &[u8], out: &mut Vec<u8>) {
        let mut reader = Reader::new(frame::body(message));
        let tag = message[0];
        if self.skipping && tag != b'S' {
            // PostgreSQL ignores everything up to the next Sync, even a Query.
            return;
        }
        match tag {
            b'P' => {
                let name = reader.cstr().unwrap().to_vec();
                let sql = reader.cstr().unwrap();
                if sql.starts_with(b"SELEC ")
                    || (!name.is_empty() && self.statements.contains(&name))
                {
                    return self.fail(out);
                }
                if name.is_empty() {
                    self.unnamed = true;
                } else {
                    self.statements.insert(name);
                }
                push_message(out, b'1', &[]);
            }
            b'B' => {
                let _portal = reader.cstr().unwrap();
                let name = reader.cstr().unwrap();
                let exists = if name.is_empty() {
                    self.unnamed
                } else {
                    self.statements.contains(name)
                };
                if !exists {
                    return self.fail(out);
                }
                push_message(out, b'2', &[]);
            }
            b'E' => push_message(out, b'C', b"SELECT 1\0"),
            b'D' => {
                let kind = reader.byte().unwrap();
                let name = reader.cstr().unwrap();
                if kind == b'S' && !name.is_empty() && !self.statements.contains(name) {
                    return self.fail(out);
                }
                push_message(out, b'n', &[]);
            }
            b'C' => {
                let kind = reader.byte().unwrap();
                let name = reader.cstr().unwrap();
                if kind == b'S' {
                    self.statements.remove(name);
                }
                push_message(out, b'3', &[]);
            }
            b'S' => {
                self.skipping = false;
                // Through pgshare the unnamed statement lasts one group.
                self.unnamed = false;
                push_message(out, b'Z', b"I");
            }
            b'Q' => {
                let sql = String::from_utf8(reader.cstr().unwrap().to_vec()).unwrap();
                for statement in sql.split(';').map(str::trim) {
                    if !self.statement(statement, out) {
                        push_message(out, b'E', b"SERROR\0C42000\0Mfails\0\0");
                        break;
                    }
                }
                self.unnamed = false;
                push_message(out, b'Z', b"I");
            }
            _ => {}
        }
    }

    /// Runs one SQL statement; false when it fails.
    fn statement(&mut self, sql: &str, out: &mut Vec<u8>) -> bool {
        let words: Vec<&str> = sql.split_whitespace().collect();
        let name = |word: Option<&&str>| word.map(|w| w.trim_matches('"').as_bytes().to_vec());
        match words.first().copied() {
            Some("PREPARE") => {
                let Some(name) = name(words.get(1)) else {
                    return false;
                };
                if sql.contains("SELEC ") || self.statements.contains(&name) {
                    return false;
                }
                self.statements.insert(name);
            }
            Some("EXECUTE") => {
                if !name(words.get(1)).is_some_and(|name| self.statements.contains(&name)) {
                    return false;
                }
            }
            Some("DEALLOCATE") => {
                let name = if words.get(1) == Some(&"PREPARE") {
                    name(words.get(2))
                } else {
                    name(words.get(1))
                };
                if !name.is_some_and(|name| self.statements.remove(&name)) {
                    return false;
                }
            }
            Some("SELEC") => return false,
            _ => {}
        }
        push_message(out, b'C', b"OK\0");
        true
    }
}

/// Builds a client's messages from the fuzz input, each group ending in
/// Sync or being one Query; returns them with the session each group runs on.
fn client_messages(data: &[u8]) -> Vec<(Vec<Vec<u8>>, usize)> {
    let mut groups = Vec::new();
    let mut group = Vec::new();
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    while let Some(op) = next() {
        let pick = |n: Option<u8>, len: usize| n.map_or(0, |n| usize::from(n) % len);
        let mut message = Vec::new();
        match op % 8 {
            0 => {
                let name = NAMES[pick(next(), NAMES.len())];
                let sql = SQL[pick(next(), SQL.len())];
                push_message(
                    &mut message,
                    b'P',
                    format!("{name}\0{sql}\0\0\0").as_bytes(),
                );
            }
            1 => {
                let name = NAMES[pick(next(), NAMES.len())];
                push_message(
                    &mut message,
                    b'B',
                    format!("\0{name}\0\0\0\0\0\0\0").as_bytes(),
                );
            }
            2 => push_message(&mut message, b'E', b"\0\0\0\0\0"),
            3 => {
                let name = NAMES[pick(next(), NAMES.len())];
                push_message(&mut message, b'D', format!("S{name}\0").as_bytes());
            }
            4 => {
                let name = NAMES[pick(next(), NAMES.len())];
                push_message(&mut message, b'C', format!("S{name}\0").as_bytes());
            }
            5 | 6 => {
                // The end of a group, on the session the input picks.
                let session = pick(next(), 2);
                if op % 8 == 6 {
                    if !group.is_empty() {
                        let mut sync = Vec::new();
                        push_message(&mut sync, b'S', &[]);
                        group.push(sync);
                        groups.push((std::mem::take(&mut group), session));
                    }
                    let sql = QUERIES[pick(next(), QUERIES.len())];
                    push_message(&mut message, b'Q', format!("{sql}\0").as_bytes());
                } else {
                    push_message(&mut message, b'S', &[]);
                }
                group.push(message);
                groups.push((std::mem::take(&mut group), session));
                continue;
            }
            _ => continue,
        }
        group.push(message);
        if groups.len() > 64 {
            break;
        }
    }
    groups
}

fn tags(output: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::from(output);
    let mut tags = Vec::new();
    while let Ok(Some(message)) = frame::split_message(&mut buf, 1 << 20) {
        tags.push(message[0]);
    }
    tags
}

fuzz_target!(|data: &[u8]| {
    let groups = client_messages(data);
    // What a dedicated session answers the client's own messages.
    let mut dedicated = FakeSession::default();
    let mut expected = Vec::new();
    for (group, _) in &groups {
        for message in group {
            expected.extend(tags(&dedicated.answer(message)));
        }
    }
    // The same through the gateway's rewriting, on two shared sessions.
    let mut names = Namespace::new(1);
    let mut replies = ReplyFilter::default();
    let mut sessions = [FakeSession::default(), FakeSession::default()];
    let mut tracked = [
        SessionStatements::with_limit(2),
        SessionStatements::with_limit(2),
    ];
    let mut seen = Vec::new();
    for (group, session) in groups {
        let mut to_engine = BytesMut::new();
        for (index, message) in group.into_iter().enumerate() {
            let planned = names
                .plan(BytesMut::from(&message[..]))
                .expect("well-formed");
            place(
                planned,
                &mut tracked[session],
                &mut replies,
                &mut to_engine,
                index == 0,
            );
        }
        let answer = sessions[session].answer(&to_engine);
        let kept = replies.filter(BytesMut::from(&answer[..]), |_| {});
        for undone in replies.take_undone() {
            match undone {
                Undone::NotPrepared(name) => tracked[session].remove(&name),
                client_side => names.undo(client_side),
            }
        }
        seen.extend(tags(&kept));
    }
    assert_eq!(
        String::from_utf8_lossy(&seen),
        String::from_utf8_lossy(&expected),
        "the client saw other answers than on a session of its own"
    );
});
