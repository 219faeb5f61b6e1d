//! The prepared statements that exist on one engine session, and which of
//! them to close when there are too many.
//!
//! Statements prepared through the protocol are shared by all clients that
//! prepare the same text (see `names`), so a session holds one copy per
//! distinct query rather than one per client. A session still accumulates
//! statements over its life (a pooled server session serves every client in
//! turn), so the least recently used ones beyond a limit are closed, as
//! PgBouncer's `max_prepared_statements` does; a client that needs one again
//! gets it prepared again, unnoticed.

use std::collections::HashMap;

/// How many statements a session keeps unless configured otherwise.
pub const DEFAULT_LIMIT: usize = 200;

#[derive(Debug)]
pub struct SessionStatements {
    /// Engine name → when it was last used (a counter, not a clock).
    last_use: HashMap<Vec<u8>, u64>,
    uses: u64,
    /// Statements beyond this many are closed, least recently used first.
    pub limit: usize,
}

impl Default for SessionStatements {
    fn default() -> Self {
        Self {
            last_use: HashMap::new(),
            uses: 0,
            limit: DEFAULT_LIMIT,
        }
    }
}

impl SessionStatements {
    pub fn with_limit(limit: usize) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.last_use.contains_key(name)
    }

    /// Records that `name` exists and is used now.
    pub fn touch(&mut self, name: &[u8]) {
        self.uses += 1;
        match self.last_use.get_mut(name) {
            Some(last) => *last = self.uses,
            None => {
                self.last_use.insert(name.to_vec(), self.uses);
            }
        }
    }

    pub fn remove(&mut self, name: &[u8]) {
        self.last_use.remove(name);
    }

    /// Forgets every statement (the session's were all deallocated).
    pub fn clear(&mut self) {
        self.last_use.clear();
    }

    pub fn len(&self) -> usize {
        self.last_use.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last_use.is_empty()
    }

    /// Forgets the least recently used statements beyond the limit and
    /// returns their names, for the caller to close on the engine.
    pub fn evict(&mut self) -> Vec<Vec<u8>> {
        let excess = self.last_use.len().saturating_sub(self.limit.max(1));
        if excess == 0 {
            return Vec::new();
        }
        let mut by_age: Vec<(u64, Vec<u8>)> = self
            .last_use
            .iter()
            .map(|(name, &last)| (last, name.clone()))
            .collect();
        by_age.sort_unstable();
        by_age.truncate(excess);
        by_age
            .into_iter()
            .map(|(_, name)| {
                self.last_use.remove(&name);
                name
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_beyond_the_limit_are_evicted() {
        let mut statements = SessionStatements::with_limit(2);
        statements.touch(b"a");
        statements.touch(b"b");
        statements.touch(b"c");
        statements.touch(b"a");
        assert_eq!(statements.evict(), vec![b"b".to_vec()]);
        assert!(statements.contains(b"a") && statements.contains(b"c"));
        assert!(!statements.contains(b"b"));
        assert!(statements.evict().is_empty());
    }
}
