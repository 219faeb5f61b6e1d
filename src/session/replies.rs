//! Hiding the answers to `Parse` messages the gateway adds.
//!
//! On an engine with several sessions, a client's named statement may not
//! exist on the session its unit runs on; the gateway then sends the
//! statement's `Parse` first. The engine answers that `Parse` with a
//! `ParseComplete` the client never asked for, which must not reach it.

use std::collections::VecDeque;

use bytes::BytesMut;

/// Which `ParseComplete` answers of a client's stream are the gateway's, by
/// the `Sync` group they belong to: after an error the engine skips the rest
/// of the group, so their answers never come.
#[derive(Debug, Default)]
pub struct ParseReplies {
    /// One entry per `Parse` sent: its group, and the statement's engine name
    /// when the gateway added it (its answer is hidden).
    expected: VecDeque<(u64, Option<Vec<u8>>)>,
    /// Added statements whose `Parse` failed or was skipped after an error.
    not_created: Vec<Vec<u8>>,
    /// Group of the next message sent; a `Sync` or `Query` ends a group.
    sent_group: u64,
    /// Group the engine is answering.
    answered_group: u64,
}

impl ParseReplies {
    /// Records a `Parse` sent to the engine: `added` names the statement when
    /// the gateway added it.
    pub fn parse_sent(&mut self, added: Option<Vec<u8>>) {
        self.expected.push_back((self.sent_group, added));
    }

    /// Added statements that do not exist on the session after all.
    pub fn take_not_created(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.not_created)
    }

    /// Records a message that ends a group (`Sync`, `Query`, `FunctionCall`).
    pub fn group_ended(&mut self) {
        self.sent_group += 1;
    }

    /// Tracks a chunk of whole engine messages and drops the hidden answers.
    pub fn filter(&mut self, output: BytesMut) -> BytesMut {
        if self.expected.is_empty() {
            self.track_groups(&output);
            return output;
        }
        let mut kept = BytesMut::with_capacity(output.len());
        for message in messages(&output) {
            match message[0] {
                b'1' => {
                    if let Some((_, Some(_))) = self.expected.pop_front() {
                        continue;
                    }
                }
                b'E' => self.drop_group(),
                b'Z' => {
                    self.drop_group();
                    self.answered_group += 1;
                }
                _ => {}
            }
            kept.extend_from_slice(message);
        }
        kept
    }

    fn track_groups(&mut self, output: &[u8]) {
        let ready = messages(output)
            .filter(|message| message[0] == b'Z')
            .count();
        self.answered_group += ready as u64;
    }

    fn drop_group(&mut self) {
        while self
            .expected
            .front()
            .is_some_and(|&(group, _)| group == self.answered_group)
        {
            if let Some((_, Some(name))) = self.expected.pop_front() {
                self.not_created.push(name);
            }
        }
    }
}

/// Drops the first `count` `ParseComplete` messages of a pipelined unit's
/// output (the gateway's added `Parse`s come first in the unit); an error
/// means the rest were skipped.
pub fn drop_parse_completes(output: BytesMut, count: &mut u32) -> BytesMut {
    let mut kept = BytesMut::with_capacity(output.len());
    for message in messages(&output) {
        match message[0] {
            b'1' if *count > 0 => {
                *count -= 1;
                continue;
            }
            b'E' => *count = 0,
            _ => {}
        }
        kept.extend_from_slice(message);
    }
    kept
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
    use crate::protocol::backend::push_message;

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

    #[test]
    fn only_the_added_parse_answers_are_hidden() {
        let mut replies = ParseReplies::default();
        // Client: P1 B1 E1, gateway adds P2 before B2 E2, then Sync.
        replies.parse_sent(None);
        replies.parse_sent(Some(b"p2".to_vec()));
        replies.group_ended();
        let kept = replies.filter(chunk(b"12D1C2DCZ"));
        assert_eq!(tags(&kept), b"12DC2DCZ");
        assert!(replies.take_not_created().is_empty());
    }

    #[test]
    fn an_error_drops_the_rest_of_its_group() {
        let mut replies = ParseReplies::default();
        replies.parse_sent(None);
        replies.parse_sent(Some(b"first".to_vec()));
        replies.group_ended();
        replies.parse_sent(Some(b"second".to_vec()));
        replies.group_ended();
        // The first group fails at its first Parse; the second runs.
        let kept = replies.filter(chunk(b"EZ12Z"));
        assert_eq!(tags(&kept), b"EZ2Z");
        assert_eq!(replies.take_not_created(), vec![b"first".to_vec()]);
    }

    #[test]
    fn pipelined_units_drop_their_leading_parse_answers() {
        let mut count = 2;
        assert_eq!(
            tags(&drop_parse_completes(chunk(b"1112DCZ"), &mut count)),
            b"12DCZ"
        );
        let mut count = 2;
        assert_eq!(
            tags(&drop_parse_completes(chunk(b"1EZ"), &mut count)),
            b"EZ"
        );
        assert_eq!(count, 0);
    }
}
