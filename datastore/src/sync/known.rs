//! The keys the consumer was told about, and converging it onto a new list.

use std::collections::HashMap;

use super::{KvChange, ListedKv};

/// Keeps what was reported, as key → mod revision, and turns a new full list
/// (taken page by page) into the changes that converge the consumer onto it.
#[derive(Debug, Default, Clone)]
pub struct KnownKeys {
    /// Key → (mod revision, the list generation that last saw it).
    revisions: HashMap<String, (i64, u64)>,
    generation: u64,
}

impl KnownKeys {
    /// Changes from the reported state to `listed` (in key order: puts for new
    /// or modified keys, then deletions for keys no longer listed), and
    /// remembers `listed` as the new reported state.
    pub fn converge(&mut self, listed: Vec<ListedKv>) -> Vec<KvChange> {
        self.begin_list();
        let mut changes = self.converge_page(listed);
        changes.extend(self.finish_list());
        changes
    }

    /// A new full list starts: every key is unseen until a page holds it.
    pub fn begin_list(&mut self) {
        self.generation += 1;
    }

    /// One page of the list: puts for its new or modified keys, which are
    /// remembered as reported.
    pub fn converge_page(&mut self, page: Vec<ListedKv>) -> Vec<KvChange> {
        let generation = self.generation;
        let mut changes = Vec::new();
        for kv in page {
            let changed = match self.revisions.get_mut(&kv.key) {
                Some(known) => {
                    let changed = known.0 != kv.mod_revision;
                    *known = (kv.mod_revision, generation);
                    changed
                }
                None => {
                    self.revisions
                        .insert(kv.key.clone(), (kv.mod_revision, generation));
                    true
                }
            };
            if changed {
                changes.push(KvChange {
                    key: kv.key,
                    value: Some(kv.value),
                });
            }
        }
        changes
    }

    /// The list is complete: deletions (in key order) for the keys no page
    /// held, which are forgotten.
    pub fn finish_list(&mut self) -> Vec<KvChange> {
        let generation = self.generation;
        let mut gone: Vec<String> = self
            .revisions
            .iter()
            .filter(|(_, (_, seen))| *seen != generation)
            .map(|(k, _)| k.clone())
            .collect();
        gone.sort_unstable();
        for key in &gone {
            self.revisions.remove(key);
        }
        gone.into_iter()
            .map(|key| KvChange { key, value: None })
            .collect()
    }

    /// Records a watched put.
    pub fn put(&mut self, key: &str, mod_revision: i64) {
        self.revisions
            .insert(key.to_owned(), (mod_revision, self.generation));
    }

    /// Records a watched deletion.
    pub fn delete(&mut self, key: &str) {
        self.revisions.remove(key);
    }

    /// How many keys are known.
    pub fn len(&self) -> usize {
        self.revisions.len()
    }

    /// True when no key is known.
    pub fn is_empty(&self) -> bool {
        self.revisions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(pairs: &[(&str, &str, i64)]) -> Vec<ListedKv> {
        pairs
            .iter()
            .map(|(k, v, r)| ListedKv {
                key: (*k).into(),
                value: (*v).into(),
                mod_revision: *r,
            })
            .collect()
    }

    #[test]
    fn converge_reports_only_differences() {
        let mut known = KnownKeys::default();
        let first = known.converge(listed(&[("/a", "1", 5), ("/b", "2", 6)]));
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|c| c.value.is_some()));

        // /a unchanged, /b modified, /c new, and a key we learnt by watch
        // that was deleted while we were away.
        known.put("/d", 9);
        let second = known.converge(listed(&[("/a", "1", 5), ("/b", "3", 10), ("/c", "x", 11)]));
        assert_eq!(
            second,
            vec![
                KvChange {
                    key: "/b".into(),
                    value: Some("3".into())
                },
                KvChange {
                    key: "/c".into(),
                    value: Some("x".into())
                },
                KvChange {
                    key: "/d".into(),
                    value: None
                },
            ]
        );
        assert_eq!(known.len(), 3);
        assert!(known
            .converge(listed(&[]))
            .iter()
            .all(|c| c.value.is_none()));
        assert!(known.is_empty());
    }
}
