//! Just enough SQL understanding for the gateway's decisions: splitting a
//! query string into statements and reading their leading words, with
//! PostgreSQL's quoting and comment rules so that text inside strings,
//! quoted identifiers, dollar quotes and comments is never mistaken for SQL.

pub mod lexer;
