//! Commands the gateway carries out itself rather than the shared engine:
//! `CREATE DATABASE` and `DROP DATABASE` (on the registry of databases) and
//! `DISCARD ALL` and `DEALLOCATE ALL` (on the client's own state). A client
//! sends one alone, as a simple query, or as the one command of an
//! extended-protocol group up to its `Sync` (`Parse`, `Bind`, `Describe`,
//! `Execute`, the `Parse` left out for a statement prepared before), as
//! drivers do.

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::protocol::backend::push_message;
use crate::protocol::frame::{self, Reader};

use super::database_commands::{DatabaseCommand, database_command_sql};
use super::names::Namespace;
use super::reset::{ResetCommand, reset_command_sql};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayCommand {
    Database(DatabaseCommand),
    Reset(ResetCommand),
}

/// A gateway command at the front of a client's messages.
#[derive(Debug, PartialEq, Eq)]
pub struct FrontCommand {
    pub command: GatewayCommand,
    /// How many messages it takes, its `Sync` included.
    pub messages: usize,
    /// The answers PostgreSQL gives to the messages before its `Execute`.
    pub answered: Vec<u8>,
    /// The group begins with a `Parse` of a named statement, which the
    /// client has from then on.
    pub prepares: bool,
}

/// The command the SQL of a message is, if the gateway carries it out;
/// database commands only where the gateway manages databases.
fn command_sql(sql: &[u8], databases: bool) -> Option<GatewayCommand> {
    if let Some(reset) = reset_command_sql(sql) {
        return Some(GatewayCommand::Reset(reset));
    }
    databases
        .then(|| database_command_sql(sql))
        .flatten()
        .map(GatewayCommand::Database)
}

/// The gateway command that the first message or the first extended group
/// of `pending` is, if any.
pub fn front_command(
    pending: &VecDeque<BytesMut>,
    names: &Namespace,
    databases: bool,
) -> Option<FrontCommand> {
    let first = pending.front()?;
    if first[0] == b'Q' {
        let sql = Reader::new(frame::body(first)).cstr().ok()?;
        return Some(FrontCommand {
            command: command_sql(sql, databases)?,
            messages: 1,
            answered: Vec::new(),
            prepares: false,
        });
    }
    let mut parsed: Option<(&[u8], &[u8])> = None;
    let mut command = None;
    let mut answered = Vec::new();
    let mut executed = false;
    for (index, message) in pending.iter().enumerate() {
        let mut reader = Reader::new(frame::body(message));
        match message[0] {
            b'P' if index == 0 => {
                parsed = Some((reader.cstr().ok()?, reader.cstr().ok()?));
                push_message(&mut answered, b'1', &[]);
            }
            b'B' if command.is_none() => {
                let _portal = reader.cstr().ok()?;
                let statement = reader.cstr().ok()?;
                command = match parsed {
                    Some((name, sql)) if name == statement => command_sql(sql, databases),
                    _ => names
                        .reset_of(statement)
                        .map(GatewayCommand::Reset)
                        .or_else(|| command_sql(names.statement_sql(statement)?, databases)),
                };
                command.as_ref()?;
                push_message(&mut answered, b'2', &[]);
            }
            b'D' if !executed => {
                if reader.byte().ok()? == b'S' {
                    push_message(&mut answered, b't', &0i16.to_be_bytes());
                }
                push_message(&mut answered, b'n', &[]);
            }
            b'E' if command.is_some() && !executed => executed = true,
            b'S' if executed => {
                return Some(FrontCommand {
                    command: command?,
                    messages: index + 1,
                    answered,
                    prepares: parsed.is_some_and(|(name, _)| !name.is_empty()),
                });
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> BytesMut {
        let mut out = Vec::new();
        push_message(&mut out, tag, body);
        BytesMut::from(&out[..])
    }

    fn group(sql: &str) -> VecDeque<BytesMut> {
        [
            message(b'P', format!("\0{sql}\0\0\0").as_bytes()),
            message(b'B', b"\0\0\0\0\0\0\0\0"),
            message(b'D', b"P\0"),
            message(b'E', b"\0\0\0\0\0"),
            message(b'S', b""),
        ]
        .into()
    }

    #[test]
    fn a_driver_running_one_in_the_extended_protocol_is_recognised() {
        let mut names = Namespace::new(1);
        let front = front_command(&group("CREATE DATABASE app"), &names, true).unwrap();
        assert_eq!(
            front.command,
            GatewayCommand::Database(DatabaseCommand::Create("app".into()))
        );
        assert_eq!(front.answered, b"1\0\0\0\x042\0\0\0\x04n\0\0\0\x04");
        assert_eq!(front.messages, 5);
        assert!(!front.prepares);
        assert_eq!(
            front_command(&group("CREATE DATABASE app"), &names, false),
            None
        );
        // A statement prepared earlier, bound and executed.
        names
            .plan(message(b'P', b"s0\0DROP DATABASE app\0\0\0"))
            .unwrap();
        names
            .plan(message(b'P', b"s1\0DEALLOCATE ALL\0\0\0"))
            .unwrap();
        for (statement, command) in [
            (
                "s0",
                GatewayCommand::Database(DatabaseCommand::Drop {
                    name: "app".into(),
                    if_exists: false,
                }),
            ),
            ("s1", GatewayCommand::Reset(ResetCommand::DeallocateAll)),
        ] {
            let unit: VecDeque<BytesMut> = [
                message(b'B', format!("\0{statement}\0\0\0\0\0\0\0").as_bytes()),
                message(b'E', b"\0\0\0\0\0"),
                message(b'S', b""),
                message(b'Q', b"SELECT 1\0"),
            ]
            .into();
            let front = front_command(&unit, &names, true).unwrap();
            assert_eq!(front.command, command);
            assert_eq!(front.messages, 3, "the query after it is not part of it");
        }
    }

    #[test]
    fn resets_are_recognised_alone_in_a_query_or_a_group() {
        let names = Namespace::new(1);
        let query: VecDeque<BytesMut> = [message(b'Q', b"discard all\0")].into();
        assert_eq!(
            front_command(&query, &names, false).unwrap().command,
            GatewayCommand::Reset(ResetCommand::DiscardAll)
        );
        assert_eq!(
            front_command(&group("DEALLOCATE ALL"), &names, false)
                .unwrap()
                .command,
            GatewayCommand::Reset(ResetCommand::DeallocateAll)
        );
    }

    #[test]
    fn anything_else_is_left_to_the_engine() {
        let names = Namespace::new(1);
        assert_eq!(front_command(&group("SELECT 1"), &names, true), None);
        // Two commands in one group: a pipeline.
        let mut two = group("DEALLOCATE ALL");
        two.pop_back();
        two.extend(group("SELECT 1"));
        assert_eq!(front_command(&two, &names, true), None);
        let unfinished: VecDeque<BytesMut> = group("DISCARD ALL").into_iter().take(4).collect();
        assert_eq!(front_command(&unfinished, &names, true), None);
    }
}
