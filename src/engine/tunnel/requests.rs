//! What the gateway sends a host, request by request, and what of each reply
//! goes back to the engine session.
//!
//! Most frontend bytes go out as they come, whole messages only. The
//! exception is `COPY ... FROM STDIN`: PGlite cannot wait for more input in
//! the middle of a request (it ends the backend), so the statement must reach
//! it together with all its data. When a client's `Query` is such a COPY, the
//! gateway first *probes* it, sending the statement with a `CopyFail` right
//! behind it (inside a savepoint when a transaction is open), which yields the
//! exact `CopyInResponse` and changes nothing. That response goes to the
//! client, which then sends its data; the data is collected up to
//! `CopyDone`/`CopyFail`, and the statement and its data go out as one request
//! whose own `CopyInResponse` is dropped. Data beyond `max_copy` bytes is not
//! collected: a statement that fails with 54000 goes out instead of the COPY
//! (the client gets the error as from a server that rejected its data) and
//! the rest of the data is dropped as it comes. A COPY FROM STDIN that cannot
//! be carried so never reaches PGlite: inside a multi-statement query it is
//! replaced by a statement that fails with 0A000; over the extended protocol
//! its `Parse` is replaced by one that fails, whose error is replaced by a
//! 0A000 that says why, so that the driver learns it when it prepares the
//! statement.

use bytes::{Buf, BufMut, BytesMut};

use crate::protocol::error::{PgError, sqlstate};
use crate::protocol::frame::{self, Reader};
use crate::sql::lexer::{self, Kind, Token};

/// Savepoint that keeps a probe from touching an open transaction.
const PROBE_SAVEPOINT: &str = "pgshare_copy_probe";

/// Refuses a COPY FROM STDIN among other statements of a simple query.
const UNSUPPORTED_COPY: &str = "DO $pgshare$BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE = 'COPY FROM STDIN must be the only statement of a simple query on a database shared by a host', HINT = 'send the COPY statement alone (as psql''s \\copy does)'; END$pgshare$";

enum Mode {
    /// Bytes go out as they come.
    Forwarding,
    /// A probe is out; its reply is collected here, for no one.
    Probing { query: BytesMut, reply: BytesMut },
    /// The client has its `CopyInResponse`; its data gathers behind the
    /// statement until it ends.
    Collecting { request: BytesMut },
    /// The COPY with its data is out; its reply is collected here to drop
    /// the repeated `CopyInResponse`.
    Copying { reply: BytesMut },
    /// A `Parse` of a COPY FROM STDIN, made to fail, is out; its reply is
    /// collected here to say why in its error.
    Refusing { reply: BytesMut },
}

pub struct Requests {
    /// Frontend bytes from the engine session not sent yet.
    pending: BytesMut,
    /// The startup packet, which has no type byte, has been sent.
    started: bool,
    /// The transaction status of the last `ReadyForQuery` the host sent.
    status: u8,
    mode: Mode,
    /// The next `Query` goes out as it is: its probe found no COPY to run.
    send_plainly: bool,
    /// The client's COPY data went over `max_copy`: the rest of it is dropped
    /// up to its `CopyDone` or `CopyFail`.
    dropping_copy_data: bool,
    /// Where the status scan is inside the reply being relayed.
    scan: StatusScan,
    max_message_len: usize,
    /// The most COPY data collected for one statement.
    max_copy: usize,
}

/// What to do next.
pub enum Step {
    /// Send this request to the host.
    Send(BytesMut),
    /// Nothing to send until more frontend bytes come.
    Wait,
}

impl Requests {
    pub fn new(max_message_len: usize, max_copy: usize) -> Self {
        Self {
            pending: BytesMut::new(),
            started: false,
            status: b'I',
            mode: Mode::Forwarding,
            send_plainly: false,
            dropping_copy_data: false,
            scan: StatusScan::default(),
            max_message_len,
            max_copy,
        }
    }

    /// Frontend bytes from the engine session.
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// `I`, `T` or `E`, as of the last reply.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// The next request, when none is outstanding. `Err` when the engine
    /// session sent something that is not a frontend message.
    pub fn next(&mut self) -> Result<Step, String> {
        if !self.started {
            return Ok(match self.take_startup()? {
                Some(startup) => {
                    self.started = true;
                    Step::Send(startup)
                }
                None => Step::Wait,
            });
        }
        if let Mode::Collecting { request } = &mut self.mode {
            while let Some(message) = split(&mut self.pending, self.max_message_len)? {
                let ends = matches!(message[0], b'c' | b'f');
                if !ends && request.len() + message.len() > self.max_copy {
                    // Instead of the COPY, a statement that fails as the
                    // COPY would have for bad data: the client gets the
                    // error, an open transaction is failed.
                    let mut failing = BytesMut::new();
                    push_query(&mut failing, too_much_copy_data(self.max_copy).as_bytes());
                    self.mode = Mode::Forwarding;
                    self.dropping_copy_data = true;
                    return Ok(Step::Send(failing));
                }
                request.extend_from_slice(&message);
                if ends {
                    let request = std::mem::take(request);
                    self.mode = Mode::Copying {
                        reply: BytesMut::new(),
                    };
                    return Ok(Step::Send(request));
                }
            }
            return Ok(Step::Wait);
        }
        let mut request = BytesMut::new();
        while let Some(message) = split(&mut self.pending, self.max_message_len)? {
            if self.dropping_copy_data {
                self.dropping_copy_data = !matches!(message[0], b'c' | b'f');
                continue;
            }
            let copy = match message[0] {
                b'Q' => copy_from_stdin(query_text(&message)),
                b'P' => match parse_text(&message) {
                    Some(sql) if copy_from_stdin(sql) != Copy::None => Copy::Unsupported,
                    _ => Copy::None,
                },
                _ => Copy::None,
            };
            match copy {
                Copy::None => request.extend_from_slice(&message),
                Copy::Unsupported if message[0] == b'P' => {
                    if !request.is_empty() {
                        prepend(&mut self.pending, &message);
                        return Ok(Step::Send(request));
                    }
                    self.mode = Mode::Refusing {
                        reply: BytesMut::new(),
                    };
                    return Ok(Step::Send(failing_parse(&message)));
                }
                Copy::Unsupported => request.extend_from_slice(&unsupported_copy_query()),
                Copy::Alone if self.send_plainly || self.status == b'E' => {
                    self.send_plainly = false;
                    request.extend_from_slice(&message);
                }
                Copy::Alone => {
                    if !request.is_empty() {
                        // What precedes the COPY goes first, on its own.
                        prepend(&mut self.pending, &message);
                        return Ok(Step::Send(request));
                    }
                    let probe = probe(query_text(&message), self.status);
                    self.mode = Mode::Probing {
                        query: message,
                        reply: BytesMut::new(),
                    };
                    return Ok(Step::Send(probe));
                }
            }
        }
        Ok(if request.is_empty() {
            Step::Wait
        } else {
            Step::Send(request)
        })
    }

    /// A part of the reply to the outstanding request; returns what goes to
    /// the engine session now.
    pub fn reply(&mut self, part: &[u8], last: bool) -> BytesMut {
        match &mut self.mode {
            Mode::Forwarding | Mode::Collecting { .. } => {
                if let Some(status) = self.scan.feed(part) {
                    self.status = status;
                }
                BytesMut::from(part)
            }
            Mode::Probing { query, reply } => {
                reply.extend_from_slice(part);
                if !last {
                    return BytesMut::new();
                }
                let query = std::mem::take(query);
                let reply = std::mem::take(reply);
                match find_message(&reply, b'G') {
                    Some(copy_in) => {
                        self.mode = Mode::Collecting { request: query };
                        BytesMut::from(copy_in)
                    }
                    None => {
                        // The COPY fails before reading data (no such
                        // table, say): it goes out as it is, and fails so.
                        self.mode = Mode::Forwarding;
                        self.send_plainly = true;
                        prepend(&mut self.pending, &query);
                        BytesMut::new()
                    }
                }
            }
            Mode::Copying { reply } => {
                reply.extend_from_slice(part);
                if !last {
                    return BytesMut::new();
                }
                let mut reply = std::mem::take(reply);
                self.mode = Mode::Forwarding;
                if let Some(status) = self.scan.feed(&reply) {
                    self.status = status;
                }
                remove_first(&mut reply, b'G');
                reply
            }
            Mode::Refusing { reply } => {
                reply.extend_from_slice(part);
                if !last {
                    return BytesMut::new();
                }
                let reply = std::mem::take(reply);
                self.mode = Mode::Forwarding;
                if let Some(status) = self.scan.feed(&reply) {
                    self.status = status;
                }
                if reply.first() == Some(&b'E') {
                    let failed = first_message_len(&reply);
                    let mut answer = BytesMut::from(&extended_copy_error()[..]);
                    answer.extend_from_slice(&reply[failed..]);
                    return answer;
                }
                reply
            }
        }
    }

    /// Whether a client's COPY data is being collected.
    #[cfg(test)]
    fn collecting(&self) -> bool {
        matches!(self.mode, Mode::Collecting { .. })
    }

    fn take_startup(&mut self) -> Result<Option<BytesMut>, String> {
        if self.pending.len() < 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([
            self.pending[0],
            self.pending[1],
            self.pending[2],
            self.pending[3],
        ]);
        let len = usize::try_from(len)
            .ok()
            .filter(|len| (8..=10_000).contains(len))
            .ok_or_else(|| format!("startup packet of length {len}"))?;
        if self.pending.len() < len {
            return Ok(None);
        }
        Ok(Some(self.pending.split_to(len)))
    }
}

/// How a statement text relates to COPY FROM STDIN.
#[derive(Debug, PartialEq, Eq)]
enum Copy {
    None,
    /// One statement, a COPY FROM STDIN.
    Alone,
    /// A COPY FROM STDIN among other statements.
    Unsupported,
}

fn copy_from_stdin(sql: &[u8]) -> Copy {
    if !lexer::mentions_any(sql, &["stdin"]) {
        return Copy::None;
    }
    let Some(tokens) = lexer::tokenize(sql) else {
        return Copy::None;
    };
    let statements = lexer::statements(&tokens);
    let copies = statements
        .iter()
        .filter(|statement| is_copy_from_stdin(statement, sql))
        .count();
    match (copies, statements.len()) {
        (0, _) => Copy::None,
        (1, 1) => Copy::Alone,
        _ => Copy::Unsupported,
    }
}

/// `COPY ... FROM STDIN`: the words FROM STDIN outside any parentheses.
fn is_copy_from_stdin(statement: &[Token], sql: &[u8]) -> bool {
    if !statement.first().is_some_and(|t| t.is_word(sql, "copy")) {
        return false;
    }
    let mut depth = 0i32;
    for pair in statement.windows(2) {
        let token = pair[0];
        if token.kind == Kind::Punct {
            match token.text(sql) {
                b"(" => depth += 1,
                b")" => depth -= 1,
                _ => {}
            }
        }
        if depth == 0 && token.is_word(sql, "from") && pair[1].is_word(sql, "stdin") {
            return true;
        }
    }
    false
}

/// The probe for COPY statement `sql` with the transaction status `status`.
fn probe(sql: &[u8], status: u8) -> BytesMut {
    let mut out = BytesMut::new();
    let in_transaction = status == b'T';
    if in_transaction {
        push_query(&mut out, format!("SAVEPOINT {PROBE_SAVEPOINT}").as_bytes());
    }
    push_query(&mut out, sql);
    push(&mut out, b'f', b"pgshare probe\0");
    if in_transaction {
        push_query(
            &mut out,
            format!("ROLLBACK TO SAVEPOINT {PROBE_SAVEPOINT}").as_bytes(),
        );
        push_query(
            &mut out,
            format!("RELEASE SAVEPOINT {PROBE_SAVEPOINT}").as_bytes(),
        );
    }
    out
}

fn query_text(message: &[u8]) -> &[u8] {
    Reader::new(frame::body(message)).cstr().unwrap_or_default()
}

fn parse_text(message: &[u8]) -> Option<&[u8]> {
    let mut reader = Reader::new(frame::body(message));
    reader.cstr().ok()?;
    reader.cstr().ok()
}

/// A `Query` to send instead of one whose COPY FROM STDIN cannot be carried:
/// it fails with 0A000.
fn unsupported_copy_query() -> BytesMut {
    let mut body = UNSUPPORTED_COPY.as_bytes().to_vec();
    body.push(0);
    let mut out = BytesMut::new();
    push(&mut out, b'Q', &body);
    out
}

/// `parse` with its SQL replaced by text that fails to parse, so that
/// PostgreSQL answers it with an error and skips the rest up to `Sync`.
fn failing_parse(parse: &[u8]) -> BytesMut {
    let name = Reader::new(frame::body(parse)).cstr().unwrap_or_default();
    let mut body = name.to_vec();
    body.push(0);
    body.extend_from_slice(b"pgshare refuses COPY FROM STDIN here\0");
    // No parameter types.
    body.extend_from_slice(&0i16.to_be_bytes());
    let mut out = BytesMut::new();
    push(&mut out, b'P', &body);
    out
}

/// What a client that prepares a COPY FROM STDIN gets.
fn extended_copy_error() -> Vec<u8> {
    PgError::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        "COPY FROM STDIN over the extended protocol is not supported on a database shared by a host",
    )
    .with_hint(
        "send the COPY statement alone in a simple query, as psql's \\copy, pgbench, psycopg, pgx and JDBC's CopyManager do",
    )
    .to_bytes()
}

/// The length of the first whole message in `bytes`.
fn first_message_len(bytes: &[u8]) -> usize {
    let len = i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    1 + usize::try_from(len).unwrap_or(0)
}

/// A statement that fails with 54000, for a COPY whose data went over
/// `max_copy` bytes.
fn too_much_copy_data(max_copy: usize) -> String {
    format!(
        "DO $pgshare$BEGIN RAISE EXCEPTION USING ERRCODE = 'program_limit_exceeded', MESSAGE = 'the COPY data is larger than {max_copy} bytes, the most pgshare sends a host in one request', HINT = 'split the data into several COPY statements, or raise --tunnel-max-copy'; END$pgshare$"
    )
}

fn push_query(out: &mut BytesMut, sql: &[u8]) {
    let mut body = sql.to_vec();
    body.push(0);
    push(out, b'Q', &body);
}

fn push(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.extend_from_slice(body);
}

fn split(pending: &mut BytesMut, max_len: usize) -> Result<Option<BytesMut>, String> {
    frame::split_message(pending, max_len).map_err(|err| err.to_string())
}

/// Puts `message` back in front of the bytes not sent yet.
fn prepend(pending: &mut BytesMut, message: &[u8]) {
    let mut joined = BytesMut::with_capacity(message.len() + pending.len());
    joined.extend_from_slice(message);
    joined.extend_from_slice(pending);
    *pending = joined;
}

/// The first whole message of type `tag` in `bytes`.
fn find_message(bytes: &[u8], tag: u8) -> Option<&[u8]> {
    let mut rest = bytes;
    while rest.len() >= 5 {
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize + 1;
        if len < 5 || rest.len() < len {
            return None;
        }
        if rest[0] == tag {
            return Some(&rest[..len]);
        }
        rest = &rest[len..];
    }
    None
}

/// Removes the first whole message of type `tag` from `bytes`.
fn remove_first(bytes: &mut BytesMut, tag: u8) {
    let Some(found) = find_message(bytes, tag) else {
        return;
    };
    let start = found.as_ptr() as usize - bytes.as_ptr() as usize;
    let len = found.len();
    let mut tail = bytes.split_off(start);
    tail.advance(len);
    bytes.unsplit(tail);
}

/// Follows backend messages split anywhere, to learn the status byte of each
/// `ReadyForQuery`.
#[derive(Default)]
struct StatusScan {
    header: [u8; 5],
    have: usize,
    /// Body bytes of the current message still to pass.
    left: usize,
    /// The current message is a `ReadyForQuery`, whose one body byte is the
    /// status.
    ready: bool,
}

impl StatusScan {
    /// The last status seen in `bytes`, if any.
    fn feed(&mut self, mut bytes: &[u8]) -> Option<u8> {
        let mut status = None;
        while !bytes.is_empty() {
            if self.left > 0 {
                if self.ready {
                    status = Some(bytes[0]);
                    self.ready = false;
                }
                let n = self.left.min(bytes.len());
                self.left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (5 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 5 {
                let len = i32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.left = usize::try_from(len).unwrap_or(4).saturating_sub(4);
                self.ready = self.header[0] == b'Z' && len == 5;
                self.have = 0;
            }
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(sql: &str) -> BytesMut {
        let mut out = BytesMut::new();
        push_query(&mut out, sql.as_bytes());
        out
    }

    fn message(tag: u8, body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        push(&mut out, tag, body);
        out
    }

    fn tags(bytes: &[u8]) -> String {
        let mut tags = String::new();
        let mut rest = bytes;
        while rest.len() >= 5 {
            let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize + 1;
            tags.push(rest[0] as char);
            rest = &rest[len..];
        }
        tags
    }

    fn started() -> Requests {
        let mut requests = Requests::new(1 << 20, 1 << 10);
        requests.started = true;
        requests
    }

    fn sent(step: Step) -> BytesMut {
        match step {
            Step::Send(bytes) => bytes,
            _ => panic!("expected a request"),
        }
    }

    #[test]
    fn copy_from_stdin_is_recognised_only_as_a_statement() {
        assert_eq!(copy_from_stdin(b"COPY t FROM STDIN"), Copy::Alone);
        assert_eq!(
            copy_from_stdin(b"copy t (a, b) from stdin with (format csv);"),
            Copy::Alone
        );
        assert_eq!(copy_from_stdin(b"COPY (SELECT 1) TO STDOUT"), Copy::None);
        assert_eq!(copy_from_stdin(b"COPY t TO STDOUT"), Copy::None);
        assert_eq!(copy_from_stdin(b"SELECT 'copy t from stdin'"), Copy::None);
        assert_eq!(
            copy_from_stdin(b"BEGIN; COPY t FROM STDIN; COMMIT"),
            Copy::Unsupported
        );
    }

    #[test]
    fn a_copy_is_probed_then_sent_with_all_its_data() {
        let mut requests = started();
        requests.push(&query("COPY t FROM STDIN"));
        let probe = sent(requests.next().unwrap());
        assert_eq!(
            tags(&probe),
            "Qf",
            "an idle session is probed without a savepoint"
        );
        // The probe's answer: CopyInResponse, the CopyFail error, ready.
        let copy_in = message(b'G', &[0, 0, 1, 0, 0]);
        let mut reply = copy_in.clone();
        reply.extend_from_slice(&message(b'E', b"SERROR\0\0"));
        reply.extend_from_slice(&message(b'Z', b"I"));
        assert!(requests.reply(&reply[..3], false).is_empty());
        let answer = requests.reply(&reply[3..], true);
        assert_eq!(
            &answer[..],
            &copy_in[..],
            "only the CopyInResponse reaches the client"
        );
        assert!(requests.collecting());
        requests.push(&message(b'd', b"1\n"));
        assert!(matches!(requests.next().unwrap(), Step::Wait));
        requests.push(&message(b'd', b"2\n"));
        requests.push(&message(b'c', b""));
        requests.push(&query("SELECT 1"));
        let copy = sent(requests.next().unwrap());
        assert_eq!(tags(&copy), "Qddc");
        let mut reply = copy_in.clone();
        reply.extend_from_slice(&message(b'C', b"COPY 2\0"));
        reply.extend_from_slice(&message(b'Z', b"I"));
        assert_eq!(tags(&requests.reply(&reply, true)), "CZ");
        assert_eq!(tags(&sent(requests.next().unwrap())), "Q");
    }

    #[test]
    fn copy_data_over_the_limit_fails_the_copy_and_is_dropped() {
        let mut requests = started();
        requests.push(&query("COPY t FROM STDIN"));
        sent(requests.next().unwrap());
        let mut probe_reply = message(b'G', &[0, 0, 0]);
        probe_reply.extend_from_slice(&message(b'E', b"SERROR\0\0"));
        probe_reply.extend_from_slice(&message(b'Z', b"I"));
        requests.reply(&probe_reply, true);
        requests.push(&message(b'd', &[b'x'; 600]));
        assert!(matches!(requests.next().unwrap(), Step::Wait));
        requests.push(&message(b'd', &[b'x'; 600]));
        let failing = sent(requests.next().unwrap());
        assert_eq!(tags(&failing), "Q", "the COPY and its data stay here");
        let sql = String::from_utf8_lossy(query_text(&failing));
        assert!(sql.contains("program_limit_exceeded"), "{sql}");
        let mut reply = message(b'E', b"SERROR\0C54000\0\0");
        reply.extend_from_slice(&message(b'Z', b"I"));
        assert_eq!(
            tags(&requests.reply(&reply, true)),
            "EZ",
            "the client gets the error"
        );
        requests.push(&message(b'd', &[b'x'; 600]));
        requests.push(&message(b'c', b""));
        requests.push(&query("SELECT 1"));
        let next = sent(requests.next().unwrap());
        assert_eq!(tags(&next), "Q", "the rest of the data is dropped");
        assert_eq!(query_text(&next), b"SELECT 1");
    }

    #[test]
    fn a_probe_inside_a_transaction_uses_a_savepoint() {
        let mut requests = started();
        requests.push(&query("BEGIN"));
        sent(requests.next().unwrap());
        let mut reply = message(b'C', b"BEGIN\0");
        reply.extend_from_slice(&message(b'Z', b"T"));
        requests.reply(&reply, true);
        assert_eq!(requests.status(), b'T');
        requests.push(&query("COPY t FROM STDIN"));
        assert_eq!(tags(&sent(requests.next().unwrap())), "QQfQQ");
    }

    #[test]
    fn a_copy_that_fails_at_once_goes_out_as_it_is() {
        let mut requests = started();
        requests.push(&query("SELECT 1"));
        requests.push(&query("COPY missing FROM STDIN"));
        assert_eq!(
            tags(&sent(requests.next().unwrap())),
            "Q",
            "what precedes the COPY goes first"
        );
        requests.reply(&message(b'Z', b"I"), true);
        assert_eq!(tags(&sent(requests.next().unwrap())), "Qf");
        let mut reply = message(b'E', b"SERROR\0\0");
        reply.extend_from_slice(&message(b'Z', b"I"));
        assert!(requests.reply(&reply, true).is_empty());
        let plain = sent(requests.next().unwrap());
        assert_eq!(query_text(&plain), b"COPY missing FROM STDIN");
    }

    #[test]
    fn copies_that_cannot_be_carried_whole_fail_instead() {
        let mut requests = started();
        requests.push(&query("BEGIN; COPY t FROM STDIN; COMMIT"));
        let replaced = sent(requests.next().unwrap());
        assert_eq!(query_text(&replaced), UNSUPPORTED_COPY.as_bytes());
        requests.reply(&message(b'Z', b"I"), true);
        requests.push(&message(b'P', b"s\0COPY t FROM STDIN\0\0\0"));
        requests.push(&message(b'S', b""));
        let replaced = sent(requests.next().unwrap());
        assert_eq!(tags(&replaced), "P", "the Parse goes alone");
        assert_eq!(&replaced[5..7], b"s\0", "the statement keeps its name");
        let sql = parse_text(&replaced).unwrap();
        assert_eq!(copy_from_stdin(sql), Copy::None);
        let mut failed = message(b'E', b"SERROR\0C42601\0\0");
        failed.extend_from_slice(&message(b'Z', b"I"));
        let answer = requests.reply(&failed, true);
        assert_eq!(tags(&answer), "EZ");
        let error = PgError::fatal_from_response(&answer[..first_message_len(&answer)]);
        assert_eq!(error.code, sqlstate::FEATURE_NOT_SUPPORTED);
        assert_eq!(tags(&sent(requests.next().unwrap())), "S");
    }

    #[test]
    fn the_status_is_found_across_any_split() {
        let mut reply = message(b'D', b"\0\x01\0\0\0\x01Z");
        reply.extend_from_slice(&message(b'Z', b"E"));
        for cut in 0..reply.len() {
            let mut scan = StatusScan::default();
            let first = scan.feed(&reply[..cut]);
            let second = scan.feed(&reply[cut..]);
            assert_eq!(second.or(first), Some(b'E'), "cut at {cut}");
        }
    }
}
