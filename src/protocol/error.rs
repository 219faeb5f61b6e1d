//! Errors that reach a client as `ErrorResponse` messages with a real SQLSTATE.

use std::borrow::Cow;
use std::fmt;

/// SQLSTATE codes the gateway itself reports, named as in PostgreSQL's errcodes.
pub mod sqlstate {
    pub const SUCCESSFUL_COMPLETION: &str = "00000";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const QUERY_CANCELED: &str = "57014";
    pub const IDLE_IN_TRANSACTION_SESSION_TIMEOUT: &str = "25P03";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const INTERNAL_ERROR: &str = "XX000";
    pub const INVALID_NAME: &str = "42602";
    pub const DUPLICATE_DATABASE: &str = "42P04";
    pub const OBJECT_IN_USE: &str = "55006";
    pub const INSUFFICIENT_RESOURCES: &str = "53000";
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
    pub const SYNTAX_ERROR: &str = "42601";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const RESERVED_NAME: &str = "42939";
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub const CONFIG_FILE_ERROR: &str = "F0000";
}

/// `ERROR` ends the current statement; `FATAL` ends the connection; a
/// `NOTICE` only informs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Notice,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
        }
    }
}

/// An error as PostgreSQL would report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: Severity,
    pub code: Cow<'static, str>,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl PgError {
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code: Cow::Borrowed(code),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// Whether the connection ends with this error.
    pub fn is_fatal(&self) -> bool {
        matches!(self.severity, Severity::Fatal)
    }

    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Fatal,
            code: Cow::Borrowed(code),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// A `NoticeResponse` rather than an error.
    pub fn notice(message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Notice,
            code: Cow::Borrowed(sqlstate::SUCCESSFUL_COMPLETION),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The same error as an `ERROR`, which ends the statement rather than
    /// the connection.
    pub fn into_error(mut self) -> Self {
        self.severity = Severity::Error;
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The code and message of an engine's `ErrorResponse`, as a FATAL error.
    pub fn fatal_from_response(message: &[u8]) -> Self {
        let mut error = Self::fatal(sqlstate::INTERNAL_ERROR, "unknown error");
        // Fields are a type byte and a string ended by a zero byte; an
        // empty one ends them.
        let fields = message
            .get(5..)
            .unwrap_or_default()
            .split(|&byte| byte == 0);
        for field in fields.take_while(|field| !field.is_empty()) {
            let value = String::from_utf8_lossy(&field[1..]).into_owned();
            match field[0] {
                b'C' => error.code = Cow::Owned(value),
                b'M' => error.message = value,
                b'D' => error.detail = Some(value),
                b'H' => error.hint = Some(value),
                _ => {}
            }
        }
        error
    }

    pub fn protocol_violation(message: impl Into<String>) -> Self {
        Self::fatal(sqlstate::PROTOCOL_VIOLATION, message)
    }

    /// Encodes the error as an `ErrorResponse` message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let severity = self.severity.as_str();
        let mut body = Vec::with_capacity(self.message.len() + 32);
        for (field, value) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', &*self.code),
            (b'M', self.message.as_str()),
        ] {
            push_field(&mut body, field, value);
        }
        if let Some(detail) = &self.detail {
            push_field(&mut body, b'D', detail);
        }
        if let Some(hint) = &self.hint {
            push_field(&mut body, b'H', hint);
        }
        body.push(0);
        let tag = if self.severity == Severity::Notice {
            b'N'
        } else {
            b'E'
        };
        super::backend::push_message(out, tag, &body);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

fn push_field(body: &mut Vec<u8>, field: u8, value: &str) {
    body.push(field);
    body.extend(value.bytes().filter(|&b| b != 0));
    body.push(0);
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.severity.as_str(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for PgError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_layout_matches_the_protocol() {
        let bytes = PgError::fatal(sqlstate::TOO_MANY_CONNECTIONS, "too many").to_bytes();
        assert_eq!(bytes[0], b'E');
        let len = i32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 1);
        let body = &bytes[5..];
        assert_eq!(body, b"SFATAL\0VFATAL\0C53300\0Mtoo many\0\0".as_slice());
    }
}
