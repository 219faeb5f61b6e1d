//! Cleaning up after a client on the engine session it leaves, so that the next
//! client finds the session as a new connection would: no transaction open, no
//! half-finished protocol sequence, none of the client's own prepared
//! statements (those shared with other clients stay until the session's limit
//! evicts them).

use std::io;

use crate::engine::EngineSession;
use crate::protocol::backend::push_message;

use super::unit::UnitOfWork;

/// Finishes whatever the client left running, rolls back its transaction and
/// closes its own statements. `hidden_groups` are the gateway's groups still
/// to be answered. Everything the engine answers is discarded.
pub async fn after_client(
    engine: &mut EngineSession,
    unit: &UnitOfWork,
    hidden_groups: u32,
    statements: &[Vec<u8>],
) -> io::Result<()> {
    let mut finish = Vec::new();
    if unit.copy_in() {
        push_message(&mut finish, b'f', b"client disconnected during COPY\0");
    }
    let mut awaiting = (unit.awaiting_ready() + hidden_groups) as usize;
    if unit.unsynced() {
        push_message(&mut finish, b'S', &[]);
        awaiting += 1;
    }
    engine.send(&finish).await?;
    engine.input.discard_until_ready(awaiting).await?;
    if engine.status() != b'I' {
        engine.run_discarding(&query(b"ROLLBACK"), 1).await?;
    }
    close_statements(engine, statements).await
}

/// Closes prepared statements on the engine, by engine name.
pub async fn close_statements(
    engine: &mut EngineSession,
    statements: &[Vec<u8>],
) -> io::Result<()> {
    if statements.is_empty() {
        return Ok(());
    }
    let mut closes = Vec::new();
    for name in statements {
        engine.statements.remove(name);
        let mut body = vec![b'S'];
        body.extend_from_slice(name);
        body.push(0);
        push_message(&mut closes, b'C', &body);
    }
    push_message(&mut closes, b'S', &[]);
    engine.run_discarding(&closes, 1).await
}

/// A simple `Query` message.
pub fn query(sql: &[u8]) -> Vec<u8> {
    let mut body = sql.to_vec();
    body.push(0);
    let mut out = Vec::new();
    push_message(&mut out, b'Q', &body);
    out
}
