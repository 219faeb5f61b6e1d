//! The startup packet parser: any bytes a new connection sends first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgshare::protocol::startup::{self, StartupPacket};

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.first_chunk::<4>()
        && let Ok(len) = startup::packet_len(*header)
    {
        // A length the parser accepts is bounded: it never asks for more.
        assert!((8..=10_000).contains(&len), "accepted length {len}");
    }
    if let Ok(StartupPacket::Startup(message)) = startup::parse(data) {
        // Whatever it accepted has a user and a database to route by.
        let _ = (message.user(), message.database());
    }
});
