//! Hiding the answers to messages the gateway adds to a client's stream.
//!
//! Before a client's message runs, the gateway may add messages of its own:
//! a `Parse` for a statement the session lacks, a `Close` for one it evicts,
//! or a whole group ending in `Sync` (or a simple `Query`) where a `Parse`
//! cannot go. Their answers must not reach the client. A client's own `Parse`
//! of a statement the session already has is sent as a harmless `Close`,
//! whose answer becomes the `ParseComplete` the client expects.
//!
//! Answers are matched to messages by position: the engine answers each
//! `Parse` with `ParseComplete` and each `Close` with `CloseComplete`, in
//! order, except that after an error it skips the rest of the `Sync` group.
//! Whatever was skipped or failed did not take effect, and the filter says so.
//!
//! Commands are matched the same way: each statement of a simple `Query` and
//! each `Execute` ends with one `CommandComplete` (or `PortalSuspended`, or
//! `EmptyQueryResponse`), so the answer to a command the gateway replaced
//! with a stand-in gets the tag PostgreSQL would have given.
//!
//! The gateway's table of the statements a session has can be wrong, if
//! something dropped them behind its back (a function running `DEALLOCATE
//! ALL`, say). When the engine answers that it lacks one of the gateway's
//! statements before anything of the group ran, and the group ends with the
//! engine idle, nothing of it took effect: the answer is withheld, the
//! session forgets the statement, and the owner of the filter sends the group
//! again (`take_retry`), which prepares it first.

use std::collections::VecDeque;

use bytes::BytesMut;
use tracing::warn;

use crate::protocol::backend::push_message;

use super::names::{CommandRewrite, Undone};

/// What becomes of the answer to one `Parse` or `Close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The client's own: passed on.
    Pass,
    /// The gateway's: dropped (for a `Sync`, its `ReadyForQuery`).
    Hide,
    /// A `CloseComplete` that answers the client's `Parse`.
    AsParseComplete,
}

/// A `CommandRewrite` placed in its group.
#[derive(Debug)]
struct PendingRewrite {
    group: u64,
    /// Which command of the group.
    command: u32,
    tag: &'static str,
    undone_if_skipped: Vec<Undone>,
}

#[derive(Debug)]
struct Expected {
    group: u64,
    answer: Answer,
    undone: Vec<Undone>,
}

#[derive(Debug, Default)]
pub struct ReplyFilter {
    /// One entry per `Parse` and `Close` sent in the client's groups.
    expected: VecDeque<Expected>,
    /// Groups made only of the gateway's messages, whose answers are all
    /// dropped, with what an error in them undoes.
    hidden: VecDeque<(u64, Vec<Undone>)>,
    /// The client's groups whose failure undoes something.
    failing: VecDeque<(u64, Vec<Undone>)>,
    /// Commands whose answers get another tag, in order.
    rewrites: VecDeque<PendingRewrite>,
    /// Groups ended by a `Sync` of the gateway's, whose `ReadyForQuery` is
    /// dropped.
    hidden_ready: VecDeque<u64>,
    /// The group being answered failed.
    group_failed: bool,
    /// Commands sent in the current group, and answered in the group being
    /// answered.
    sent_commands: u32,
    answered_commands: u32,
    undone: Vec<Undone>,
    /// Group of the next message sent; a `Sync`, `Query` or `FunctionCall`
    /// ends a group.
    sent_group: u64,
    /// A message was sent in the current group.
    group_open: bool,
    /// Group the engine is answering.
    answered_group: u64,
    /// Something of the group being answered reached the client.
    kept_in_group: bool,
    /// The owner keeps a copy of the last group sent and can send it again.
    pub retry_allowed: bool,
    /// The group being answered failed for a lost statement; its answer is
    /// withheld until it ends.
    lost: Option<Lost>,
    /// A group to send again: the name of the statement it lacked.
    retry: Option<Vec<u8>>,
}

/// The withheld answer of a group that failed for a lost statement.
#[derive(Debug)]
struct Lost {
    statement: Vec<u8>,
    error: Vec<u8>,
    /// What its failure undoes, applied only when it is not sent again.
    undone: Vec<Undone>,
}

impl ReplyFilter {
    /// Records a message sent in a client's group; `answer` for `Parse` and
    /// `Close`, with what their failure undoes, and `rewrites` for the
    /// commands it runs.
    pub fn sent(
        &mut self,
        tag: u8,
        answer: Answer,
        undone: Vec<Undone>,
        rewrites: Vec<CommandRewrite>,
    ) {
        for rewrite in rewrites {
            self.rewrites.push_back(PendingRewrite {
                group: self.sent_group,
                command: self.sent_commands + rewrite.index,
                tag: rewrite.tag,
                undone_if_skipped: rewrite.undone_if_skipped,
            });
        }
        if tag == b'E' {
            self.sent_commands += 1;
        }
        if tag == b'S' && answer == Answer::Hide {
            self.hidden_ready.push_back(self.sent_group);
        }
        if matches!(tag, b'P' | b'C') {
            self.expected.push_back(Expected {
                group: self.sent_group,
                answer,
                undone,
            });
        } else if !undone.is_empty() {
            self.failing.push_back((self.sent_group, undone));
        }
        if matches!(tag, b'S' | b'Q' | b'F') {
            self.sent_group += 1;
            self.sent_commands = 0;
            self.group_open = false;
        } else {
            self.group_open = true;
        }
    }

    /// Records a group of the gateway's own, just sent (ending in `Sync` or
    /// being one `Query`): all its answers are dropped, and an error in it
    /// undoes `undone`.
    pub fn sent_hidden_group(&mut self, undone: Vec<Undone>) {
        self.hidden.push_back((self.sent_group, undone));
        self.sent_group += 1;
        self.sent_commands = 0;
        self.group_open = false;
    }

    /// No message was sent in the current group yet.
    pub fn at_group_start(&self) -> bool {
        !self.group_open
    }

    /// `ReadyForQuery` messages of the gateway's groups still to come.
    pub fn hidden_pending(&self) -> u32 {
        self.hidden.len() as u32
    }

    /// What failed or was skipped since last asked.
    pub fn take_undone(&mut self) -> Vec<Undone> {
        std::mem::take(&mut self.undone)
    }

    /// The name of the statement the last group sent lacked, when that group
    /// must be sent again (its answer was dropped).
    pub fn take_retry(&mut self) -> Option<Vec<u8>> {
        self.retry.take()
    }

    /// Drops the gateway's answers from a chunk of whole engine messages;
    /// `kept` sees the tag of each message that stays.
    pub fn filter(&mut self, output: BytesMut, mut kept_tag: impl FnMut(u8)) -> BytesMut {
        if self.expected.is_empty()
            && self.hidden.is_empty()
            && self.failing.is_empty()
            && self.rewrites.is_empty()
            && self.hidden_ready.is_empty()
            && self.lost.is_none()
            && !messages(&output).any(|message| message[0] == b'E')
        {
            for message in messages(&output) {
                if message[0] == b'Z' {
                    self.answered_group += 1;
                    self.kept_in_group = false;
                } else {
                    self.kept_in_group = true;
                }
                kept_tag(message[0]);
            }
            self.answered_commands = 0;
            return output;
        }
        let mut kept = BytesMut::with_capacity(output.len());
        for message in messages(&output) {
            let tag = message[0];
            if let Some((group, undone)) = self.hidden.front_mut()
                && *group == self.answered_group
            {
                match tag {
                    b'E' => self.undone.append(undone),
                    b'Z' => {
                        self.hidden.pop_front();
                        self.answered_group += 1;
                    }
                    _ => {}
                }
                continue;
            }
            match tag {
                b'1' | b'3' => match self.expected.pop_front().map(|e| e.answer) {
                    Some(Answer::Hide) => continue,
                    Some(Answer::AsParseComplete) => {
                        kept.extend_from_slice(b"1\0\0\0\x04");
                        kept_tag(b'1');
                        self.kept_in_group = true;
                        continue;
                    }
                    Some(Answer::Pass) | None => {}
                },
                b'C' | b's' | b'I' => {
                    let command = self.answered_commands;
                    self.answered_commands += 1;
                    if let Some(rewrite) = self.rewrites.front()
                        && rewrite.group == self.answered_group
                        && rewrite.command == command
                    {
                        let rewrite = self.rewrites.pop_front().expect("front exists");
                        let mut answer = Vec::with_capacity(rewrite.tag.len() + 6);
                        let mut body = rewrite.tag.as_bytes().to_vec();
                        body.push(0);
                        push_message(&mut answer, b'C', &body);
                        kept.extend_from_slice(&answer);
                        kept_tag(b'C');
                        self.kept_in_group = true;
                        continue;
                    }
                }
                b'E' => {
                    self.group_failed = true;
                    let lost = lost_statement(message);
                    let undone_before = self.undone.len();
                    self.skip_rest_of_group();
                    if let Some((_, undone)) = self.failing_group() {
                        let mut failed = std::mem::take(undone);
                        self.undone.append(&mut failed);
                    }
                    if let Some(statement) = lost {
                        if self.may_send_again() {
                            self.lost = Some(Lost {
                                statement,
                                error: message.to_vec(),
                                undone: self.undone.split_off(undone_before),
                            });
                            continue;
                        }
                        // The client gets the error; the session prepares
                        // the statement again when it is next used.
                        warn!(
                            "the engine had lost prepared statement \"{}\", which pgshare had prepared on it; the client gets the error, and the statement is prepared again when next used",
                            String::from_utf8_lossy(&statement)
                        );
                        self.undone.push(Undone::NotPrepared(statement));
                    }
                }
                b'Z' => {
                    self.skip_rest_of_group();
                    if self.failing_group().is_some() {
                        self.failing.pop_front();
                    }
                    if let Some(lost) = self.lost.take() {
                        if message.get(5) == Some(&b'I') {
                            // Nothing of the group took effect: the session
                            // forgets what it lacks, the client nothing.
                            self.undone.extend(
                                lost.undone
                                    .into_iter()
                                    .filter(|undone| matches!(undone, Undone::NotPrepared(_))),
                            );
                            self.undone
                                .push(Undone::NotPrepared(lost.statement.clone()));
                            self.retry = Some(lost.statement);
                            if self.hidden_ready.front() == Some(&self.answered_group) {
                                self.hidden_ready.pop_front();
                            }
                            self.group_failed = false;
                            self.kept_in_group = false;
                            self.answered_group += 1;
                            self.answered_commands = 0;
                            continue;
                        }
                        self.undone.extend(lost.undone);
                        kept.extend_from_slice(&lost.error);
                        kept_tag(b'E');
                    }
                    let hidden = self.hidden_ready.front() == Some(&self.answered_group);
                    if hidden {
                        self.hidden_ready.pop_front();
                        if self.group_failed {
                            self.undone.push(Undone::SkipToSync);
                        }
                    }
                    self.group_failed = false;
                    self.kept_in_group = false;
                    self.answered_group += 1;
                    self.answered_commands = 0;
                    if hidden {
                        continue;
                    }
                    kept.extend_from_slice(message);
                    kept_tag(tag);
                    continue;
                }
                _ => {}
            }
            kept.extend_from_slice(message);
            kept_tag(tag);
            self.kept_in_group = true;
        }
        kept
    }

    /// Whether the group being answered may be sent again: nothing of it
    /// reached the client, and it is the last group sent.
    fn may_send_again(&self) -> bool {
        let last_sent = self.answered_group + 1 == self.sent_group && !self.group_open;
        self.retry_allowed && !self.kept_in_group && last_sent
    }

    /// The group being answered, when its failure undoes something.
    fn failing_group(&mut self) -> Option<&mut (u64, Vec<Undone>)> {
        let group = self.answered_group;
        self.failing
            .front_mut()
            .filter(|(failing, _)| *failing == group)
    }

    /// The failed message and everything after it in the group did not run.
    /// Their effects are undone last first, as a `Close` skipped after its
    /// own skipped `Parse` must leave nothing behind.
    fn skip_rest_of_group(&mut self) {
        let mut skipped = Vec::new();
        while self
            .expected
            .front()
            .is_some_and(|expected| expected.group == self.answered_group)
        {
            if let Some(expected) = self.expected.pop_front() {
                skipped.push(expected.undone);
            }
        }
        self.undone.extend(
            skipped
                .into_iter()
                .rev()
                .flat_map(|undone| undone.into_iter().rev()),
        );
        // Commands the group did not reach never took effect.
        while self
            .rewrites
            .front()
            .is_some_and(|rewrite| rewrite.group == self.answered_group)
        {
            let rewrite = self.rewrites.pop_front().expect("front exists");
            self.undone.extend(rewrite.undone_if_skipped);
        }
    }
}

/// The gateway's statement that `error` says the engine lacks.
fn lost_statement(error: &[u8]) -> Option<Vec<u8>> {
    let fields = error.get(5..)?.split(|&byte| byte == 0);
    let mut code = None;
    let mut text = None;
    for field in fields.take_while(|field| !field.is_empty()) {
        match field[0] {
            b'C' => code = Some(&field[1..]),
            b'M' => text = Some(&field[1..]),
            _ => {}
        }
    }
    if code != Some(b"26000") {
        return None;
    }
    // prepared statement "pgs_…" does not exist
    let text = text?;
    let start = text.iter().position(|&b| b == b'"')? + 1;
    let end = start + text[start..].iter().position(|&b| b == b'"')?;
    let name = &text[start..end];
    is_gateway_statement(name).then(|| name.to_vec())
}

/// Whether `name` is one the gateway gives the statements it prepares:
/// `pgs_<digest>` for shared ones, `pgs<client>v<generation>_<name>` for a
/// client's SQL `PREPARE`. (A client's name it never prepared becomes
/// `pgs<client>_<name>`, which no session has, and stays an error.)
fn is_gateway_statement(name: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(b"pgs") else {
        return false;
    };
    if rest.starts_with(b"_") {
        return true;
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && rest.get(digits) == Some(&b'v')
}

/// The whole messages of a chunk.
fn messages(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = chunk;
    std::iter::from_fn(move || {
        if rest.len() < 5 {
            return None;
        }
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize + 1;
        let (message, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        Some(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(tags: &[u8]) -> BytesMut {
        let mut out = Vec::new();
        for &tag in tags {
            let body: &[u8] = if tag == b'Z' { b"I" } else { b"" };
            push_message(&mut out, tag, body);
        }
        BytesMut::from(&out[..])
    }

    fn tags(chunk: &[u8]) -> Vec<u8> {
        messages(chunk).map(|m| m[0]).collect()
    }

    fn not_prepared(name: &str) -> Vec<Undone> {
        vec![Undone::NotPrepared(name.as_bytes().to_vec())]
    }

    #[test]
    fn only_the_gateways_answers_are_hidden() {
        let mut replies = ReplyFilter::default();
        // Client: P1 B1 E1; the gateway adds Close+Parse of p2 before B2 E2;
        // then the client's Sync.
        replies.sent(b'P', Answer::Pass, vec![], vec![]);
        replies.sent(b'B', Answer::Pass, vec![], vec![]);
        replies.sent(b'C', Answer::Hide, vec![], vec![]);
        replies.sent(b'P', Answer::Hide, not_prepared("p2"), vec![]);
        replies.sent(b'S', Answer::Pass, vec![], vec![]);
        let mut seen = Vec::new();
        let kept = replies.filter(chunk(b"12D31C2DCZ"), |tag| seen.push(tag));
        assert_eq!(tags(&kept), b"12DC2DCZ");
        assert_eq!(seen, b"12DC2DCZ");
        assert!(replies.take_undone().is_empty());
    }

    #[test]
    fn an_error_undoes_the_rest_of_its_group() {
        let mut replies = ReplyFilter::default();
        replies.sent(b'P', Answer::Pass, vec![], vec![]);
        replies.sent(b'P', Answer::Hide, not_prepared("first"), vec![]);
        replies.sent(b'S', Answer::Pass, vec![], vec![]);
        replies.sent(b'P', Answer::Hide, not_prepared("second"), vec![]);
        replies.sent(b'S', Answer::Pass, vec![], vec![]);
        // The first group fails at its first Parse; the second runs.
        let kept = replies.filter(chunk(b"EZ12Z"), |_| {});
        assert_eq!(tags(&kept), b"EZ2Z");
        assert_eq!(replies.take_undone(), not_prepared("first"));
    }

    #[test]
    fn skipped_messages_are_undone_last_first() {
        let mut replies = ReplyFilter::default();
        replies.sent(b'D', Answer::Pass, vec![], vec![]);
        replies.sent(b'P', Answer::Pass, not_prepared("parsed"), vec![]);
        replies.sent(b'C', Answer::Pass, not_prepared("closed"), vec![]);
        replies.sent(b'S', Answer::Pass, vec![], vec![]);
        // The Describe fails: the Parse and the Close after it never ran.
        replies.filter(chunk(b"EZ"), |_| {});
        let mut expected = not_prepared("closed");
        expected.extend(not_prepared("parsed"));
        assert_eq!(replies.take_undone(), expected);
    }

    #[test]
    fn a_failed_query_undoes_what_it_would_have_made() {
        let mut replies = ReplyFilter::default();
        replies.sent(b'Q', Answer::Pass, not_prepared("p"), vec![]);
        replies.sent(b'Q', Answer::Pass, not_prepared("q"), vec![]);
        let kept = replies.filter(chunk(b"EZCZ"), |_| {});
        assert_eq!(tags(&kept), b"EZCZ");
        assert_eq!(replies.take_undone(), not_prepared("p"));
    }

    #[test]
    fn a_close_answers_a_parse_of_a_statement_the_session_has() {
        let mut replies = ReplyFilter::default();
        replies.sent(b'C', Answer::AsParseComplete, vec![], vec![]);
        replies.sent(b'B', Answer::Pass, vec![], vec![]);
        replies.sent(b'S', Answer::Pass, vec![], vec![]);
        let kept = replies.filter(chunk(b"32Z"), |_| {});
        assert_eq!(tags(&kept), b"12Z");
    }

    #[test]
    fn the_gateways_own_groups_are_dropped_whole() {
        let mut replies = ReplyFilter::default();
        assert!(replies.at_group_start());
        replies.sent_hidden_group(not_prepared("plan"));
        replies.sent(b'Q', Answer::Pass, vec![], vec![]);
        assert_eq!(replies.hidden_pending(), 1);
        let mut seen = Vec::new();
        // The gateway's PREPARE fails; the client's query answers.
        let kept = replies.filter(chunk(b"EZTDCZ"), |tag| seen.push(tag));
        assert_eq!(tags(&kept), b"TDCZ");
        assert_eq!(seen, b"TDCZ");
        assert_eq!(replies.hidden_pending(), 0);
        assert_eq!(replies.take_undone(), not_prepared("plan"));
    }

    fn command_complete(tag: &str) -> BytesMut {
        let mut out = Vec::new();
        push_message(&mut out, b'C', format!("{tag}\0").as_bytes());
        BytesMut::from(&out[..])
    }

    #[test]
    fn a_stand_in_command_is_answered_with_the_tag_of_the_command_it_replaced() {
        let mut replies = ReplyFilter::default();
        let rewrite = |index| CommandRewrite {
            index,
            tag: "DEALLOCATE ALL",
            undone_if_skipped: not_prepared("kept"),
        };
        // A pipeline: E, E (the stand-in), S; then a query whose second
        // statement is one.
        replies.sent(b'E', Answer::Pass, vec![], vec![]);
        replies.sent(b'E', Answer::Pass, vec![], vec![rewrite(0)]);
        replies.sent(b'S', Answer::Pass, vec![], vec![]);
        replies.sent(b'Q', Answer::Pass, vec![], vec![rewrite(1)]);
        let mut answer = BytesMut::new();
        answer.extend_from_slice(&command_complete("SELECT 1"));
        answer.extend_from_slice(&command_complete("DO"));
        answer.extend_from_slice(&chunk(b"Z"));
        answer.extend_from_slice(&command_complete("SELECT 1"));
        answer.extend_from_slice(&command_complete("DO"));
        answer.extend_from_slice(&chunk(b"Z"));
        let kept = replies.filter(answer, |_| {});
        let mut expected = BytesMut::new();
        expected.extend_from_slice(&command_complete("SELECT 1"));
        expected.extend_from_slice(&command_complete("DEALLOCATE ALL"));
        expected.extend_from_slice(&chunk(b"Z"));
        expected.extend_from_slice(&command_complete("SELECT 1"));
        expected.extend_from_slice(&command_complete("DEALLOCATE ALL"));
        expected.extend_from_slice(&chunk(b"Z"));
        assert_eq!(kept, expected);
        assert!(replies.take_undone().is_empty());
    }

    #[test]
    fn a_stand_in_command_that_never_ran_undoes_its_effect() {
        let mut replies = ReplyFilter::default();
        replies.sent(b'E', Answer::Pass, vec![], vec![]);
        replies.sent(
            b'E',
            Answer::Pass,
            vec![],
            vec![CommandRewrite {
                index: 0,
                tag: "DEALLOCATE ALL",
                undone_if_skipped: not_prepared("kept"),
            }],
        );
        replies.sent(b'S', Answer::Pass, vec![], vec![]);
        // The first Execute fails: the second is skipped.
        let kept = replies.filter(chunk(b"EZ"), |_| {});
        assert_eq!(tags(&kept), b"EZ");
        assert_eq!(replies.take_undone(), not_prepared("kept"));
    }

    fn error(code: &str, message: &str) -> BytesMut {
        let mut out = Vec::new();
        push_message(
            &mut out,
            b'E',
            format!("SERROR\0C{code}\0M{message}\0\0").as_bytes(),
        );
        BytesMut::from(&out[..])
    }

    #[test]
    fn a_group_that_lacked_a_statement_of_the_gateways_is_run_again() {
        let mut replies = ReplyFilter {
            retry_allowed: true,
            ..ReplyFilter::default()
        };
        replies.sent(b'B', Answer::Pass, vec![], vec![]);
        replies.sent(b'E', Answer::Pass, vec![], vec![]);
        replies.sent(b'S', Answer::Pass, vec![], vec![]);
        // The error and the ReadyForQuery may come in different reads.
        let lost = error("26000", "prepared statement \"pgs_0a1b\" does not exist");
        assert!(replies.filter(lost, |_| {}).is_empty());
        assert!(replies.filter(chunk(b"Z"), |_| {}).is_empty());
        assert_eq!(replies.take_retry(), Some(b"pgs_0a1b".to_vec()));
        assert_eq!(replies.take_undone(), not_prepared("pgs_0a1b"));
    }

    #[test]
    fn other_missing_statements_and_groups_that_ran_reach_the_client() {
        for (name, before) in [("pgs1000_mine", &b""[..]), ("pgs_0a1b", &b"2"[..])] {
            let mut replies = ReplyFilter {
                retry_allowed: true,
                ..ReplyFilter::default()
            };
            replies.sent(b'B', Answer::Pass, vec![], vec![]);
            replies.sent(b'S', Answer::Pass, vec![], vec![]);
            let mut answer = chunk(before);
            answer.extend_from_slice(&error(
                "26000",
                &format!("prepared statement \"{name}\" does not exist"),
            ));
            answer.extend_from_slice(&chunk(b"Z"));
            let kept = replies.filter(answer, |_| {});
            assert_eq!(tags(&kept), [before, b"EZ"].concat(), "{name}");
            assert_eq!(replies.take_retry(), None);
            // The gateway's own is forgotten, to be prepared when next used.
            let forgotten = if name.starts_with("pgs_") {
                not_prepared(name)
            } else {
                Vec::new()
            };
            assert_eq!(replies.take_undone(), forgotten, "{name}");
        }
    }
}
