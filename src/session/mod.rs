//! Per-client virtual state kept by the gateway so that each client sees its own
//! connection on a shared engine session: its statement and portal names, and
//! where its current unit of work stands.

pub mod cleanup;
pub mod database_commands;
pub mod effects;
pub mod gateway_commands;
pub mod listen;
pub mod names;
pub mod pinning;
pub mod pipeline;
pub mod placement;
pub mod replies;
pub mod reset;
pub mod self_contained;
pub mod settings;
pub mod snapshots;
pub mod statements;
pub mod unit;
