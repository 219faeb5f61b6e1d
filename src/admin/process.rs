//! `RELOAD` and `SHUTDOWN`: the same as SIGHUP and SIGTERM.

use tracing::info;

use crate::gateway::Gateway;
use crate::protocol::error::{PgError, sqlstate};
use crate::reload::{self, ReloadError};

use super::result_set::command_complete;

pub fn reload(gateway: &Gateway, out: &mut Vec<u8>) -> Result<(), PgError> {
    match reload::reload(gateway, "RELOAD") {
        Ok(needs_restart) => {
            for setting in needs_restart {
                PgError::notice(format!(
                    "{setting} changed, but only a restart of pgshare applies it; the old value stays"
                ))
                .encode(out);
            }
            command_complete(out, "RELOAD");
            Ok(())
        }
        Err(err @ ReloadError::NoFile) => Err(PgError::error(
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            err.to_string(),
        )),
        Err(err @ ReloadError::Failed(_)) => Err(PgError::error(
            sqlstate::CONFIG_FILE_ERROR,
            format!("could not reload the configuration: {err}"),
        )
        .with_hint("the running configuration stays")),
    }
}

pub fn shutdown(gateway: &Gateway, out: &mut Vec<u8>) -> Result<(), PgError> {
    info!("SHUTDOWN: shutting down as at SIGTERM");
    gateway.request_shutdown();
    command_complete(out, "SHUTDOWN");
    Ok(())
}
