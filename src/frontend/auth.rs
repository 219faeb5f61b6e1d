//! Authentication exchanges after the startup packet: trust, md5 and
//! SCRAM-SHA-256, each ending in `AuthenticationOk` or a FATAL error with the
//! SQLSTATE PostgreSQL uses.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::config::{AuthMethod, Config, Secret};
use crate::protocol::backend;
use crate::protocol::error::{PgError, sqlstate};
use crate::protocol::frame::{self, Reader};

use super::md5::verify_md5_response;
use super::scram::{MECHANISM, ScramError, ScramExchange, ScramSecret};
use super::transport::{ClientError, ClientStream, read_message};

/// Password messages are small; a longer one is not a password.
const MAX_AUTH_MESSAGE_LEN: usize = 10_000;

/// Runs the configured exchange for `user`; returns when the client is in.
pub async fn authenticate<S: ClientStream>(
    stream: &mut S,
    buf: &mut BytesMut,
    config: &Config,
    user: &str,
) -> Result<(), ClientError> {
    let secret = config.users.get(user);
    match config.auth {
        AuthMethod::Trust => {
            if secret.is_none() {
                return Err(no_such_role(user).into());
            }
        }
        AuthMethod::Md5 => {
            let password = match secret {
                Some(Some(Secret::Plain(password))) => Some(password.as_str()),
                _ => None,
            };
            md5_exchange(stream, buf, user, password).await?;
        }
        AuthMethod::ScramSha256 => {
            let known = match secret {
                Some(Some(Secret::Plain(password))) => Some(derive(password.clone()).await?),
                Some(Some(Secret::Scram(secret))) => Some(secret.clone()),
                _ => None,
            };
            scram_exchange(stream, buf, user, known).await?;
        }
    }
    Ok(())
}

/// A SCRAM secret for `password`, derived (4096 rounds of PBKDF2, some
/// milliseconds) off the threads that serve clients, which it would stall.
async fn derive(password: String) -> Result<ScramSecret, ClientError> {
    tokio::task::spawn_blocking(move || ScramSecret::new_random(&password))
        .await
        .map_err(|err| ClientError::Io(std::io::Error::other(err)))
}

fn no_such_role(user: &str) -> PgError {
    PgError::fatal(
        sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
        format!("role \"{user}\" does not exist"),
    )
}

fn password_failed(user: &str, method: &str) -> PgError {
    PgError::fatal(
        sqlstate::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    )
    .with_hint(format!("the gateway uses {method} authentication"))
}

/// Reads the client's `PasswordMessage`-family answer (tag `p`).
async fn read_password_message<S: ClientStream>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<BytesMut, ClientError> {
    let message = read_message(stream, buf, MAX_AUTH_MESSAGE_LEN).await?;
    if message[0] != b'p' {
        return Err(PgError::protocol_violation(format!(
            "expected password response, got message type {}",
            message[0]
        ))
        .into());
    }
    Ok(message)
}

/// An unknown role still goes through the exchange, so a client cannot tell
/// unknown roles from wrong passwords, as with PostgreSQL.
async fn md5_exchange<S: ClientStream>(
    stream: &mut S,
    buf: &mut BytesMut,
    user: &str,
    password: Option<&str>,
) -> Result<(), ClientError> {
    let salt: [u8; 4] = rand::random();
    let mut out = Vec::new();
    backend::authentication_md5(&mut out, salt);
    stream.write_all(&out).await?;
    stream.flush().await?;
    let message = read_password_message(stream, buf).await?;
    let response = Reader::new(frame::body(&message)).cstr()?;
    let response = std::str::from_utf8(response).unwrap_or_default();
    match password {
        Some(password) if verify_md5_response(user, password, salt, response) => Ok(()),
        _ => Err(password_failed(user, "md5").into()),
    }
}

async fn scram_exchange<S: ClientStream>(
    stream: &mut S,
    buf: &mut BytesMut,
    user: &str,
    secret: Option<ScramSecret>,
) -> Result<(), ClientError> {
    let known = secret.is_some();
    let secret = match secret {
        Some(secret) => secret,
        None => derive(random_password()).await?,
    };
    let mut exchange = ScramExchange::new(secret);
    let mut out = Vec::new();
    backend::authentication_sasl(&mut out, &[MECHANISM]);
    stream.write_all(&out).await?;
    stream.flush().await?;

    let message = read_password_message(stream, buf).await?;
    let mut reader = Reader::new(frame::body(&message));
    let mechanism = String::from_utf8_lossy(reader.cstr()?).into_owned();
    let len = reader.i32()?;
    let data = if len < 0 {
        &[][..]
    } else {
        reader.take(len as usize)?
    };
    let server_first = exchange
        .client_first(&mechanism, data)
        .map_err(|err| scram_error(err, user))?;
    out.clear();
    backend::authentication_sasl_continue(&mut out, &server_first);
    stream.write_all(&out).await?;
    stream.flush().await?;

    let message = read_password_message(stream, buf).await?;
    let server_final = exchange
        .client_final(frame::body(&message))
        .map_err(|err| scram_error(err, user))?;
    if !known {
        return Err(password_failed(user, "scram-sha-256").into());
    }
    out.clear();
    backend::authentication_sasl_final(&mut out, &server_final);
    stream.write_all(&out).await?;
    Ok(())
}

fn scram_error(err: ScramError, user: &str) -> PgError {
    match err {
        ScramError::WrongPassword => password_failed(user, "scram-sha-256"),
        other => PgError::protocol_violation(format!("malformed SCRAM message: {other}")),
    }
}

fn random_password() -> String {
    format!("{:032x}", rand::random::<u128>())
}
