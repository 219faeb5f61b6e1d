//! Server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it
//! inside AuthenticationSASL / SASLInitialResponse / SASLResponse messages, so
//! the gateway can authenticate clients the way a PostgreSQL server does
//! without ever seeing their password on the wire.
//!
//! PostgreSQL's dialect of SCRAM: the user name in the client-first-message
//! is ignored (clients send it empty; the startup message's user name is the
//! one that counts), no authorization identity (`a=`) is allowed, and no
//! channel binding is offered, so the gs2 header must be `n,,` or `y,,`.
//!
//! Everything here is sans-IO: the caller moves the message payloads between
//! the socket and a [`ScramExchange`].

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The only SASL mechanism offered.
pub const MECHANISM: &str = "SCRAM-SHA-256";

const SECRET_PREFIX: &str = "SCRAM-SHA-256$";
const DEFAULT_ITERATIONS: u32 = 4096;
const DEFAULT_SALT_LEN: usize = 16;
const RAW_NONCE_LEN: usize = 18;

/// What the server stores for a SCRAM-SHA-256 password: enough to check a
/// client's proof and to sign the server's answer, but not the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl ScramSecret {
    /// Derives the secret for `password`.
    ///
    /// PostgreSQL runs the password through SASLprep first. SASLprep leaves
    /// ASCII passwords unchanged, and that identity mapping is all this does,
    /// so a non-ASCII password that SASLprep would rewrite (non-NFKC forms,
    /// non-ASCII spaces, soft hyphens, ...) yields a different secret than
    /// PostgreSQL would derive for it.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let mut salted_password = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted_password);
        let client_key = hmac_sha256(&salted_password, b"Client Key");
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac_sha256(&salted_password, b"Server Key"),
        }
    }

    /// Derives the secret for `password` with a fresh 16-byte random salt and
    /// 4096 iterations, PostgreSQL's defaults.
    pub fn new_random(password: &str) -> Self {
        let mut salt = [0u8; DEFAULT_SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        Self::from_password(password, &salt, DEFAULT_ITERATIONS)
    }

    /// Parses PostgreSQL's stored form,
    /// `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`.
    pub fn parse(text: &str) -> Option<Self> {
        let (params, keys) = text.strip_prefix(SECRET_PREFIX)?.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        Some(Self {
            iterations: iterations.parse().ok().filter(|&n| n > 0)?,
            salt: STANDARD.decode(salt).ok()?,
            stored_key: decode_key(stored_key)?,
            server_key: decode_key(server_key)?,
        })
    }
}

/// Writes PostgreSQL's stored form, the one [`ScramSecret::parse`] reads.
impl fmt::Display for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SECRET_PREFIX}{}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

/// Leaves the keys out: they are password equivalents for this server.
impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt", &STANDARD.encode(&self.salt))
            .finish_non_exhaustive()
    }
}

/// Why a SCRAM exchange failed. Callers report [`ScramError::WrongPassword`]
/// as SQLSTATE 28P01 (invalid_password) and every other variant as 08P01
/// (protocol_violation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramError {
    /// The client picked a SASL mechanism other than `SCRAM-SHA-256`.
    UnsupportedMechanism,
    /// The client asked for channel binding (`p=...`), which is not offered.
    ChannelBindingNotSupported,
    /// A message did not follow the protocol; the text says how.
    Malformed(&'static str),
    /// The client's proof does not match the stored secret.
    WrongPassword,
}

impl fmt::Display for ScramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedMechanism => write!(f, "unsupported SASL mechanism"),
            Self::ChannelBindingNotSupported => {
                write!(f, "SCRAM channel binding is not supported")
            }
            Self::Malformed(what) => write!(f, "malformed SCRAM message: {what}"),
            Self::WrongPassword => write!(f, "password authentication failed"),
        }
    }
}

impl std::error::Error for ScramError {}

/// The server's side of one SCRAM-SHA-256 login: feed it the client's
/// SASLInitialResponse with [`client_first`](Self::client_first), send back
/// the returned server-first-message in AuthenticationSASLContinue, feed it
/// the client's SASLResponse with [`client_final`](Self::client_final), and
/// send the returned server-final-message in AuthenticationSASLFinal.
///
/// Any error ends the exchange; later calls fail as out of order.
pub struct ScramExchange {
    secret: ScramSecret,
    server_nonce: String,
    state: State,
}

enum State {
    AwaitingClientFirst,
    AwaitingClientFinal(FirstRound),
    Finished,
}

/// What the first round fixed and the second round must check or sign.
struct FirstRound {
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ScramExchange {
    /// Starts an exchange against `secret` with an 18-byte random server
    /// nonce, base64-encoded, as PostgreSQL does.
    pub fn new(secret: ScramSecret) -> Self {
        let mut raw_nonce = [0u8; RAW_NONCE_LEN];
        OsRng.fill_bytes(&mut raw_nonce);
        Self::with_server_nonce(secret, STANDARD.encode(raw_nonce))
    }

    fn with_server_nonce(secret: ScramSecret, server_nonce: String) -> Self {
        Self {
            secret,
            server_nonce,
            state: State::AwaitingClientFirst,
        }
    }

    /// Handles the SASLInitialResponse: `mechanism` is its mechanism name and
    /// `data` its client-first-message. Returns the server-first-message.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::AwaitingClientFirst = std::mem::replace(&mut self.state, State::Finished) else {
            return Err(out_of_order());
        };
        if mechanism != MECHANISM {
            return Err(ScramError::UnsupportedMechanism);
        }
        let first = ClientFirst::parse(utf8(data)?)?;
        let nonce = format!("{}{}", first.nonce, self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&self.secret.salt),
            self.secret.iterations
        );
        let reply = server_first.clone().into_bytes();
        self.state = State::AwaitingClientFinal(FirstRound {
            gs2_header: first.gs2_header.to_owned(),
            client_first_bare: first.bare.to_owned(),
            server_first,
            nonce,
        });
        Ok(reply)
    }

    /// Handles the SASLResponse carrying the client-final-message. Returns
    /// the server-final-message once the client has proven its password.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::AwaitingClientFinal(round) = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(out_of_order());
        };
        let last = ClientFinal::parse(utf8(data)?)?;
        if last.channel_binding != round.gs2_header.as_bytes() {
            return Err(ScramError::Malformed(
                "channel binding does not match the gs2 header",
            ));
        }
        if last.nonce != round.nonce {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let auth_message = format!(
            "{},{},{}",
            round.client_first_bare, round.server_first, last.without_proof
        );
        if !proof_is_valid(&self.secret, auth_message.as_bytes(), &last.proof) {
            return Err(ScramError::WrongPassword);
        }
        let server_signature = hmac_sha256(&self.secret.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

/// The parts of a client-first-message the server uses.
struct ClientFirst<'a> {
    /// `n,,` or `y,,`, echoed back in the final message's `c=`.
    gs2_header: &'a str,
    /// client-first-message-bare, part of the AuthMessage.
    bare: &'a str,
    nonce: &'a str,
}

impl<'a> ClientFirst<'a> {
    fn parse(text: &'a str) -> Result<Self, ScramError> {
        let (cbind_flag, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("missing gs2 header"))?;
        match cbind_flag {
            // "y": the client could bind but believes the server cannot,
            // which is true while no channel binding is offered.
            "n" | "y" => {}
            flag if flag.starts_with("p=") => return Err(ScramError::ChannelBindingNotSupported),
            _ => return Err(ScramError::Malformed("invalid channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("missing gs2 header"))?;
        if !authzid.is_empty() {
            return Err(ScramError::Malformed(
                "authorization identity is not supported",
            ));
        }
        let mut attributes = bare.split(',');
        match attributes.next().map(split_attribute).transpose()? {
            Some((b'n', _ignored_user)) => {}
            Some((b'm', _)) => {
                return Err(ScramError::Malformed(
                    "mandatory extension is not supported",
                ));
            }
            _ => return Err(ScramError::Malformed("missing user name")),
        }
        let nonce = expect_attribute(attributes.next(), b'r', "missing nonce")?;
        if nonce.is_empty() || !nonce.bytes().all(is_nonce_char) {
            return Err(ScramError::Malformed("invalid nonce"));
        }
        check_extensions(attributes)?;
        Ok(Self {
            gs2_header: &text[..text.len() - bare.len()],
            bare,
            nonce,
        })
    }
}

/// The parts of a client-final-message the server uses.
struct ClientFinal<'a> {
    /// Decoded `c=`.
    channel_binding: Vec<u8>,
    nonce: &'a str,
    /// client-final-message-without-proof, part of the AuthMessage.
    without_proof: &'a str,
    proof: [u8; 32],
}

impl<'a> ClientFinal<'a> {
    fn parse(text: &'a str) -> Result<Self, ScramError> {
        let (without_proof, proof) = text
            .rsplit_once(',')
            .ok_or(ScramError::Malformed("missing proof"))?;
        let proof = expect_attribute(Some(proof), b'p', "missing proof")?;
        let mut attributes = without_proof.split(',');
        let channel_binding = expect_attribute(attributes.next(), b'c', "missing channel binding")?;
        let nonce = expect_attribute(attributes.next(), b'r', "missing nonce")?;
        check_extensions(attributes)?;
        Ok(Self {
            channel_binding: STANDARD
                .decode(channel_binding)
                .map_err(|_| ScramError::Malformed("invalid channel binding"))?,
            nonce,
            without_proof,
            proof: STANDARD
                .decode(proof)
                .ok()
                .and_then(|proof| proof.try_into().ok())
                .ok_or(ScramError::Malformed("invalid proof"))?,
        })
    }
}

/// Splits `x=value` into its one-letter name and its value.
fn split_attribute(part: &str) -> Result<(u8, &str), ScramError> {
    match part.as_bytes() {
        [name, b'=', ..] if name.is_ascii_alphabetic() => Ok((*name, &part[2..])),
        _ => Err(ScramError::Malformed("invalid attribute")),
    }
}

/// The value of `part` if it is the attribute `name`; `missing` otherwise.
fn expect_attribute<'a>(
    part: Option<&'a str>,
    name: u8,
    missing: &'static str,
) -> Result<&'a str, ScramError> {
    match part.map(split_attribute).transpose()? {
        Some((found, value)) if found == name => Ok(value),
        _ => Err(ScramError::Malformed(missing)),
    }
}

/// Optional extension attributes are skipped, but must be well-formed.
fn check_extensions<'a>(mut attributes: impl Iterator<Item = &'a str>) -> Result<(), ScramError> {
    attributes.try_for_each(|part| split_attribute(part).map(drop))
}

/// RFC 5802 `printable`: visible ASCII except the comma.
fn is_nonce_char(byte: u8) -> bool {
    matches!(byte, 0x21..=0x2b | 0x2d..=0x7e)
}

/// Recovers ClientKey from the proof and checks it against StoredKey.
fn proof_is_valid(secret: &ScramSecret, auth_message: &[u8], proof: &[u8; 32]) -> bool {
    let client_signature = hmac_sha256(&secret.stored_key, auth_message);
    let client_key: [u8; 32] = std::array::from_fn(|i| proof[i] ^ client_signature[i]);
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    stored_key.ct_eq(&secret.stored_key).into()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn decode_key(text: &str) -> Option<[u8; 32]> {
    STANDARD.decode(text).ok()?.try_into().ok()
}

fn utf8(data: &[u8]) -> Result<&str, ScramError> {
    std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not valid UTF-8"))
}

fn out_of_order() -> ScramError {
    ScramError::Malformed("message out of order")
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    // RFC 7677, section 3.
    const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    /// Password "correct horse", salt b"pgshare-salt-16b", 4096 iterations,
    /// derived with python3's hashlib.pbkdf2_hmac, hmac and hashlib.sha256.
    const PYTHON_SECRET: &str = "SCRAM-SHA-256$4096:cGdzaGFyZS1zYWx0LTE2Yg==$imnmUhGjMRSxbhBeUSQlAZ+tvtCTL1GZ/0pma6NMPNU=:wknpHNyB/6B2i79pR869BDxIYjd0dc2nx//+oER941U=";

    fn rfc_exchange() -> ScramExchange {
        let salt = STANDARD.decode(RFC_SALT).expect("RFC salt is base64");
        let secret = ScramSecret::from_password("pencil", &salt, 4096);
        ScramExchange::with_server_nonce(secret, RFC_SERVER_NONCE.to_owned())
    }

    /// An exchange that has answered a client-first-message with client
    /// nonce "abc", so its combined nonce is "abcSERVER".
    fn exchange_after_first(password: &str) -> ScramExchange {
        let secret = ScramSecret::from_password(password, b"salt", 4096);
        let mut exchange = ScramExchange::with_server_nonce(secret, "SERVER".to_owned());
        exchange
            .client_first(MECHANISM, b"n,,n=,r=abc")
            .expect("valid client-first-message");
        exchange
    }

    /// Runs a full login with the tokio-postgres client's SCRAM code.
    fn client_login(
        secret: ScramSecret,
        client_password: &str,
        binding: ChannelBinding,
    ) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(client_password.as_bytes(), binding);
        let mut exchange = ScramExchange::new(secret);
        let server_first = exchange.client_first(MECHANISM, client.message())?;
        client
            .update(&server_first)
            .expect("client accepts server-first");
        let server_final = exchange.client_final(client.message())?;
        client
            .finish(&server_final)
            .expect("client verifies server");
        Ok(())
    }

    #[test]
    fn rfc7677_test_vector() {
        let mut exchange = rfc_exchange();
        let server_first = exchange
            .client_first(MECHANISM, RFC_CLIENT_FIRST.as_bytes())
            .expect("RFC client-first is valid");
        assert_eq!(server_first, RFC_SERVER_FIRST.as_bytes());
        let server_final = exchange
            .client_final(RFC_CLIENT_FINAL.as_bytes())
            .expect("RFC proof verifies");
        assert_eq!(server_final, RFC_SERVER_FINAL.as_bytes());
    }

    #[test]
    fn real_client_logs_in() {
        let secret = ScramSecret::new_random("hunter2");
        assert_eq!(
            client_login(secret.clone(), "hunter2", ChannelBinding::unsupported()),
            Ok(())
        );
        assert_eq!(
            client_login(secret, "hunter2", ChannelBinding::unrequested()),
            Ok(())
        );
    }

    #[test]
    fn real_client_with_wrong_password_is_rejected() {
        let secret = ScramSecret::from_password("hunter2", b"0123456789abcdef", 4096);
        assert_eq!(
            client_login(secret, "hunter3", ChannelBinding::unsupported()),
            Err(ScramError::WrongPassword)
        );
    }

    #[test]
    fn secret_parses_independently_derived_literal() {
        let parsed = ScramSecret::parse(PYTHON_SECRET).expect("valid secret");
        assert_eq!(
            parsed,
            ScramSecret::from_password("correct horse", b"pgshare-salt-16b", 4096)
        );
        assert_eq!(parsed.to_string(), PYTHON_SECRET);
    }

    #[test]
    fn secret_round_trips_through_display() {
        let secret = ScramSecret::new_random("pw");
        assert_eq!(secret.iterations, 4096);
        assert_eq!(secret.salt.len(), 16);
        assert_eq!(ScramSecret::parse(&secret.to_string()), Some(secret));
    }

    #[test]
    fn secret_debug_hides_keys() {
        let secret = ScramSecret::parse(PYTHON_SECRET).expect("valid secret");
        let debug = format!("{secret:?}");
        assert!(!debug.contains(&STANDARD.encode(secret.stored_key)));
        assert!(!debug.contains(&STANDARD.encode(secret.server_key)));
    }

    #[test]
    fn secret_rejects_malformed_text() {
        let (prefix_and_params, keys) = PYTHON_SECRET.rsplit_once('$').expect("has keys");
        let short_key = STANDARD.encode([0u8; 31]);
        for text in [
            "",
            "md5c4ca4238a0b923820dcc509a6f75849b",
            &PYTHON_SECRET.replace("SCRAM-SHA-256", "SCRAM-SHA-1"),
            &PYTHON_SECRET.replace("4096", "0"),
            &PYTHON_SECRET.replace("4096", "-1"),
            &PYTHON_SECRET.replace("4096", "x"),
            &PYTHON_SECRET.replace("4096:", "4096"),
            &PYTHON_SECRET.replace("Yg==", "Yg=!"),
            &PYTHON_SECRET.replace(":wknp", "wknp"),
            &PYTHON_SECRET.replace("imnm", "!mnm"),
            &format!("{prefix_and_params}${short_key}:{short_key}"),
            prefix_and_params,
            &format!("{PYTHON_SECRET}$"),
            keys,
        ] {
            assert_eq!(ScramSecret::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn rejects_other_mechanisms() {
        for mechanism in ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1", "PLAIN", ""] {
            let mut exchange = rfc_exchange();
            assert_eq!(
                exchange.client_first(mechanism, RFC_CLIENT_FIRST.as_bytes()),
                Err(ScramError::UnsupportedMechanism)
            );
        }
    }

    #[test]
    fn rejects_channel_binding_requests() {
        let mut exchange = rfc_exchange();
        assert_eq!(
            exchange.client_first(MECHANISM, b"p=tls-server-end-point,,n=,r=abc"),
            Err(ScramError::ChannelBindingNotSupported)
        );
    }

    #[test]
    fn rejects_malformed_client_first() {
        for data in [
            &b""[..],
            b"n",
            b"n,",
            b"n,,",
            b"x,,n=,r=abc",
            b"n,a=admin,n=,r=abc",
            b"n,,r=abc",
            b"n,,m=ext,n=,r=abc",
            b"n,,n=",
            b"n,,n=,r=",
            b"n,,n=,x=abc",
            b"n,,n=,r=a b",
            b"n,,n=,r=abc,",
            b"n,,n=,r=abc,=x",
            b"n,,n=,r=\xff",
            b"n,,=,r=abc",
        ] {
            let mut exchange = rfc_exchange();
            assert!(
                matches!(
                    exchange.client_first(MECHANISM, data),
                    Err(ScramError::Malformed(_))
                ),
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn accepts_user_name_and_extensions_in_client_first() {
        let mut exchange = rfc_exchange();
        let reply = exchange
            .client_first(MECHANISM, b"y,,n=someone,r=abc,x=extension")
            .expect("valid client-first-message");
        assert!(reply.starts_with(format!("r=abc{RFC_SERVER_NONCE},").as_bytes()));
    }

    #[test]
    fn rejects_malformed_client_final() {
        let proof = STANDARD.encode([0u8; 32]);
        let short_proof = STANDARD.encode([0u8; 31]);
        for data in [
            String::new(),
            "c=biws,r=abcSERVER".to_owned(),
            format!("c=biws,r=abcSERVER,p={short_proof}"),
            "c=biws,r=abcSERVER,p=not base64!".to_owned(),
            format!("c=bi!s,r=abcSERVER,p={proof}"),
            format!("c=eSws,r=abcSERVER,p={proof}"),
            format!("c=biws,r=abcOTHER,p={proof}"),
            format!("c=biws,r=abc,p={proof}"),
            format!("r=abcSERVER,c=biws,p={proof}"),
            format!("c=biws,p={proof}"),
            format!("c=biws,r=abcSERVER,p={proof},x=trailing"),
            format!("c=biws,r=abcSERVER,,p={proof}"),
        ] {
            let mut exchange = exchange_after_first("pw");
            assert!(
                matches!(
                    exchange.client_final(data.as_bytes()),
                    Err(ScramError::Malformed(_))
                ),
                "{data:?}"
            );
        }
    }

    #[test]
    fn wrong_proof_is_wrong_password() {
        let proof = STANDARD.encode([0u8; 32]);
        let mut exchange = exchange_after_first("pw");
        assert_eq!(
            exchange.client_final(format!("c=biws,r=abcSERVER,p={proof}").as_bytes()),
            Err(ScramError::WrongPassword)
        );
    }

    #[test]
    fn calls_out_of_order_fail() {
        let mut exchange = rfc_exchange();
        assert_eq!(
            exchange.client_final(RFC_CLIENT_FINAL.as_bytes()),
            Err(out_of_order())
        );
        // The failed call ended the exchange.
        assert_eq!(
            exchange.client_first(MECHANISM, RFC_CLIENT_FIRST.as_bytes()),
            Err(out_of_order())
        );

        let mut exchange = rfc_exchange();
        exchange
            .client_first(MECHANISM, RFC_CLIENT_FIRST.as_bytes())
            .expect("valid client-first-message");
        assert_eq!(
            exchange.client_first(MECHANISM, RFC_CLIENT_FIRST.as_bytes()),
            Err(out_of_order())
        );

        let mut exchange = rfc_exchange();
        exchange
            .client_first(MECHANISM, RFC_CLIENT_FIRST.as_bytes())
            .expect("valid client-first-message");
        exchange
            .client_final(RFC_CLIENT_FINAL.as_bytes())
            .expect("RFC proof verifies");
        assert_eq!(
            exchange.client_final(RFC_CLIENT_FINAL.as_bytes()),
            Err(out_of_order())
        );
    }

    #[test]
    fn truncated_messages_never_panic() {
        for end in 0..RFC_CLIENT_FIRST.len() {
            let _ = rfc_exchange().client_first(MECHANISM, &RFC_CLIENT_FIRST.as_bytes()[..end]);
        }
        for end in 0..RFC_CLIENT_FINAL.len() {
            let mut exchange = rfc_exchange();
            exchange
                .client_first(MECHANISM, RFC_CLIENT_FIRST.as_bytes())
                .expect("valid client-first-message");
            assert!(
                exchange
                    .client_final(&RFC_CLIENT_FINAL.as_bytes()[..end])
                    .is_err()
            );
        }
    }
}
