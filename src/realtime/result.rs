//! A live query's result as a multiset of rows, and what changed between two
//! of them. A row is its `row_to_json` text: two rows are the same row when
//! every column is equal (whole-row identity, as pg_reactive has it), and a
//! row that appears twice counts twice.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Rows in the order the query returned them, with how often each occurs.
#[derive(Default)]
pub struct ResultSet {
    rows: Vec<Arc<str>>,
    counts: HashMap<Arc<str>, u32>,
}

/// What entered and what left the result.
#[derive(Debug, Default, PartialEq)]
pub struct Delta {
    pub inserted: Vec<Arc<str>>,
    pub deleted: Vec<Arc<str>>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.inserted.is_empty() && self.deleted.is_empty()
    }
}

impl ResultSet {
    pub fn new(rows: Vec<String>) -> Self {
        let rows: Vec<Arc<str>> = rows.into_iter().map(Arc::from).collect();
        let mut counts = HashMap::with_capacity(rows.len());
        for row in &rows {
            *counts.entry(row.clone()).or_insert(0) += 1;
        }
        Self { rows, counts }
    }

    pub fn rows(&self) -> &[Arc<str>] {
        &self.rows
    }

    /// What turns `self` into `next`: rows of `next` beyond their count in
    /// `self` entered (in `next`'s order), rows of `self` beyond their count
    /// in `next` left (in `self`'s order).
    pub fn delta_to(&self, next: &ResultSet) -> Delta {
        Delta {
            inserted: surplus(&next.rows, &self.counts),
            deleted: surplus(&self.rows, &next.counts),
        }
    }
}

fn surplus(rows: &[Arc<str>], other: &HashMap<Arc<str>, u32>) -> Vec<Arc<str>> {
    let mut matched: HashMap<&str, u32> = HashMap::new();
    let mut extra = Vec::new();
    for row in rows {
        let used = matched.entry(row).or_insert(0);
        if *used < other.get(row).copied().unwrap_or(0) {
            *used += 1;
        } else {
            extra.push(row.clone());
        }
    }
    extra
}

/// Whether a result changed, without keeping its rows: for mode `notify`,
/// which sends no rows. Equal multisets have equal fingerprints whatever the
/// row order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    rows: usize,
    sum: u64,
    xor: u64,
}

impl Fingerprint {
    pub fn of(rows: &[String]) -> Self {
        let mut fingerprint = Self {
            rows: rows.len(),
            sum: 0,
            xor: 0,
        };
        for row in rows {
            let mut hasher = DefaultHasher::new();
            row.hash(&mut hasher);
            let hash = hasher.finish();
            fingerprint.sum = fingerprint.sum.wrapping_add(hash);
            fingerprint.xor ^= hash.rotate_left(17).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
        fingerprint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rows: &[&str]) -> ResultSet {
        ResultSet::new(rows.iter().map(|row| row.to_string()).collect())
    }

    fn texts(rows: &[Arc<str>]) -> Vec<&str> {
        rows.iter().map(|row| &**row).collect()
    }

    #[test]
    fn an_update_is_the_old_row_leaving_and_the_new_one_entering() {
        let delta = set(&["a", "b1", "c"]).delta_to(&set(&["a", "b2", "c"]));
        assert_eq!(texts(&delta.inserted), ["b2"]);
        assert_eq!(texts(&delta.deleted), ["b1"]);
    }

    #[test]
    fn duplicates_are_counted_not_collapsed() {
        let delta = set(&["x", "x", "y"]).delta_to(&set(&["x", "y", "y", "y"]));
        assert_eq!(texts(&delta.inserted), ["y", "y"]);
        assert_eq!(texts(&delta.deleted), ["x"]);
        assert!(set(&["x", "x"]).delta_to(&set(&["x", "x"])).is_empty());
    }

    #[test]
    fn reordering_changes_nothing() {
        assert!(
            set(&["a", "b", "c"])
                .delta_to(&set(&["c", "a", "b"]))
                .is_empty()
        );
    }

    #[test]
    fn fingerprints_tell_multisets_apart_whatever_the_order() {
        let of = |rows: &[&str]| {
            Fingerprint::of(&rows.iter().map(|r| r.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(of(&["a", "b"]), of(&["b", "a"]));
        assert_ne!(of(&["a", "a"]), of(&["a"]));
        assert_ne!(of(&["a", "a", "b"]), of(&["a", "b", "b"]));
    }
}
