//! The PostgreSQL frontend/backend protocol, version 3.0: message framing, the
//! startup packet, the backend messages the gateway writes itself, and SQLSTATE
//! errors. Everything else is forwarded between client and engine as raw bytes.

pub mod backend;
pub mod error;
pub mod frame;
pub mod startup;
