//! The console's commands, as PgBouncer's console takes them: one command
//! per query, keywords in any case, an optional trailing `;`, database
//! names as written or in double quotes.

use crate::protocol::error::{PgError, sqlstate};

/// What `SHOW` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Clients,
    Servers,
    Pools,
    Databases,
    Stats,
    StatsTotals,
    Config,
    Version,
    Lists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// An empty query.
    Empty,
    Show(Show),
    /// `SHOW HELP`
    Help,
    /// `PAUSE [db]`: new units of work wait; returns once running ones end.
    Pause(Option<String>),
    /// `RESUME [db]`
    Resume(Option<String>),
    /// `KILL db`: disconnects the database's clients and keeps it paused.
    Kill(String),
    /// `KILL_CLIENT id`
    KillClient(i32),
    Reload,
    Shutdown,
}

/// Reads one console command.
pub fn parse(query: &str) -> Result<Command, PgError> {
    let words = words(query).ok_or_else(|| invalid(query))?;
    let upper: Vec<String> = words.iter().map(|word| word.to_ascii_uppercase()).collect();
    let keywords: Vec<&str> = upper.iter().map(String::as_str).collect();
    let command = match keywords.as_slice() {
        [] => Command::Empty,
        ["SHOW", "HELP"] => Command::Help,
        ["SHOW", what] => Command::Show(match *what {
            "CLIENTS" => Show::Clients,
            "SERVERS" => Show::Servers,
            "POOLS" => Show::Pools,
            "DATABASES" => Show::Databases,
            "STATS" => Show::Stats,
            "STATS_TOTALS" => Show::StatsTotals,
            "CONFIG" => Show::Config,
            "VERSION" => Show::Version,
            "LISTS" => Show::Lists,
            _ => return Err(invalid(query)),
        }),
        ["PAUSE"] => Command::Pause(None),
        ["PAUSE", _] => Command::Pause(Some(words[1].clone())),
        ["RESUME"] => Command::Resume(None),
        ["RESUME", _] => Command::Resume(Some(words[1].clone())),
        ["KILL"] => {
            return Err(PgError::error(
                sqlstate::SYNTAX_ERROR,
                "KILL needs a database: KILL db",
            ));
        }
        ["KILL", _] => Command::Kill(words[1].clone()),
        ["KILL_CLIENT", id] => Command::KillClient(id.parse().map_err(|_| {
            PgError::error(
                sqlstate::INVALID_TEXT_REPRESENTATION,
                format!("invalid client id \"{}\"", words[1]),
            )
            .with_hint("give the id that SHOW CLIENTS shows")
        })?),
        ["RELOAD"] => Command::Reload,
        ["SHUTDOWN"] => Command::Shutdown,
        _ => return Err(invalid(query)),
    };
    Ok(command)
}

fn invalid(query: &str) -> PgError {
    PgError::error(
        sqlstate::SYNTAX_ERROR,
        format!("invalid command '{}', use SHOW HELP;", query.trim()),
    )
}

/// The words of `query`, without a trailing `;`; a word in double quotes
/// keeps its spaces, and `""` in it stands for one `"`. `None` for an
/// unterminated quote or text after the `;`.
fn words(query: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = query.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None => return Some(words),
            Some(';') => {
                chars.next();
                return chars.all(char::is_whitespace).then_some(words);
            }
            Some('"') => {
                chars.next();
                let mut word = String::new();
                loop {
                    match chars.next()? {
                        '"' if chars.next_if_eq(&'"').is_some() => word.push('"'),
                        '"' => break,
                        c => word.push(c),
                    }
                }
                words.push(word);
            }
            Some(_) => {
                let mut word = String::new();
                while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != ';') {
                    word.push(c);
                }
                words.push(word);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_in_any_case_with_an_optional_semicolon() {
        assert_eq!(parse("show clients"), Ok(Command::Show(Show::Clients)));
        assert_eq!(
            parse("  SHOW Stats_Totals ; "),
            Ok(Command::Show(Show::StatsTotals))
        );
        assert_eq!(parse("PAUSE"), Ok(Command::Pause(None)));
        assert_eq!(parse("pause App;"), Ok(Command::Pause(Some("App".into()))));
        assert_eq!(
            parse("RESUME \"my \"\"db\"\"\""),
            Ok(Command::Resume(Some("my \"db\"".into())))
        );
        assert_eq!(parse("kill_client 1004"), Ok(Command::KillClient(1004)));
        assert_eq!(parse("KILL app"), Ok(Command::Kill("app".into())));
        assert_eq!(parse("reload;"), Ok(Command::Reload));
        assert_eq!(parse("Shutdown"), Ok(Command::Shutdown));
        assert_eq!(parse(""), Ok(Command::Empty));
        assert_eq!(parse(" ; "), Ok(Command::Empty));
    }

    #[test]
    fn anything_else_is_a_syntax_error() {
        for query in [
            "SELECT 1",
            "SHOW",
            "SHOW everything",
            "SHOW CLIENTS; SHOW POOLS",
            "PAUSE a b",
            "RESUME \"open",
            "KILL",
        ] {
            assert_eq!(
                parse(query).unwrap_err().code,
                sqlstate::SYNTAX_ERROR,
                "{query}"
            );
        }
        assert_eq!(
            parse("KILL_CLIENT x").unwrap_err().code,
            sqlstate::INVALID_TEXT_REPRESENTATION
        );
    }
}
