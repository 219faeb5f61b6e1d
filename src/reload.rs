//! Reloading the configuration, on SIGHUP and the admin console's `RELOAD`
//! alike: the file is read again with the flags and variables pgshare
//! started with, and what may change for new connections changes.

use tracing::{info, warn};

use crate::gateway::Gateway;

/// Why a reload changed nothing.
#[derive(Debug)]
pub enum ReloadError {
    /// pgshare was started without `--config`.
    NoFile,
    /// The file could not be read or applied; the running configuration
    /// stays.
    Failed(anyhow::Error),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::NoFile => write!(
                f,
                "there is no configuration file to reload (start pgshare with --config FILE)"
            ),
            ReloadError::Failed(err) => write!(f, "{err:#}"),
        }
    }
}

/// Reloads the configuration for new connections, logging what happened
/// as `trigger` (`SIGHUP`, `RELOAD`) caused it. Returns the settings that
/// changed but need a restart, which keep their old values.
pub fn reload(gateway: &Gateway, trigger: &str) -> Result<Vec<&'static str>, ReloadError> {
    let Some(source) = gateway.config_source() else {
        info!("{trigger}: {}", ReloadError::NoFile);
        return Err(ReloadError::NoFile);
    };
    let path = source.path.display();
    match (source.load)().and_then(|config| gateway.reload(config)) {
        Ok(needs_restart) => {
            info!(
                "{trigger}: reloaded {path}: roles, passwords, authentication, timeouts and TLS apply to new connections"
            );
            for setting in &needs_restart {
                warn!(
                    "{setting} changed in {path}, but only a restart of pgshare applies it; the old value stays"
                );
            }
            Ok(needs_restart)
        }
        Err(err) => {
            warn!("{trigger}: could not reload {path}: {err:#}; the running configuration stays");
            Err(ReloadError::Failed(err))
        }
    }
}
