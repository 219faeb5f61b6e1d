//! Carrying out the commands the gateway answers itself (see
//! `session::gateway_commands`): `CREATE DATABASE` and `DROP DATABASE` on
//! the registry, `DISCARD ALL` and `DEALLOCATE ALL` on the client's own
//! state. Each answer is what PostgreSQL would send.

use std::io;
use std::sync::Arc;

use tracing::warn;

use crate::database::{Database, Registry};
use crate::engine::EngineSession;
use crate::protocol::backend::{push_message, ready_for_query};
use crate::protocol::error::{PgError, sqlstate};
use crate::session::cleanup;
use crate::session::database_commands::DatabaseCommand;
use crate::session::pinning;
use crate::session::reset::ResetCommand;
use crate::session::settings::Settings;

use super::{Client, End};

/// `answered`, then `notice` if any, `CommandComplete` with `tag` and
/// `ReadyForQuery` with `status`.
pub(super) fn answer_with_tag(
    answered: Vec<u8>,
    notice: Option<PgError>,
    tag: &str,
    status: u8,
) -> Vec<u8> {
    let mut out = answered;
    if let Some(notice) = notice {
        notice.encode(&mut out);
    }
    let mut body = tag.as_bytes().to_vec();
    body.push(0);
    push_message(&mut out, b'C', &body);
    ready_for_query(&mut out, status);
    out
}

/// Carries out `CREATE DATABASE` or `DROP DATABASE` on the registry for a
/// client connected to `current` and outside a transaction, and returns the
/// answer PostgreSQL would send; `answered` holds the answers to the
/// messages before the command. `current`'s catalog is brought up to date
/// on `held`, the session the client holds, or else on one it waits for.
pub(super) async fn run_database_command(
    registry: &Registry,
    current: &Database,
    command: DatabaseCommand,
    answered: Vec<u8>,
    held: Option<&mut EngineSession>,
) -> Vec<u8> {
    let name_of_current = current.name.as_str();
    let result = match &command {
        DatabaseCommand::Create(name) => {
            registry.create(name, name_of_current).await.map(|()| None)
        }
        DatabaseCommand::Drop { name, if_exists } => registry
            .drop_database(name, name_of_current)
            .await
            .and_then(|existed| match (existed, if_exists) {
                (true, _) => Ok(None),
                (false, true) => Ok(Some(PgError::notice(format!(
                    "database \"{name}\" does not exist, skipping"
                )))),
                (false, false) => Err(PgError::error(
                    sqlstate::INVALID_CATALOG_NAME,
                    format!("database \"{name}\" does not exist"),
                )),
            }),
    };
    if result.is_ok()
        && let Err(err) = registry.sync_catalog(current, held).await
    {
        warn!("database \"{name_of_current}\": {err}");
    }
    match result {
        Ok(notice) => answer_with_tag(answered, notice, command.tag(), b'I'),
        Err(err) => {
            let mut out = answered;
            err.encode(&mut out);
            ready_for_query(&mut out, b'I');
            out
        }
    }
}

impl Client {
    /// Carries out `DISCARD ALL` or `DEALLOCATE ALL` on the client's own
    /// state, on the session it holds, and returns the answer PostgreSQL
    /// would send after `answered`.
    pub(super) async fn reset(
        &mut self,
        command: ResetCommand,
        answered: Vec<u8>,
    ) -> Result<Vec<u8>, End> {
        let Some(mut lease) = self.lease.take() else {
            return Err(End::Fatal(self.ctx.database.lost()));
        };
        let result = match lease.session.as_mut() {
            Some(engine) => self.reset_on(engine, command).await.map_err(End::Engine),
            None => Err(End::Fatal(self.ctx.database.lost())),
        };
        let status = lease
            .session
            .as_ref()
            .map_or(b'I', |engine| engine.status());
        self.lease = Some(lease);
        result.map(|()| answer_with_tag(answered, None, command.tag(), status))
    }

    async fn reset_on(
        &mut self,
        engine: &mut EngineSession,
        command: ResetCommand,
    ) -> io::Result<()> {
        cleanup::close_statements(engine, &self.names.take_statements()).await?;
        if command == ResetCommand::DeallocateAll {
            return Ok(());
        }
        if self.pinned {
            // Its temporary tables, session locks and held cursors go too.
            engine
                .run_collecting(&cleanup::query(pinning::RELEASE))
                .await?;
            self.pinned = false;
        }
        engine
            .run_collecting(&cleanup::query(
                b"CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DISCARD PLANS; DISCARD SEQUENCES",
            ))
            .await?;
        self.settings = Arc::new(Settings::default());
        engine.settings = self.settings.clone();
        let notifier = self.ctx.database.notifier.clone();
        if notifier.clear(self.ctx.key.process_id) {
            notifier.reconcile(engine, None, &[]).await?;
        }
        Ok(())
    }
}
