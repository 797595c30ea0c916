//! Listing a key range at one revision, in pages sized by count and bytes.
//!
//! etcd answers a range request in one message, and the client refuses a
//! message over its receive limit: at the default 4 MiB a page of 5,000
//! profiles of a few KB each is over. [`Lister`] pages by key count *and* by
//! bytes ([`PageSizer`]), halves a page the client refused, names the key
//! when one value alone is too large, and hands pages over one at a time so
//! a caller need not hold the whole store.

use std::time::Duration;

use etcd_client::{Client, GetOptions};

use crate::connect::{timed, MAX_RECEIVE_BYTES};
use crate::error::EtcdError;

/// The end of the key range holding every key that starts with `prefix`.
pub fn prefix_range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xff bytes: every key from prefix on.
    vec![0]
}

/// One listed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedKv {
    /// Key.
    pub key: String,
    /// Value (invalid UTF-8 replaced; such a value fails validation later).
    pub value: String,
    /// The key's modification revision.
    pub mod_revision: i64,
}

/// Bytes one list page aims at. It keeps the memory one page takes small;
/// it is far below [`MAX_RECEIVE_BYTES`], so a page of values larger than
/// the last page's still fits.
pub const PAGE_TARGET_BYTES: usize = 2 * 1024 * 1024;

/// Keys asked for in the first page, before any value size is known.
const FIRST_PAGE_KEYS: i64 = 500;

/// Sizes list pages by count and by bytes: each page asks for as many keys
/// as fit [`PAGE_TARGET_BYTES`] at the previous page's average size (at most
/// the configured count), and halves when a page came back too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSizer {
    max: i64,
    next: i64,
}

impl PageSizer {
    /// At most `max_keys` keys a page.
    pub fn new(max_keys: i64) -> Self {
        let max = max_keys.max(1);
        PageSizer {
            max,
            next: max.min(FIRST_PAGE_KEYS),
        }
    }

    /// Keys to ask for in the next page.
    pub fn limit(&self) -> i64 {
        self.next
    }

    /// A page of `keys` keys took `bytes` bytes: size the next one.
    pub fn observed(&mut self, keys: usize, bytes: usize) {
        if keys == 0 {
            return;
        }
        let per_key = (bytes / keys).max(1);
        let fitting = i64::try_from(PAGE_TARGET_BYTES / per_key).unwrap_or(i64::MAX);
        self.next = fitting.clamp(1, self.max);
    }

    /// The page was too large: halve it. False when it was one key already.
    pub fn shrink(&mut self) -> bool {
        if self.next <= 1 {
            return false;
        }
        self.next /= 2;
        true
    }
}

/// True when etcd's answer was refused for being larger than the client's
/// receive limit.
pub(crate) fn too_large(e: &EtcdError) -> bool {
    matches!(e, EtcdError::Request { error, .. } if is_out_of_range(error))
}

/// True for the client's "decoded message length too large" status.
pub(crate) fn is_out_of_range(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::OutOfRange)
}

/// Pages through every key under a directory at one revision: the
/// revision of the first page. Each page is handed over as it arrives, so a
/// caller that processes pages one at a time holds one page, not the store.
#[derive(Debug)]
pub struct Lister {
    start: Vec<u8>,
    end: Vec<u8>,
    sizer: PageSizer,
    revision: i64,
    done: bool,
    timeout: Duration,
}

impl Lister {
    /// A list of the keys under `dir` (which ends with `/`), at most
    /// `page_size` keys and about [`PAGE_TARGET_BYTES`] a page, each request
    /// bounded by `timeout`.
    pub fn new(dir: &str, page_size: i64, timeout: Duration) -> Self {
        Lister {
            start: dir.as_bytes().to_vec(),
            end: prefix_range_end(dir),
            sizer: PageSizer::new(page_size),
            revision: 0,
            done: false,
            timeout,
        }
    }

    /// Pins the list to `revision` instead of the first page's: a list of a
    /// second tree taken at the revision of the first, so both are one
    /// consistent view.
    pub fn at_revision(mut self, revision: i64) -> Self {
        self.revision = revision;
        self
    }

    /// The revision the list is taken at (0 before the first page).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The next page in key order, or `None` once the range is exhausted.
    /// Keys that are not UTF-8 are skipped (they cannot name any Calico
    /// object). A single value larger than the client accepts is an error
    /// naming its key.
    pub async fn next_page(&mut self, client: &Client) -> Result<Option<Vec<ListedKv>>, EtcdError> {
        if self.done {
            return Ok(None);
        }
        let mut resp = loop {
            match self.request(client, self.sizer.limit(), false).await {
                Ok(resp) => break resp,
                Err(e) if too_large(&e) && self.sizer.shrink() => continue,
                Err(e) if too_large(&e) => return Err(self.value_too_large(client).await),
                Err(e) => return Err(e),
            }
        };
        if self.revision == 0 {
            self.revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        }
        let more = resp.more();
        let kvs = resp.take_kvs();
        let Some(last) = kvs.last().map(|kv| kv.key().to_vec()) else {
            self.done = true;
            return Ok(None);
        };
        let bytes = kvs.iter().map(|kv| kv.key().len() + kv.value().len()).sum();
        self.sizer.observed(kvs.len(), bytes);
        self.done = !more;
        self.start = last;
        self.start.push(0);
        Ok(Some(kvs.iter().filter_map(listed_kv).collect()))
    }

    /// One page request from the current start key, at the list's revision
    /// once it is known.
    async fn request(
        &self,
        client: &Client,
        limit: i64,
        keys_only: bool,
    ) -> Result<etcd_client::GetResponse, EtcdError> {
        let mut opts = GetOptions::new()
            .with_range(self.end.clone())
            .with_limit(limit);
        if self.revision > 0 {
            opts = opts.with_revision(self.revision);
        }
        if keys_only {
            opts = opts.with_keys_only();
        }
        let mut kv = client
            .kv_client()
            .max_decoding_message_size(MAX_RECEIVE_BYTES);
        timed(self.timeout, "list", kv.get(self.start.clone(), Some(opts))).await
    }

    /// The error for a page of one key that is still too large, naming the key.
    async fn value_too_large(&self, client: &Client) -> EtcdError {
        match self.request(client, 1, true).await {
            Ok(resp) => EtcdError::ValueTooLarge {
                key: resp.kvs().first().map_or_else(
                    || String::from_utf8_lossy(&self.start).into_owned(),
                    |kv| String::from_utf8_lossy(kv.key()).into_owned(),
                ),
                limit: MAX_RECEIVE_BYTES,
            },
            Err(e) => e,
        }
    }
}

/// Lists every key under `dir` (which ends with `/`) at one revision, in
/// pages of at most `page_size` keys and about [`PAGE_TARGET_BYTES`] bytes.
/// Returns the revision and the keys in key order (see [`Lister`]; this
/// collects every page, for callers that need the whole store at once).
pub async fn list_all(
    client: &mut Client,
    dir: &str,
    page_size: i64,
    timeout: Duration,
) -> Result<(i64, Vec<ListedKv>), EtcdError> {
    let mut lister = Lister::new(dir, page_size, timeout);
    let mut out = Vec::new();
    while let Some(page) = lister.next_page(client).await? {
        out.extend(page);
    }
    Ok((lister.revision(), out))
}

/// A listed pair as we keep it; `None` (and a warning) for a non-UTF-8 key.
fn listed_kv(kv: &etcd_client::KeyValue) -> Option<ListedKv> {
    match kv.key_str() {
        Ok(key) => Some(ListedKv {
            key: key.to_owned(),
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            mod_revision: kv.mod_revision(),
        }),
        Err(_) => {
            tracing::warn!(key = ?kv.key(), "skipping a non-UTF-8 etcd key");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::DEFAULT_PAGE_SIZE;

    #[test]
    fn pages_are_sized_by_bytes_and_halve_when_too_large() {
        let mut sizer = PageSizer::new(DEFAULT_PAGE_SIZE);
        assert_eq!(sizer.limit(), FIRST_PAGE_KEYS);
        // Small keys: the count limit rules.
        sizer.observed(500, 500 * 60);
        assert_eq!(sizer.limit(), DEFAULT_PAGE_SIZE);
        // 2.5 KB values: about 2 MiB a page.
        sizer.observed(500, 500 * 2600);
        assert_eq!(sizer.limit(), (PAGE_TARGET_BYTES / 2600) as i64);
        // A 1 MB value: two a page, then one, then no smaller page exists.
        sizer.observed(1, 1_000_000);
        assert_eq!(sizer.limit(), 2);
        assert!(sizer.shrink());
        assert_eq!(sizer.limit(), 1);
        assert!(!sizer.shrink());
        assert_eq!(PageSizer::new(0).limit(), 1, "at least one key a page");
    }

    #[test]
    fn range_end_covers_exactly_the_prefix() {
        assert_eq!(prefix_range_end("/calico/v1/"), b"/calico/v10".to_vec());
        assert_eq!(prefix_range_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(prefix_range_end(""), vec![0]);
    }
}
