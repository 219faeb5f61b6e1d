//! What running a statement may change in its client's session beyond the
//! statement itself: its settings, the channels it listens to, and state that
//! reserves the engine for it (temporary tables, session locks, held
//! cursors). Worked out once from the SQL, when a query arrives or a
//! statement is prepared, and noted each time the statement runs: a driver
//! such as asyncpg prepares in one unit of work and binds in the next.

use super::{listen, pinning, settings};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionEffects {
    /// See `settings::may_change_settings`.
    pub settings: bool,
    /// See `listen::may_change_listens`.
    pub listens: bool,
    /// Channels its LISTEN statements name.
    pub listened: Vec<String>,
    /// Channels its UNLISTEN statements name (`None`: all).
    pub unlistened: Vec<Option<String>>,
    /// See `pinning::may_create_session_state`.
    pub state: bool,
}

impl SessionEffects {
    pub fn of_sql(sql: &[u8]) -> Self {
        let listens = listen::may_change_listens(sql);
        Self {
            settings: settings::may_change_settings(sql),
            listens,
            listened: if listens {
                listen::listened_channels(sql)
            } else {
                Vec::new()
            },
            unlistened: if listens {
                listen::unlistened_channels(sql)
            } else {
                Vec::new()
            },
            state: pinning::may_create_session_state(sql),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_change_is_seen_and_plain_statements_change_nothing() {
        assert_eq!(
            SessionEffects::of_sql(b"SELECT 1"),
            SessionEffects::default()
        );
        assert!(SessionEffects::of_sql(b"SET search_path = x").settings);
        assert!(SessionEffects::of_sql(b"CREATE TEMP TABLE t(x int)").state);
        let listen = SessionEffects::of_sql(b"LISTEN \"Ev\"; UNLISTEN *");
        assert!(listen.listens);
        assert_eq!(listen.listened, ["Ev"]);
        assert_eq!(listen.unlistened, [None]);
    }
}
