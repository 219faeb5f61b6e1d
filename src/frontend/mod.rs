//! The client side: listeners, the login handshake, authentication, and the
//! loop that carries a logged-in client's messages to the engine and back.

pub mod auth;
pub mod client;
pub mod login;
pub mod md5;
pub mod scram;
pub mod tls;
pub mod transport;
