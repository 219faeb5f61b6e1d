//! Whether a statement is self-contained: run alone outside a transaction
//! block, it cannot leave one open, start COPY or change the session's state.
//!
//! The test is deliberately narrow: exactly one statement whose first word can
//! never open a transaction block or start COPY, calling no function that
//! changes session state. Such statements may be pipelined behind other
//! clients' units of work (see `pipeline`).

use crate::sql::lexer::{statements, tokenize};

/// Statements that, run alone outside a transaction block, end outside one.
const SELF_CONTAINED_KEYWORDS: &[&str] = &[
    "select", "values", "table", "show", "insert", "update", "delete", "with",
];

/// Functions that change the session's state beyond the statement.
const SESSION_FUNCTIONS: &[&str] = &[
    "set_config",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all",
    "pg_export_snapshot",
];

/// True when `sql` is exactly one statement that cannot leave a transaction
/// open, start COPY or change session state.
pub fn is_self_contained(sql: &[u8]) -> bool {
    let Some(tokens) = tokenize(sql) else {
        return false;
    };
    let [statement] = statements(&tokens)[..] else {
        return false;
    };
    SELF_CONTAINED_KEYWORDS
        .iter()
        .any(|keyword| statement[0].is_word(sql, keyword))
        && !statement
            .iter()
            .any(|token| SESSION_FUNCTIONS.iter().any(|f| token.is_word(sql, f)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_reads_and_writes_are_self_contained() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 5;",
            "  select 1",
            "SELECT 'a;b', \"weird;name\" FROM t",
            "SELECT 'it''s' ;  ",
            "UPDATE t SET x = $1 WHERE id = $2",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "TABLE t",
            // Semicolons inside quotes and comments do not end the statement.
            "SELECT $$;$$",
            "SELECT 1 -- ; BEGIN",
            "SELECT 1 /* ; */",
            "SELECT E'\\'; BEGIN; '",
        ] {
            assert!(is_self_contained(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn anything_that_may_change_the_transaction_state_is_not() {
        for sql in [
            "BEGIN",
            "start transaction",
            "COMMIT",
            "SELECT 1; BEGIN",
            "SELECT 1; SELECT 2",
            "COPY t FROM STDIN",
            "SET search_path = x",
            "DO $$ BEGIN COMMIT; END $$",
            "SELECT set_config('search_path', 'x', false)",
            "SELECT pg_advisory_lock(1)",
            "SELECT 'unterminated",
            "CALL p()",
            "",
        ] {
            assert!(!is_self_contained(sql.as_bytes()), "{sql}");
        }
    }
}
