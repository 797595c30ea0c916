//! The key trees one syncer follows, and how far the consumer has seen each.
//!
//! A syncer follows its main tree (the data prefix, whose `/Ready` key is the
//! connection probe) and any extra trees (the BGP keys under
//! `<etcd_prefix>/bgp/v1`). All are listed at one revision and watched on one
//! watch stream, one watcher per tree. etcd sends each watcher's events in
//! revision order, but not the watchers' events in one order between them: a
//! watcher still catching up can lag one that has caught up. So the revision
//! a tree's watch may resume after is kept per tree ([`TreeRevisions`]), and
//! a watch response is tied to its tree by the watcher's id, learnt from the
//! "created" responses, which etcd sends in the order the watchers were asked
//! for ([`WatcherTrees`]).

/// The directories (each ending with `/`) a syncer lists and watches, the
/// main one first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Trees {
    dirs: Vec<String>,
}

impl Trees {
    /// The main tree `main` (e.g. `/calico/v1`) and the `extra` ones. An
    /// extra tree that overlaps an earlier one (repeats it, lies inside it or
    /// holds it) is dropped: watching keys twice would report each change
    /// twice.
    pub(super) fn new(main: &str, extra: &[String]) -> Self {
        let mut dirs: Vec<String> = vec![as_dir(main)];
        for prefix in extra {
            let dir = as_dir(prefix);
            let overlapping = dirs
                .iter()
                .find(|d| dir.starts_with(d.as_str()) || d.starts_with(dir.as_str()));
            if let Some(other) = overlapping {
                tracing::warn!(tree = %dir, overlaps = %other, "extra key tree overlaps another, ignored");
                continue;
            }
            dirs.push(dir);
        }
        Trees { dirs }
    }

    /// The directories, main first.
    pub(super) fn dirs(&self) -> &[String] {
        &self.dirs
    }

    /// The main tree's directory.
    pub(super) fn main(&self) -> &str {
        &self.dirs[0]
    }

    /// How many trees.
    pub(super) fn len(&self) -> usize {
        self.dirs.len()
    }

    /// The index of the tree holding `key`.
    pub(super) fn of_key(&self, key: &str) -> Option<usize> {
        self.dirs.iter().position(|d| key.starts_with(d.as_str()))
    }
}

/// `prefix` with exactly one trailing `/`.
fn as_dir(prefix: &str) -> String {
    format!("{}/", prefix.trim_end_matches('/'))
}

/// Per tree, the revision up to which the consumer has everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TreeRevisions(Vec<i64>);

impl TreeRevisions {
    /// `trees` trees all listed at `revision`.
    pub(super) fn listed(trees: usize, revision: i64) -> Self {
        TreeRevisions(vec![revision; trees])
    }

    /// The consumer has everything in `tree` up to `revision`.
    pub(super) fn advance(&mut self, tree: usize, revision: i64) {
        if let Some(r) = self.0.get_mut(tree) {
            *r = (*r).max(revision);
        }
    }

    /// Every tree's revision, in tree order.
    pub(super) fn all(&self) -> &[i64] {
        &self.0
    }

    /// The lowest: everything after it is replayed for some tree on resume.
    pub(super) fn oldest(&self) -> i64 {
        self.0.iter().copied().min().unwrap_or(0)
    }

    /// The highest: a store behind it is not the one we watched.
    pub(super) fn newest(&self) -> i64 {
        self.0.iter().copied().max().unwrap_or(0)
    }
}

/// Which tree each watcher of one watch stream follows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct WatcherTrees {
    /// Watcher ids in the order their "created" responses came: tree order.
    ids: Vec<i64>,
}

impl WatcherTrees {
    /// The next "created" response names the watcher of the next tree.
    pub(super) fn created(&mut self, watch_id: i64) {
        self.ids.push(watch_id);
    }

    /// The tree watcher `watch_id` follows, once it was created.
    pub(super) fn tree_of(&self, watch_id: i64) -> Option<usize> {
        self.ids.iter().position(|id| *id == watch_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_are_directories_and_nested_ones_are_dropped() {
        let trees = Trees::new(
            "/calico/v1",
            &[
                "/calico/bgp/v1/".into(),
                "/calico/v1/host".into(),
                "/calico/bgp/v1".into(),
                "/calico".into(),
            ],
        );
        assert_eq!(trees.dirs(), ["/calico/v1/", "/calico/bgp/v1/"]);
        assert_eq!(trees.main(), "/calico/v1/");
        assert_eq!(trees.of_key("/calico/bgp/v1/global/as_num"), Some(1));
        assert_eq!(trees.of_key("/calico/v1/Ready"), Some(0));
        // A sibling sharing the text but not the directory is in no tree.
        assert_eq!(trees.of_key("/calico/v10/x"), None);
        assert_eq!(trees.of_key("/calico/felix/v1/host/h/status"), None);
    }

    #[test]
    fn revisions_advance_per_tree() {
        let mut revs = TreeRevisions::listed(2, 10);
        revs.advance(1, 15);
        revs.advance(1, 12);
        revs.advance(5, 99);
        assert_eq!(revs.all(), [10, 15]);
        assert_eq!((revs.oldest(), revs.newest()), (10, 15));
    }

    #[test]
    fn watchers_map_to_trees_in_creation_order() {
        let mut watchers = WatcherTrees::default();
        assert_eq!(watchers.tree_of(0), None);
        watchers.created(7);
        watchers.created(3);
        assert_eq!(watchers.tree_of(7), Some(0));
        assert_eq!(watchers.tree_of(3), Some(1));
        assert_eq!(watchers.tree_of(0), None);
    }
}
