//! Making each embedded engine's `pg_database` list the gateway's databases.
//!
//! Every database is an engine of its own, whose catalog knows only itself
//! (and `postgres` and the templates). So that `SELECT datname FROM
//! pg_database` (and psql's `\l`, IDEs' database trees, `pg_dumpall`) shows
//! every database the gateway serves, the others get rows of their own in
//! each engine's `pg_database`, copied from the engine's own row. They carry
//! OIDs from 4000000000 up, which the engine never assigns, and are only
//! rows: nothing inside an engine connects to them.

use std::io;

use crate::engine::EngineSession;
use crate::session::cleanup::query;

/// The first OID of the rows the gateway adds.
const FIRST_OID: u64 = 4_000_000_000;

/// Makes the engine's `pg_database` hold exactly `names` beside its own
/// databases.
pub async fn sync_database_rows(engine: &mut EngineSession, names: &[String]) -> io::Result<()> {
    let list = names
        .iter()
        .map(|name| format!("'{}'", name.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!(
        "SET allow_system_table_mods = on; \
         DELETE FROM pg_catalog.pg_database WHERE oid::int8 >= {FIRST_OID} \
           AND datname <> ALL (ARRAY[{list}]::name[]); \
         WITH missing AS ( \
           SELECT name, row_number() OVER () AS i FROM unnest(ARRAY[{list}]::name[]) AS name \
           WHERE name NOT IN (SELECT datname FROM pg_catalog.pg_database)) \
         INSERT INTO pg_catalog.pg_database \
         SELECT (json_populate_record(d, json_build_object( \
           'oid', (SELECT coalesce(max(oid::int8), {last}) FROM pg_catalog.pg_database \
                   WHERE oid::int8 >= {FIRST_OID}) + m.i, \
           'datname', m.name, 'datistemplate', false, 'datallowconn', true))).* \
         FROM pg_catalog.pg_database d, missing m WHERE d.datname = current_database(); \
         RESET allow_system_table_mods",
        last = FIRST_OID - 1,
    );
    let reply = engine.run_collecting(&query(sql.as_bytes())).await?;
    match reply.error {
        Some(error) => Err(io::Error::other(format!(
            "could not list the databases in the engine's catalog: {}",
            crate::engine::error_message(&error)
        ))),
        None => Ok(()),
    }
}
