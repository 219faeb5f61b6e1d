//! The databases the gateway serves, by the name clients ask for.

use std::sync::Arc;

use crate::scheduler::Scheduler;
use crate::session::listen::Notifier;

/// One database: its engine session behind a scheduler, and the parameters the
/// engine reported at startup (every client gets them after login).
pub struct Database {
    pub name: String,
    pub scheduler: Scheduler,
    pub parameters: Vec<(String, String)>,
    /// Who listens to which channel.
    pub notifier: Arc<Notifier>,
}

/// Every database the gateway serves.
#[derive(Default)]
pub struct Databases {
    databases: Vec<Arc<Database>>,
}

impl Databases {
    pub fn add(&mut self, database: Database) {
        self.databases.push(Arc::new(database));
    }

    pub fn get(&self, name: &str) -> Option<Arc<Database>> {
        self.databases.iter().find(|db| db.name == name).cloned()
    }

    pub fn all(&self) -> &[Arc<Database>] {
        &self.databases
    }
}
