//! Running the hub's own statements on a leased engine session: each with
//! the extended protocol (so a stored query is one statement, whatever its
//! text), parameters as text, answers as text. They use a statement name of
//! their own, closed at once, never the unnamed statement, which a client
//! may have prepared in one unit of work to bind in its next (asyncpg
//! does). Notifications in the output
//! (those of `pgr._publish`, on an engine whose one session sends them all)
//! go to the clients that listen, as after any client's unit of work.

use std::io;

use crate::engine::{EngineSession, error_message, text_columns};
use crate::protocol::backend::push_message;
use crate::protocol::frame::{self, Reader};
use crate::session::listen::Notifier;

/// One statement and its parameters (`None` for NULL).
pub struct Statement {
    pub sql: String,
    pub params: Vec<Option<String>>,
}

impl Statement {
    pub fn new(sql: impl Into<String>, params: Vec<Option<String>>) -> Self {
        Self {
            sql: sql.into(),
            params,
        }
    }
}

/// A statement's rows, each row's columns as text, or why it failed.
pub type Answer = Result<Vec<Vec<Option<String>>>, Failure>;

/// The engine's error (or why the statement did not run).
#[derive(Debug, Clone)]
pub struct Failure {
    /// The SQLSTATE; empty when the statement was skipped.
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Failure {
    fn skipped(message: String) -> Self {
        Self {
            code: String::new(),
            message,
        }
    }
}

/// Runs each statement in a transaction of its own: one failing leaves the
/// others alone. All are written at once.
pub async fn run_each(
    engine: &mut EngineSession,
    notifier: &Notifier,
    statements: &[Statement],
) -> io::Result<Vec<Answer>> {
    send(engine, statements, true).await?;
    let mut answers = Vec::with_capacity(statements.len());
    for _ in statements {
        answers.push(read_group(engine, notifier, 1).await?.remove(0));
    }
    Ok(answers)
}

/// Runs the statements in one transaction: all take effect, or (when one
/// fails) none; the answers say which failed.
pub async fn run_together(
    engine: &mut EngineSession,
    notifier: &Notifier,
    statements: &[Statement],
) -> io::Result<Vec<Answer>> {
    send(engine, statements, false).await?;
    read_group(engine, notifier, statements.len()).await
}

/// Writes the statements at once, each followed by a `Sync` (`each`), or
/// with one `Sync` after them all.
async fn send(engine: &mut EngineSession, statements: &[Statement], each: bool) -> io::Result<()> {
    let mut out = Vec::new();
    for statement in statements {
        push_statement(&mut out, statement);
        if each {
            push_message(&mut out, b'S', &[]);
        }
    }
    if !each {
        push_message(&mut out, b'S', &[]);
    }
    engine.send(&out).await
}

/// The name of the hub's statement while it runs.
const NAME: &[u8] = b"pgshare_live_query\0";

fn push_statement(out: &mut Vec<u8>, statement: &Statement) {
    // One left by a statement that failed before its Close goes first.
    let mut close = vec![b'S'];
    close.extend_from_slice(NAME);
    push_message(out, b'C', &close);
    let mut parse = NAME.to_vec();
    parse.extend_from_slice(statement.sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    push_message(out, b'P', &parse);
    let mut bind = vec![0];
    bind.extend_from_slice(NAME);
    bind.extend_from_slice(&[0, 0]);
    bind.extend_from_slice(&(statement.params.len() as i16).to_be_bytes());
    for param in &statement.params {
        match param {
            Some(value) => {
                bind.extend_from_slice(&(value.len() as i32).to_be_bytes());
                bind.extend_from_slice(value.as_bytes());
            }
            None => bind.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    bind.extend_from_slice(&[0, 0]);
    push_message(out, b'B', &bind);
    push_message(out, b'E', &[0, 0, 0, 0, 0]);
    let mut close = vec![b'S'];
    close.extend_from_slice(NAME);
    push_message(out, b'C', &close);
}

/// Reads the answers of `count` statements up to their `ReadyForQuery`.
/// After an error, the rest of the group is skipped: they fail too.
async fn read_group(
    engine: &mut EngineSession,
    notifier: &Notifier,
    count: usize,
) -> io::Result<Vec<Answer>> {
    let mut answers: Vec<Answer> = Vec::with_capacity(count);
    let mut rows = Vec::new();
    let mut failed: Option<String> = None;
    loop {
        let message = engine.input.recv().await?;
        match message[0] {
            b'D' => rows.push(text_columns(&message)),
            b'C' | b'I' => answers.push(Ok(std::mem::take(&mut rows))),
            b'E' => {
                let error = error_message(&message);
                answers.push(Err(Failure {
                    code: error_code(&message),
                    message: error.clone(),
                }));
                failed = Some(error);
            }
            b'A' => {
                notifier.route(message, None);
            }
            b'Z' => {
                while answers.len() < count {
                    answers.push(Err(Failure::skipped(failed.clone().map_or_else(
                        || "the engine did not answer".to_string(),
                        |error| format!("not run: an earlier statement failed ({error})"),
                    ))));
                }
                if failed.is_some() {
                    // None of the transaction took effect.
                    for answer in answers.iter_mut() {
                        if answer.is_ok() {
                            *answer = Err(Failure::skipped(
                                "rolled back: another statement failed".to_string(),
                            ));
                        }
                    }
                }
                return Ok(answers);
            }
            _ => {}
        }
    }
}

/// The SQLSTATE of an `ErrorResponse`.
fn error_code(message: &[u8]) -> String {
    let mut reader = Reader::new(frame::body(message));
    while let Ok(field) = reader.byte() {
        if field == 0 {
            break;
        }
        let Ok(value) = reader.cstr() else { break };
        if field == b'C' {
            return String::from_utf8_lossy(value).into_owned();
        }
    }
    String::new()
}
