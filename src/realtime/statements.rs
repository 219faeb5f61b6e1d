//! Running the hub's own statements on a leased engine session: each with
//! the extended protocol (so a stored query is one statement, whatever its
//! text), parameters as text, answers as text. Notifications in the output
//! (those of `pgr._publish`, on an engine whose one session sends them all)
//! go to the clients that listen, as after any client's unit of work.

use std::io;

use crate::engine::{EngineSession, error_message, text_columns};
use crate::protocol::backend::push_message;
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

/// A statement's rows, each row's columns as text, or the engine's error.
pub type Answer = Result<Vec<Vec<Option<String>>>, String>;

/// Runs each statement in a transaction of its own: one failing leaves the
/// others alone. All are written at once.
pub async fn run_each(
    engine: &mut EngineSession,
    notifier: &Notifier,
    statements: &[Statement],
) -> io::Result<Vec<Answer>> {
    let mut out = Vec::new();
    for statement in statements {
        push_statement(&mut out, statement);
        push_message(&mut out, b'S', &[]);
    }
    engine.send(&out).await?;
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
    let mut out = Vec::new();
    for statement in statements {
        push_statement(&mut out, statement);
    }
    push_message(&mut out, b'S', &[]);
    engine.send(&out).await?;
    read_group(engine, notifier, statements.len()).await
}

fn push_statement(out: &mut Vec<u8>, statement: &Statement) {
    let mut parse = vec![0];
    parse.extend_from_slice(statement.sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    push_message(out, b'P', &parse);
    let mut bind = vec![0, 0, 0, 0];
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
                answers.push(Err(error.clone()));
                failed = Some(error);
            }
            b'A' => {
                notifier.route(message, None);
            }
            b'Z' => {
                while answers.len() < count {
                    answers.push(Err(failed.clone().map_or_else(
                        || "the engine did not answer".to_string(),
                        |error| format!("not run: an earlier statement failed ({error})"),
                    )));
                }
                if failed.is_some() {
                    // None of the transaction took effect.
                    for answer in answers.iter_mut() {
                        if answer.is_ok() {
                            *answer = Err("rolled back: another statement failed".to_string());
                        }
                    }
                }
                return Ok(answers);
            }
            _ => {}
        }
    }
}
