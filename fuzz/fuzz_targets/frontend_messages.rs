//! The frontend message decoder and everything that reads a message's SQL:
//! framing with a length limit, name rewriting, and the SQL checks.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgshare::protocol::frame::{self, Reader};
use pgshare::session::database_commands::database_command;
use pgshare::session::names::Namespace;
use pgshare::session::reset::reset_command;
use pgshare::session::{listen, pinning, self_contained, settings};

const MAX_LEN: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut names = Namespace::new(7);
    while let Ok(Some(message)) = frame::split_message(&mut buf, MAX_LEN) {
        // A lying length never yields more than the limit.
        assert!(message.len() <= MAX_LEN + 1);
        if message[0] == b'Q' || message[0] == b'P' {
            let mut reader = Reader::new(frame::body(&message));
            if message[0] == b'P' {
                let _ = reader.cstr();
            }
            if let Ok(sql) = reader.cstr() {
                let _ = settings::may_change_settings(sql);
                let _ = listen::may_change_listens(sql);
                let _ = listen::listened_channels(sql);
                let _ = listen::unlistened_channels(sql);
                let _ = pinning::may_create_session_state(sql);
                let _ = self_contained::is_self_contained(sql);
            }
            let _ = reset_command(&message);
            let _ = database_command(&message);
        }
        if let Ok(planned) = names.plan(message) {
            // The rewritten message is framed correctly.
            let declared = i32::from_be_bytes([
                planned.message[1],
                planned.message[2],
                planned.message[3],
                planned.message[4],
            ]);
            assert_eq!(declared as usize + 1, planned.message.len());
        }
    }
});
