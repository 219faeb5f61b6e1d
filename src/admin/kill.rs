//! `KILL db` and `KILL_CLIENT id`: clients are disconnected at once with
//! FATAL 57P01, as PostgreSQL's `pg_terminate_backend` does, and what they
//! ran is rolled back. After `KILL` the database stays paused until
//! `RESUME`, as in PgBouncer.

use tracing::info;

use crate::gateway::Gateway;
use crate::protocol::error::{PgError, sqlstate};

use super::pause::known;
use super::result_set::command_complete;

pub fn kill(gateway: &Gateway, name: &str, out: &mut Vec<u8>) -> Result<(), PgError> {
    let database = known(gateway, name)?;
    database.activity.pause();
    for client in &database.clients {
        client.kill();
    }
    info!(
        "KILL: disconnected the {} clients of database \"{name}\"; it stays paused until RESUME",
        database.clients.len()
    );
    command_complete(out, "KILL");
    Ok(())
}

pub fn kill_client(gateway: &Gateway, id: i32, out: &mut Vec<u8>) -> Result<(), PgError> {
    let client = gateway.activity.client(id).ok_or_else(|| {
        PgError::error(sqlstate::UNDEFINED_OBJECT, format!("client {id} not found"))
            .with_hint("SHOW CLIENTS lists the ids of connected clients")
    })?;
    client.kill();
    info!(client = id, "KILL_CLIENT: disconnecting the client");
    command_complete(out, "KILL_CLIENT");
    Ok(())
}
