//! Engines: the Postgres sessions that actually run SQL. Every kind hands the
//! gateway an [`EngineSession`], a protocol stream on which startup is already
//! done, so the multiplexer treats all kinds alike.

mod backend;
pub mod cancel;
pub mod connect;
pub mod embedded;
mod extensions;
mod session;
pub mod tls;
pub mod tunnel;
pub mod upstream;

pub use session::{EngineSession, error_message, text_columns};
