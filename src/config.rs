//! The gateway's settings, validated once at startup.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::engine::embedded::Storage;
use crate::engine::upstream::Upstream;
use crate::frontend::scram::ScramSecret;
use crate::frontend::tls::ClientTls;

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMethod {
    /// Anyone who can reach the port may log in as any known role.
    Trust,
    /// MD5 challenge-response against a configured password.
    Md5,
    /// SCRAM-SHA-256 against a configured password (PostgreSQL's default).
    #[value(name = "scram-sha-256")]
    ScramSha256,
}

/// A role's password as the gateway keeps it.
#[derive(Debug, Clone)]
pub enum Secret {
    Plain(String),
    Scram(ScramSecret),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub unix_dir: Option<PathBuf>,
    pub storage: Storage,
    /// Serve a real PostgreSQL server instead of the embedded engine.
    pub upstream: Option<Upstream>,
    /// Server sessions opened to the upstream server at most.
    pub pool_size: usize,
    /// A pooled server session is closed after this long, once idle.
    pub server_lifetime: Option<Duration>,
    /// A pooled server session idle for this long is closed.
    pub server_idle_timeout: Option<Duration>,
    /// Prepared statements kept on each engine session.
    pub max_prepared_statements: usize,
    pub relaxed_durability: bool,
    /// Create a database a client asks for when it does not exist.
    pub auto_create: bool,
    /// An embedded database without clients for this long is closed.
    pub engine_idle_timeout: Option<Duration>,
    /// Embedded databases open at once at most.
    pub max_open_engines: usize,
    /// TLS for clients: off, offered, or required on TCP.
    pub client_tls: ClientTls,
    /// The certificate and key for client TLS; generated when not given.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A TLS client that asked for `<name>.<sni_domain>` is served database
    /// `<name>`.
    pub sni_domain: Option<String>,
    pub auth: AuthMethod,
    /// Roles clients may log in as, with their passwords when they have one.
    pub users: HashMap<String, Option<Secret>>,
    pub max_client_conn: usize,
    pub max_message_len: usize,
    pub idle_in_transaction_timeout: Option<Duration>,
    pub query_wait_timeout: Option<Duration>,
    pub client_login_timeout: Option<Duration>,
}

impl Config {
    /// Checks that every role can authenticate with the chosen method.
    pub fn validate(&self) -> Result<()> {
        if self.listen.is_empty() && self.unix_dir.is_none() {
            bail!("nothing to listen on: give --listen or --unix-dir");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!(
                "give both --tls-cert and --tls-key, or neither (a certificate is then generated)"
            );
        }
        if self.sni_domain.is_some() && self.client_tls == ClientTls::Off {
            bail!("--sni-domain routes TLS clients, but --ssl is off");
        }
        if self.auth != AuthMethod::Trust {
            for (user, secret) in &self.users {
                match (secret, self.auth) {
                    (None, _) => bail!(
                        "role \"{user}\" has no password, but --auth is {:?}; set --password or add it to the users file",
                        self.auth
                    ),
                    (Some(Secret::Scram(_)), AuthMethod::Md5) => bail!(
                        "role \"{user}\" has a SCRAM secret, which cannot answer md5 authentication; give its plain password or use --auth scram-sha-256"
                    ),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// Reads a users file: one role per line as `"name" "password"` (PgBouncer's
/// `userlist.txt` form), the password plain or a `SCRAM-SHA-256$...` secret.
/// Blank lines and lines starting with `#` or `;` are ignored.
pub fn read_users_file(path: &std::path::Path) -> Result<HashMap<String, Secret>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read users file {}", path.display()))?;
    parse_users(&text).with_context(|| format!("in users file {}", path.display()))
}

fn parse_users(text: &str) -> Result<HashMap<String, Secret>> {
    let mut users = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields = quoted_fields(line)
            .with_context(|| format!("line {}: expected \"name\" \"password\"", number + 1))?;
        let [name, password] = fields.as_slice() else {
            bail!("line {}: expected \"name\" \"password\"", number + 1);
        };
        let secret = if password.starts_with("SCRAM-SHA-256$") {
            Secret::Scram(
                ScramSecret::parse(password)
                    .with_context(|| format!("line {}: malformed SCRAM secret", number + 1))?,
            )
        } else {
            Secret::Plain(password.clone())
        };
        users.insert(name.clone(), secret);
    }
    Ok(users)
}

/// Splits `"a" "b"` into its fields; `""` inside a field stands for one `"`.
fn quoted_fields(line: &str) -> Result<Vec<String>> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.next() {
            None => return Ok(fields),
            Some('"') => {}
            Some(_) => bail!("fields must be in double quotes"),
        }
        let mut field = String::new();
        loop {
            match chars.next() {
                None => bail!("unterminated quote"),
                Some('"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                Some('"') => break,
                Some(c) => field.push(c),
            }
        }
        fields.push(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_accepts_plain_passwords_comments_and_quotes() {
        let users =
            parse_users("# roles\n\"alice\" \"s3cret\"\n\n\"bob\" \"say \"\"hi\"\"\"\n").unwrap();
        assert!(matches!(users.get("alice"), Some(Secret::Plain(p)) if p == "s3cret"));
        assert!(matches!(users.get("bob"), Some(Secret::Plain(p)) if p == "say \"hi\""));
    }

    #[test]
    fn users_file_rejects_bad_lines() {
        assert!(parse_users("alice s3cret\n").is_err());
        assert!(parse_users("\"alice\"\n").is_err());
        assert!(parse_users("\"alice\" \"open\n").is_err());
    }
}
