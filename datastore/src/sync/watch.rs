//! Opening the datastore watch with a receive limit that fits what etcd sends.
//!
//! etcd sends a watcher that keeps up one response per revision, but one
//! revision (one transaction) can carry many large values, and a watcher
//! that starts behind (the revisions written between a list and its watch)
//! gets up to 1,000 revisions batched into one response. At the client's
//! default 4 MiB receive limit such a response kills the watch, and every
//! new watch meets the same response again. [`open_watch`] raises the limit
//! to [`MAX_RECEIVE_BYTES`]; a response larger still makes the syncer list
//! again (in pages, naming any single value that is too large) and watch
//! from the listed revision, past the oversized response.
//!
//! Several key trees (the data tree and the BGP tree) are watched on one
//! stream ([`open_watches`]), one watcher each.

use etcd_client::{Client, WatchOptions, WatchStream};

use super::{prefix_range_end, ResyncReason, SessionEnd};
use crate::connect::MAX_RECEIVE_BYTES;

/// Watches every key under `dir` (which ends with `/`) from `start_revision`,
/// accepting responses up to [`MAX_RECEIVE_BYTES`]. The stream holds both
/// sides of the watch: dropping it closes the watch.
pub async fn open_watch(
    client: &Client,
    dir: &str,
    start_revision: i64,
) -> Result<WatchStream, etcd_client::Error> {
    open_watches(client, &[(dir.to_owned(), start_revision)]).await
}

/// Watches several trees on one stream: one watcher per `(dir, start
/// revision)`, asked for in order (etcd answers their "created" responses in
/// that order). Each watcher also gets etcd's periodic progress
/// notifications, which say up to which revision a quiet tree is complete.
pub async fn open_watches(
    client: &Client,
    trees: &[(String, i64)],
) -> Result<WatchStream, etcd_client::Error> {
    let Some(((first_dir, first_start), rest)) = trees.split_first() else {
        return Err(etcd_client::Error::InvalidArgs(
            "no key tree to watch".into(),
        ));
    };
    let mut stream = client
        .watch_client()
        .max_decoding_message_size(MAX_RECEIVE_BYTES)
        .watch(
            first_dir.as_str(),
            Some(tree_options(first_dir, *first_start)),
        )
        .await?;
    for (dir, start) in rest {
        stream
            .watch(dir.as_str(), Some(tree_options(dir, *start)))
            .await?;
    }
    Ok(stream)
}

/// The watch of every key under `dir` from `start_revision`.
fn tree_options(dir: &str, start_revision: i64) -> WatchOptions {
    WatchOptions::new()
        .with_range(prefix_range_end(dir))
        .with_start_revision(start_revision)
        .with_progress_notify()
}

/// A watch response was refused for its size: list again.
pub(super) fn too_large(error: &etcd_client::Error) -> SessionEnd {
    tracing::warn!(
        limit_bytes = MAX_RECEIVE_BYTES,
        %error,
        "etcd watch response larger than the client accepts, listing again"
    );
    SessionEnd::Relist(ResyncReason::WatchTooLarge)
}
