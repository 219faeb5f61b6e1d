//! Where a client's unit of work stands, to know when its lease may end.
//!
//! A lease ends only when the engine is idle (`ReadyForQuery` with status `I`)
//! and every message the client sent has been answered: each simple `Query`,
//! `FunctionCall` and `Sync` is answered by exactly one `ReadyForQuery`, and an
//! extended-protocol sequence is not finished before its `Sync`.

#[derive(Debug, Default)]
pub struct UnitOfWork {
    /// `ReadyForQuery` messages still owed by the engine.
    awaiting_ready: u32,
    /// Extended-protocol messages were sent since the last `Sync`.
    unsynced: bool,
    /// The last message that runs a command: `Q`, `E` or `F`.
    last_command: u8,
    /// The engine asked for COPY data and the client has not yet sent its
    /// `CopyDone` or `CopyFail`.
    copy_in: bool,
}

impl UnitOfWork {
    /// Records a frontend message forwarded to the engine.
    pub fn sent(&mut self, tag: u8) {
        if self.copy_in {
            // In COPY FROM STDIN, PostgreSQL ignores Sync and Flush; only
            // CopyDone or CopyFail end the data.
            if matches!(tag, b'c' | b'f') {
                self.copy_in = false;
            }
            return;
        }
        match tag {
            b'Q' | b'F' => {
                self.awaiting_ready += 1;
                self.last_command = tag;
            }
            b'S' => {
                self.awaiting_ready += 1;
                self.unsynced = false;
            }
            b'E' => {
                self.unsynced = true;
                self.last_command = tag;
            }
            b'P' | b'B' | b'D' | b'C' => self.unsynced = true,
            // A Flush asks for what is buffered; it neither opens nor ends
            // an extended-protocol sequence (libpq's pipeline mode sends
            // one after its Sync).
            _ => {}
        }
    }

    /// Records a backend message from the engine.
    pub fn received(&mut self, tag: u8) {
        match tag {
            b'Z' => self.awaiting_ready = self.awaiting_ready.saturating_sub(1),
            b'G' => {
                // The command that started the COPY is the last one sent:
                // clients wait for CopyInResponse before sending more. Any
                // Sync sent after it is ignored by the engine, so a simple
                // Query still owes its one ReadyForQuery, and an extended
                // Execute needs the Sync the client sends after the data.
                self.copy_in = true;
                if self.last_command == b'E' {
                    self.awaiting_ready = 0;
                    self.unsynced = true;
                } else {
                    self.awaiting_ready = 1;
                }
            }
            _ => {}
        }
    }

    /// True when nothing the client sent is still unanswered.
    pub fn answered(&self) -> bool {
        self.awaiting_ready == 0 && !self.unsynced && !self.copy_in
    }

    pub fn awaiting_ready(&self) -> u32 {
        self.awaiting_ready
    }

    pub fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// The engine is in COPY FROM STDIN, waiting for the client's data.
    pub fn copy_in(&self) -> bool {
        self.copy_in
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simple_query_is_answered_by_its_ready_for_query() {
        let mut unit = UnitOfWork::default();
        unit.sent(b'Q');
        assert!(!unit.answered());
        unit.received(b'T');
        unit.received(b'D');
        unit.received(b'C');
        assert!(!unit.answered());
        unit.received(b'Z');
        assert!(unit.answered());
    }

    #[test]
    fn pipelined_syncs_each_need_their_ready_for_query() {
        let mut unit = UnitOfWork::default();
        for tag in *b"PBESBES" {
            unit.sent(tag);
        }
        unit.received(b'Z');
        assert!(!unit.answered());
        unit.received(b'Z');
        assert!(unit.answered());
    }

    #[test]
    fn an_extended_sequence_without_sync_keeps_the_unit_open() {
        let mut unit = UnitOfWork::default();
        unit.sent(b'P');
        unit.sent(b'D');
        unit.sent(b'H');
        assert!(!unit.answered());
        assert!(unit.unsynced());
        unit.sent(b'S');
        unit.received(b'Z');
        assert!(unit.answered());
    }

    #[test]
    fn a_flush_after_a_query_or_a_sync_leaves_nothing_unanswered() {
        let mut unit = UnitOfWork::default();
        unit.sent(b'Q');
        unit.sent(b'H');
        unit.received(b'Z');
        assert!(unit.answered());
        for tag in *b"PBESH" {
            unit.sent(tag);
        }
        unit.received(b'Z');
        assert!(unit.answered());
    }

    #[test]
    fn simple_copy_in_lasts_until_its_ready_for_query() {
        let mut unit = UnitOfWork::default();
        unit.sent(b'Q');
        unit.received(b'G');
        assert!(unit.copy_in());
        unit.sent(b'd');
        unit.sent(b'c');
        assert!(!unit.copy_in());
        unit.received(b'C');
        assert!(!unit.answered());
        unit.received(b'Z');
        assert!(unit.answered());
    }

    #[test]
    fn extended_copy_in_ignores_the_sync_sent_before_the_data() {
        // tokio-postgres sends Bind, Execute, Sync, waits for CopyInResponse,
        // then sends the data, CopyDone and another Sync. PostgreSQL ignores
        // the first Sync and answers only the second.
        let mut unit = UnitOfWork::default();
        for tag in *b"BES" {
            unit.sent(tag);
        }
        unit.received(b'2');
        unit.received(b'G');
        for tag in *b"ddSHdc" {
            unit.sent(tag);
        }
        assert!(!unit.answered());
        unit.sent(b'S');
        unit.received(b'C');
        assert!(!unit.answered());
        unit.received(b'Z');
        assert!(unit.answered());
    }
}
