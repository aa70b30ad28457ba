//! "Is this name, priority or prefix set used by an earlier rule?" in one hash lookup
//! per rule, so that validating n rules is linear rather than a scan of the rules
//! before each one.

use std::collections::HashMap;
use std::hash::Hash;

/// The index at which each key was first seen.
#[derive(Debug)]
pub(crate) struct FirstSeen<K>(HashMap<K, usize>);

impl<K: Hash + Eq> FirstSeen<K> {
    /// Nothing seen yet.
    pub(crate) fn new() -> Self {
        Self(HashMap::new())
    }

    /// Records `key` as seen at `index`; `Err(first)` when it was already seen at `first`.
    pub(crate) fn record(&mut self, key: K, index: usize) -> Result<(), usize> {
        match self.0.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => Err(*e.get()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(index);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FirstSeen;
    use std::cell::Cell;
    use std::hash::{Hash, Hasher};

    /// A key that counts how often it is compared.
    struct Counted<'a>(u64, &'a Cell<u64>);
    impl PartialEq for Counted<'_> {
        fn eq(&self, other: &Self) -> bool {
            self.1.set(self.1.get() + 1);
            self.0 == other.0
        }
    }
    impl Eq for Counted<'_> {}
    impl Hash for Counted<'_> {
        fn hash<H: Hasher>(&self, h: &mut H) {
            self.0.hash(h);
        }
    }

    #[test]
    fn finds_the_first_index_of_a_repeat() {
        let mut seen = FirstSeen::new();
        assert_eq!(seen.record("a", 0), Ok(()));
        assert_eq!(seen.record("b", 1), Ok(()));
        assert_eq!(seen.record("a", 2), Err(0));
        assert_eq!(seen.record("a", 3), Err(0));
    }

    /// The complexity, by counting: n distinct keys cost about n comparisons in all
    /// (only hash collisions compare), where a scan of the earlier keys costs n(n-1)/2.
    #[test]
    fn n_keys_cost_a_linear_number_of_comparisons() {
        let comparisons = Cell::new(0);
        let n: u64 = 100_000;
        let mut seen = FirstSeen::new();
        for i in 0..n {
            seen.record(Counted(i, &comparisons), i as usize).unwrap();
        }
        assert_eq!(seen.record(Counted(7, &comparisons), n as usize), Err(7));
        assert!(
            comparisons.get() <= n,
            "{} comparisons for {n} keys",
            comparisons.get()
        );
    }
}
