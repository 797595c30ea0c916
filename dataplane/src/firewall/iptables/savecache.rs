//! Skips `iptables-save` on read-back when nobody changed the rules.
//!
//! iptables-nft keeps its rules in nf_tables, whose per-namespace generation
//! moves on every committed transaction (ours, another iptables-nft's, an
//! `nft` command's). The parsed `iptables-save` output of both families is
//! kept with the generation it was read at (only when the generation did
//! not move during the read); a later read-back at the same generation
//! reuses it. ipset has no such counter, so sets are always read.
//! iptables-legacy has none either: it always runs `iptables-save`.
//!
//! The cache is shared between the writer backend and its observer (the
//! read-back thread), so either one's read serves the other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::save::FamilyDump;
use super::variant::Variant;
use crate::firewall::nft::netlink::Session;
use crate::netns::NetnsTarget;

#[derive(Default)]
struct Shared {
    last: Mutex<Option<(u64, FamilyDump, FamilyDump)>>,
    saves: AtomicU64,
}

/// The generation-keyed cache of the last `iptables-save` pair.
pub struct SaveCache {
    shared: Arc<Shared>,
    /// A netlink socket for generation queries (iptables-nft only; opened
    /// on first use).
    session: Option<Session>,
    enabled: bool,
}

impl std::fmt::Debug for SaveCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaveCache")
            .field("enabled", &self.enabled)
            .field("saves", &self.saves())
            .finish()
    }
}

impl SaveCache {
    /// A cache for `variant` (a no-op for legacy).
    pub fn new(variant: Variant) -> Self {
        SaveCache {
            shared: Arc::default(),
            session: None,
            enabled: variant == Variant::Nft,
        }
    }

    /// A handle on the same cache for another backend (own socket).
    pub fn share(&self) -> Self {
        SaveCache {
            shared: Arc::clone(&self.shared),
            session: None,
            enabled: self.enabled,
        }
    }

    /// The nf_tables generation now (`None`: legacy, or the query failed).
    pub fn generation(&mut self, netns: &NetnsTarget) -> Option<u64> {
        if !self.enabled {
            return None;
        }
        if self.session.is_none() {
            self.session = Session::open(netns).ok();
        }
        let g = self.session.as_mut()?.generation();
        match g {
            Ok(g) => Some(u64::from(g)),
            Err(e) => {
                tracing::debug!(error = %e, "nf_tables generation query failed");
                self.session = None;
                None
            }
        }
    }

    /// The dumps read at generation `generation`, if that is the last read.
    pub fn get(&self, generation: Option<u64>) -> Option<(FamilyDump, FamilyDump)> {
        let g = generation?;
        let last = self.shared.last.lock().ok()?;
        match &*last {
            Some((at, v4, v6)) if *at == g => Some((v4.clone(), v6.clone())),
            _ => None,
        }
    }

    /// Records a fresh read (counted), kept when its generation is known.
    pub fn put(&self, generation: Option<u64>, v4: &FamilyDump, v6: &FamilyDump) {
        self.shared.saves.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.shared.last.lock() {
            *last = generation.map(|g| (g, v4.clone(), v6.clone()));
        }
    }

    /// How many times `iptables-save` ran (both families count once).
    pub fn saves(&self) -> u64 {
        self.shared.saves.load(Ordering::Relaxed)
    }
}
