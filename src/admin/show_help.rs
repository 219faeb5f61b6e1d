//! `SHOW HELP` and `SHOW VERSION`.

use crate::protocol::error::PgError;

use super::result_set::{ResultSet, Type, command_complete};

/// The commands, as `SHOW HELP` lists them.
const USAGE: &str = "\
SHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|VERSION
SHOW STATS|STATS_TOTALS|LISTS
PAUSE [<db>]
RESUME [<db>]
KILL <db>
KILL_CLIENT <id>
RELOAD
SHUTDOWN";

/// As PgBouncer: a notice with the usage, then `SHOW`.
pub fn help(out: &mut Vec<u8>) {
    PgError::notice("Console usage")
        .with_detail(USAGE)
        .encode(out);
    command_complete(out, "SHOW");
}

pub fn version() -> ResultSet {
    let mut set = ResultSet::new(&[("version", Type::Text)]);
    set.push(vec![
        format!("pgshare {}", env!("CARGO_PKG_VERSION")).into(),
    ]);
    set
}
