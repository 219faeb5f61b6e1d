//! The first packet of a connection: a startup message, or one of the special
//! requests (SSL, GSS encryption, cancel) that share its untagged framing.

use super::error::{PgError, sqlstate};
use super::frame::Reader;

/// PostgreSQL refuses longer startup packets; so does the gateway.
pub const MAX_STARTUP_PACKET_LEN: usize = 10_000;

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;

/// Newest minor version of protocol 3 the gateway speaks.
pub const NEWEST_MINOR: u16 = 0;

#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { process_id: i32, secret_key: i32 },
    Startup(StartupMessage),
}

#[derive(Debug, PartialEq, Eq, Default, Clone)]
pub struct StartupMessage {
    pub minor_version: u16,
    /// Parameters in the order the client sent them, protocol options excluded.
    pub params: Vec<(String, String)>,
    /// `_pq_.*` protocol options, none of which the gateway supports.
    pub protocol_options: Vec<String>,
}

impl StartupMessage {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn user(&self) -> &str {
        self.param("user").unwrap_or_default()
    }

    /// The database the client asked for; PostgreSQL defaults it to the user name.
    pub fn database(&self) -> &str {
        match self.param("database") {
            Some(name) if !name.is_empty() => name,
            _ => self.user(),
        }
    }
}

/// Reads the length word of a startup packet and checks it.
pub fn packet_len(header: [u8; 4]) -> Result<usize, PgError> {
    let len = i32::from_be_bytes(header);
    if !(8..=MAX_STARTUP_PACKET_LEN as i32).contains(&len) {
        return Err(PgError::protocol_violation(
            "invalid length of startup packet",
        ));
    }
    Ok(len as usize)
}

/// Parses a whole startup packet body (everything after the length word).
pub fn parse(body: &[u8]) -> Result<StartupPacket, PgError> {
    let mut reader = Reader::new(body);
    let code = reader.i32()?;
    match code {
        SSL_REQUEST => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST => Ok(StartupPacket::Cancel {
            process_id: reader.i32()?,
            secret_key: reader.i32()?,
        }),
        version => {
            let major = (version >> 16) as u16;
            let minor = (version & 0xffff) as u16;
            if major != 3 {
                return Err(PgError::fatal(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!(
                        "unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.{NEWEST_MINOR}"
                    ),
                ));
            }
            parse_params(reader, minor)
        }
    }
}

fn parse_params(mut reader: Reader<'_>, minor_version: u16) -> Result<StartupPacket, PgError> {
    let mut message = StartupMessage {
        minor_version,
        ..StartupMessage::default()
    };
    loop {
        let name = reader.cstr()?;
        if name.is_empty() {
            break;
        }
        let value = reader.cstr()?;
        let name = utf8(name)?;
        let value = utf8(value)?;
        if name.starts_with("_pq_.") {
            message.protocol_options.push(name);
        } else {
            message.params.push((name, value));
        }
    }
    if !reader.rest().is_empty() {
        return Err(PgError::protocol_violation(
            "invalid startup packet layout: expected terminator as last byte",
        ));
    }
    if message.user().is_empty() {
        return Err(PgError::fatal(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            "no PostgreSQL user name specified in startup packet",
        ));
    }
    Ok(StartupPacket::Startup(message))
}

fn utf8(bytes: &[u8]) -> Result<String, PgError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| PgError::protocol_violation("invalid byte sequence in startup packet"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup_body(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
        let mut body = version.to_be_bytes().to_vec();
        for (name, value) in params {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        body
    }

    #[test]
    fn parses_a_version_3_0_startup() {
        let body = startup_body(196608, &[("user", "alice"), ("database", "app")]);
        let StartupPacket::Startup(message) = parse(&body).unwrap() else {
            panic!("expected a startup message");
        };
        assert_eq!(message.user(), "alice");
        assert_eq!(message.database(), "app");
        assert_eq!(message.minor_version, 0);
    }

    #[test]
    fn database_defaults_to_user() {
        let body = startup_body(196608, &[("user", "alice")]);
        let StartupPacket::Startup(message) = parse(&body).unwrap() else {
            panic!("expected a startup message");
        };
        assert_eq!(message.database(), "alice");
    }

    #[test]
    fn protocol_3_2_with_options_is_accepted_for_negotiation() {
        let body = startup_body(196610, &[("user", "a"), ("_pq_.test", "1")]);
        let StartupPacket::Startup(message) = parse(&body).unwrap() else {
            panic!("expected a startup message");
        };
        assert_eq!(message.minor_version, 2);
        assert_eq!(message.protocol_options, vec!["_pq_.test".to_string()]);
    }

    #[test]
    fn special_requests_are_recognised() {
        assert_eq!(
            parse(&SSL_REQUEST.to_be_bytes()).unwrap(),
            StartupPacket::SslRequest
        );
        assert_eq!(
            parse(&GSSENC_REQUEST.to_be_bytes()).unwrap(),
            StartupPacket::GssEncRequest
        );
        let mut cancel = CANCEL_REQUEST.to_be_bytes().to_vec();
        cancel.extend_from_slice(&7i32.to_be_bytes());
        cancel.extend_from_slice(&9i32.to_be_bytes());
        assert_eq!(
            parse(&cancel).unwrap(),
            StartupPacket::Cancel {
                process_id: 7,
                secret_key: 9
            }
        );
    }

    #[test]
    fn bad_packets_get_the_right_sqlstate() {
        assert_eq!(
            parse(&startup_body(131072, &[("user", "a")]))
                .unwrap_err()
                .code,
            "0A000"
        );
        assert_eq!(parse(&startup_body(196608, &[])).unwrap_err().code, "28000");
        let mut unterminated = 196608i32.to_be_bytes().to_vec();
        unterminated.extend_from_slice(b"user\0a");
        assert_eq!(parse(&unterminated).unwrap_err().code, "08P01");
        assert!(packet_len(3i32.to_be_bytes()).is_err());
        assert!(packet_len(1_000_000i32.to_be_bytes()).is_err());
    }
}
