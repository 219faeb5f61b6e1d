//! Each client's own session settings on the one shared engine session.
//!
//! A client's settings are the parameters its session has changed from the
//! defaults: its startup parameters (`application_name`, `options=-c ...`,
//! `TimeZone`, ...) and what it set with `SET`, `RESET`, `set_config(..., false)`
//! or `DISCARD ALL`. The gateway reads them back from the engine after a unit
//! of work that may have changed them, and before a client's unit runs it makes
//! the engine session carry them, changing only the parameters that differ
//! from what the engine has. A client that changed nothing, following one that
//! changed nothing, costs nothing at the switch.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use crate::engine::EngineSession;
use crate::protocol::error::PgError;
use crate::sql::lexer::{Kind, mentions_any, statements, tokenize};

use super::cleanup::query;

/// Parameter name to value, in the syntax `set_config` accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings(BTreeMap<String, String>);

/// Reads the parameters the session has changed, with values that set them
/// back exactly when given to `set_config`.
const CAPTURE: &[u8] =
    b"SELECT name, current_setting(name) FROM pg_catalog.pg_settings WHERE source = 'session'";

/// Startup parameters that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "replication", "options"];

impl Settings {
    /// The settings a client asks for in its startup packet, including each
    /// `-c name=value` (or `--name=value`) in `options`.
    pub fn from_startup(params: &[(String, String)]) -> Self {
        let mut settings = BTreeMap::new();
        for (name, value) in params {
            if name == "options" {
                for (name, value) in parse_options(value) {
                    settings.insert(name.to_ascii_lowercase(), value);
                }
            } else if !NOT_SETTINGS.contains(&name.as_str()) {
                settings.insert(name.to_ascii_lowercase(), value.clone());
            }
        }
        Self(settings)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A query that turns an engine session carrying `from` into one carrying
    /// `self`; `None` when they are the same.
    pub fn switch_from(&self, from: &Settings) -> Option<Vec<u8>> {
        if std::ptr::eq(self, from) || self == from {
            return None;
        }
        let mut sql = String::new();
        for name in from.0.keys().filter(|name| !self.0.contains_key(*name)) {
            if is_plain_name(name) {
                sql.push_str(&format!("RESET {name};"));
            }
        }
        let changed: Vec<String> = self
            .0
            .iter()
            .filter(|(name, value)| from.0.get(*name) != Some(value))
            .map(|(name, value)| {
                format!(
                    "pg_catalog.set_config({}, {}, false)",
                    literal(name),
                    literal(value)
                )
            })
            .collect();
        if !changed.is_empty() {
            sql.push_str("SELECT ");
            sql.push_str(&changed.join(", "));
        }
        Some(query(sql.as_bytes()))
    }
}

/// Makes the engine session carry `settings`. An error (a value the engine
/// does not accept) leaves the engine at its defaults and is returned.
pub async fn switch(
    engine: &mut EngineSession,
    settings: &Arc<Settings>,
) -> io::Result<Result<(), PgError>> {
    let Some(sql) = settings.switch_from(&engine.settings) else {
        return Ok(Ok(()));
    };
    let reply = engine.run_collecting(&sql).await?;
    match reply.error {
        None => {
            engine.settings = settings.clone();
            Ok(Ok(()))
        }
        Some(error) => {
            engine.run_collecting(&query(b"RESET ALL")).await?;
            engine.settings = Arc::new(Settings::default());
            Ok(Err(PgError::fatal_from_response(&error)))
        }
    }
}

/// Reads back the settings the engine session carries now (at the end of a
/// client's unit of work) and records them as the engine's.
pub async fn capture(engine: &mut EngineSession) -> io::Result<Arc<Settings>> {
    let reply = engine.run_collecting(&query(CAPTURE)).await?;
    let mut settings = BTreeMap::new();
    for row in reply.text_rows() {
        if let [Some(name), Some(value)] = &row[..] {
            // Parameter names are case-insensitive; pg_settings spells some
            // with capitals (TimeZone, DateStyle).
            settings.insert(name.to_ascii_lowercase(), value.clone());
        }
    }
    let settings = Arc::new(Settings(settings));
    engine.settings = settings.clone();
    Ok(settings)
}

/// True when running `sql` may change session settings: a statement starting
/// with `SET` (not `SET LOCAL`, which ends with the transaction), `RESET` or
/// `DISCARD`, or a call to `set_config`. Settings changed inside functions are
/// not seen.
pub fn may_change_settings(sql: &[u8]) -> bool {
    // `reset` and `set_config` contain `set`.
    if !mentions_any(sql, &["set", "discard"]) {
        return false;
    }
    let Some(tokens) = tokenize(sql) else {
        return false;
    };
    statements(&tokens).iter().any(|statement| {
        let first = statement[0];
        let local = statement.get(1).is_some_and(|t| t.is_word(sql, "local"));
        (first.is_word(sql, "set") && !local)
            || first.is_word(sql, "reset")
            || first.is_word(sql, "discard")
            || statement
                .iter()
                .any(|t| t.kind == Kind::Word && t.is_word(sql, "set_config"))
    })
}

/// The `-c name=value` and `--name=value` switches of an `options` parameter;
/// `\` escapes a space in a value.
fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut pairs = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let assignment = if word == "-c" {
            words.next()
        } else if let Some(rest) = word.strip_prefix("--") {
            Some(rest.to_string())
        } else {
            word.strip_prefix("-c").map(str::to_string)
        };
        if let Some((name, value)) = assignment.as_deref().and_then(|a| a.split_once('=')) {
            pairs.push((name.replace('-', "_"), value.to_string()));
        }
    }
    pairs
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

/// A string constant that reads the same whatever `standard_conforming_strings` is.
fn literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn sql_of(message: Vec<u8>) -> String {
        String::from_utf8(message[5..message.len() - 1].to_vec()).unwrap()
    }

    #[test]
    fn startup_parameters_and_options_become_settings() {
        let params: Vec<(String, String)> = [
            ("user", "alice"),
            ("database", "app"),
            ("application_name", "psql"),
            (
                "options",
                "-c search_path=a,b --statement-timeout=5s -cwork_mem=8MB -c x=with\\ space",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let settings = Settings::from_startup(&params);
        assert_eq!(
            settings,
            settings_of(&[
                ("application_name", "psql"),
                ("search_path", "a,b"),
                ("statement_timeout", "5s"),
                ("work_mem", "8MB"),
                ("x", "with space"),
            ])
        );
    }

    fn settings_of(pairs: &[(&str, &str)]) -> Settings {
        settings(pairs)
    }

    #[test]
    fn switching_changes_only_what_differs() {
        let from = settings(&[
            ("timezone", "UTC"),
            ("search_path", "a"),
            ("work_mem", "1MB"),
        ]);
        let to = settings(&[
            ("timezone", "UTC"),
            ("search_path", "b, c"),
            ("application_name", "it's"),
        ]);
        assert_eq!(
            sql_of(to.switch_from(&from).unwrap()),
            "RESET work_mem;SELECT pg_catalog.set_config(E'application_name', E'it''s', false), \
             pg_catalog.set_config(E'search_path', E'b, c', false)"
        );
        assert!(to.switch_from(&to.clone()).is_none());
        assert_eq!(
            sql_of(Settings::default().switch_from(&from).unwrap()),
            "RESET search_path;RESET timezone;RESET work_mem;"
        );
    }

    #[test]
    fn literals_survive_backslashes_and_quotes() {
        assert_eq!(literal(r"a\'b"), r"E'a\\''b'");
    }

    #[test]
    fn statements_that_may_change_settings_are_recognised() {
        for sql in [
            "SET search_path = x",
            "set session timezone = 'UTC'",
            "RESET ALL",
            "SELECT 1; SET x.y = 1",
            "SELECT set_config('a.b', '1', false)",
            "DISCARD ALL",
        ] {
            assert!(may_change_settings(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SET LOCAL search_path = x",
            "SELECT 'SET x = 1'",
            "UPDATE t SET x = 1",
            "SELECT 1 -- SET x",
        ] {
            assert!(!may_change_settings(sql.as_bytes()), "{sql}");
        }
    }
}
