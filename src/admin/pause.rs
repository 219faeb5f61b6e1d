//! `PAUSE [db]` and `RESUME [db]`: new units of work of a database (or of
//! all) wait instead of starting, still cancellable and still bound by
//! `query_wait_timeout`; `PAUSE` returns once the units already let through
//! have ended, and `RESUME` lets the waiting ones go.

use tracing::info;

use crate::cancel::CancelTarget;
use crate::gateway::Gateway;
use crate::protocol::error::{PgError, sqlstate};

use super::overview::{self, DatabaseView};
use super::result_set::command_complete;

pub async fn pause(
    gateway: &Gateway,
    cancel: &CancelTarget,
    database: Option<&str>,
    out: &mut Vec<u8>,
) -> Result<(), PgError> {
    let databases = match database {
        None => gateway.activity.pause_all(),
        Some(name) => {
            let database = known(gateway, name)?.activity;
            database.pause();
            vec![database]
        }
    };
    let what = database.map_or("every database".to_string(), |name| {
        format!("database \"{name}\"")
    });
    info!("PAUSE: new units of work of {what} wait; waiting for those running to end");
    let drained = async {
        for database in &databases {
            database.drained().await;
        }
    };
    match cancel.cancellable(drained).await {
        Some(()) => {
            info!("PAUSE: {what} is paused; nothing of it runs until RESUME");
            command_complete(out, "PAUSE");
            Ok(())
        }
        None => Err(PgError::error(
            sqlstate::QUERY_CANCELED,
            "canceling PAUSE due to user request",
        )
        .with_hint(format!(
            "{what} stays paused: new units of work wait until RESUME"
        ))),
    }
}

pub fn resume(gateway: &Gateway, database: Option<&str>, out: &mut Vec<u8>) -> Result<(), PgError> {
    let resumed = match database {
        None => gateway.activity.resume_all(),
        Some(name) => known(gateway, name)?.activity.resume(),
    };
    if !resumed {
        let what = database.map_or("pgshare".to_string(), |name| format!("database \"{name}\""));
        return Err(PgError::error(
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("{what} is not paused"),
        ));
    }
    info!(
        "RESUME: {} runs again",
        database.map_or("every database".to_string(), |name| format!(
            "database \"{name}\""
        ))
    );
    command_complete(out, "RESUME");
    Ok(())
}

/// The database named `name`, which a command may pause.
pub(super) fn known(gateway: &Gateway, name: &str) -> Result<DatabaseView, PgError> {
    if name == super::DATABASE {
        return Err(PgError::error(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "the admin console cannot be paused or killed",
        ));
    }
    overview::find(gateway, name).ok_or_else(|| {
        PgError::error(
            sqlstate::INVALID_CATALOG_NAME,
            format!("no such database: {name}"),
        )
        .with_hint("SHOW DATABASES lists them")
    })
}
