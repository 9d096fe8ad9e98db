//! The connections of one core (`uring`) or of the whole runtime (`tokio`).
//!
//! A slab gives every connection a stable key for O(1) removal, but it never
//! shrinks: after 10,000 clients come and go, walking it visits 10,000 slots
//! to find the few still connected. Fan-out walks the connections once per
//! message, so it walks a dense snapshot instead, rebuilt only after someone
//! connected or left. A publisher that waits mid-delivery keeps its own
//! snapshot, so it resumes exactly where it stopped.

use std::sync::Arc;

use slab::Slab;

#[derive(Debug)]
pub(crate) struct Roster<T> {
    slab: Slab<T>,
    /// Everyone in `slab`, densely, or `None` after a change.
    snapshot: Option<Arc<[T]>>,
}

impl<T: Clone> Roster<T> {
    pub(crate) fn new() -> Self {
        Self {
            slab: Slab::new(),
            snapshot: None,
        }
    }

    /// Adds a member and returns its key.
    pub(crate) fn insert(&mut self, member: T) -> usize {
        self.snapshot = None;
        self.slab.insert(member)
    }

    /// Removes the member under `key`, if it is still there.
    pub(crate) fn remove(&mut self, key: usize) -> Option<T> {
        let removed = self.slab.try_remove(key);
        if removed.is_some() {
            self.snapshot = None;
        }
        removed
    }

    /// The member under `key`, if it is still there.
    pub(crate) fn get(&self, key: usize) -> Option<&T> {
        self.slab.get(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Every member, for the rare walks (shutdown, idle sweeps).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.slab.iter().map(|(_, member)| member)
    }

    /// The current snapshot, if no one joined or left since it was built.
    pub(crate) fn cached(&self) -> Option<Arc<[T]>> {
        self.snapshot.clone()
    }

    /// Everyone here now, densely: the cached snapshot, or a new one.
    pub(crate) fn snapshot(&mut self) -> Arc<[T]> {
        let slab = &self.slab;
        Arc::clone(
            self.snapshot
                .get_or_insert_with(|| slab.iter().map(|(_, m)| m.clone()).collect()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_is_dense_and_follows_changes() {
        let mut roster = Roster::new();
        let keys: Vec<usize> = (0..10_000).map(|n| roster.insert(n)).collect();
        for &key in &keys[..9_998] {
            roster.remove(key);
        }
        assert_eq!(&*roster.snapshot(), &[9_998, 9_999]);
        let cached = roster.cached().expect("built above");
        assert!(
            Arc::ptr_eq(&cached, &roster.snapshot()),
            "reused until a change"
        );
        let key = roster.insert(7);
        assert!(roster.cached().is_none(), "a join invalidates it");
        let mut now = roster.snapshot().to_vec();
        now.sort_unstable();
        assert_eq!(now, [7, 9_998, 9_999]);
        assert_eq!(roster.remove(key), Some(7));
        assert_eq!(roster.remove(key), None, "removing twice is harmless");
        assert_eq!(roster.snapshot().len(), 2);
        // A snapshot taken before a change still holds who was there.
        assert_eq!(cached.len(), 2);
    }
}
