//! Profiles: their three documents (rules, tags, labels), the profile →
//! endpoints index and the tag → profiles index, and what each document
//! change touches.

use super::hashing::{FastMap, FastSet};

use super::endpoints::Refresh;
use super::slab::HandleSet;
use super::{CalcEngine, EpIdx};
use crate::desired::{Direction, RuleSetId, RuleSetOwner};
use crate::model::{Labels, ProfileRules};
use crate::names::Id;

/// One profile: its documents (each may be missing) and its users.
#[derive(Default)]
pub(super) struct Profile {
    /// `/rules`; `None` when missing or invalid (users fail closed).
    pub rules: Option<ProfileRules>,
    /// `/tags`, sorted and distinct.
    pub tags: Option<Vec<Id>>,
    /// `/labels`.
    pub labels: Option<Labels>,
    /// Endpoints (any host, either kind) listing this profile.
    pub endpoints: HandleSet<EpIdx>,
}

impl Profile {
    /// True when some document of the profile exists.
    pub fn has_documents(&self) -> bool {
        self.rules.is_some() || self.tags.is_some() || self.labels.is_some()
    }
}

/// All profiles, plus tag → profiles carrying it.
#[derive(Default)]
pub(super) struct Profiles {
    pub map: FastMap<Id, Profile>,
    pub tag_profiles: FastMap<Id, FastSet<Id>>,
}

impl CalcEngine {
    /// Endpoint `e` stopped listing `old` profiles and now lists `new` ones.
    pub(super) fn index_profiles(&mut self, e: EpIdx, old: &[Id], new: &[Id]) {
        for p in old.iter().filter(|p| !new.contains(p)) {
            if let Some(prof) = self.profiles.map.get_mut(p) {
                prof.endpoints.remove(&e);
            }
            self.gc_profile(p);
        }
        for p in new.iter().filter(|p| !old.contains(p)) {
            self.profiles
                .map
                .entry(p.clone())
                .or_default()
                .endpoints
                .insert(e);
        }
    }

    fn gc_profile(&mut self, p: &Id) {
        if self
            .profiles
            .map
            .get(p)
            .is_some_and(|prof| !prof.has_documents() && prof.endpoints.is_empty())
        {
            self.profiles.map.remove(p);
        }
    }

    /// Plumbed endpoints whose profile list names `p`.
    fn plumbed_users(&self, p: &Id) -> Vec<EpIdx> {
        self.plumbed()
            .into_iter()
            .filter(|&e| self.eps.slab[e].profile_ids().contains(p))
            .collect()
    }

    /// `/policy/profile/<p>/rules` was written, deleted or became invalid.
    pub(super) fn set_profile_rules(&mut self, p: Id, rules: Option<ProfileRules>) {
        let prof = self.profiles.map.entry(p.clone()).or_default();
        if prof.rules == rules {
            self.gc_profile(&p);
            return;
        }
        let presence_changed = prof.rules.is_some() != rules.is_some();
        prof.rules = rules;
        if presence_changed {
            // Users switch between failing closed and listing this profile.
            for e in self.plumbed_users(&p) {
                self.rebuild_program(e);
            }
            for e in self.local_host_users(&p) {
                self.sync_host_entry(e, false);
            }
        } else {
            for direction in [Direction::Inbound, Direction::Outbound] {
                self.refresh_rule_set(&RuleSetId {
                    owner: RuleSetOwner::Profile(p.clone()),
                    direction,
                });
            }
        }
        self.gc_profile(&p);
    }

    /// `/policy/profile/<p>/tags` was written or deleted.
    pub(super) fn set_profile_tags(&mut self, p: Id, tags: Option<Vec<Id>>) {
        let tags = tags.map(|mut t| {
            t.sort();
            t.dedup();
            t
        });
        let prof = self.profiles.map.entry(p.clone()).or_default();
        if prof.tags == tags {
            self.gc_profile(&p);
            return;
        }
        let old = std::mem::replace(&mut prof.tags, tags).unwrap_or_default();
        let new = prof.tags.clone().unwrap_or_default();
        let mut active_touched = false;
        for t in old.iter().filter(|t| !new.contains(t)) {
            if let Some(ps) = self.profiles.tag_profiles.get_mut(t) {
                ps.remove(&p);
                if ps.is_empty() {
                    self.profiles.tag_profiles.remove(t);
                }
            }
            active_touched |= self.sets.by_tag.contains_key(t);
        }
        for t in new.iter().filter(|t| !old.contains(t)) {
            self.profiles
                .tag_profiles
                .entry(t.clone())
                .or_default()
                .insert(p.clone());
            active_touched |= self.sets.by_tag.contains_key(t);
        }
        if active_touched {
            let users: Vec<EpIdx> = self.profiles.map[&p].endpoints.iter().copied().collect();
            for e in users {
                self.sync_membership(e);
            }
        }
        self.gc_profile(&p);
    }

    /// `/policy/profile/<p>/labels` was written or deleted: every user's
    /// effective labels may change.
    pub(super) fn set_profile_labels(&mut self, p: Id, labels: Option<Labels>) {
        let prof = self.profiles.map.entry(p.clone()).or_default();
        if prof.labels == labels {
            self.gc_profile(&p);
            return;
        }
        prof.labels = labels;
        let users: Vec<EpIdx> = prof.endpoints.iter().copied().collect();
        self.classes.forget_memo();
        for e in users {
            self.refresh_endpoint(e, Refresh::Labels);
        }
        self.gc_profile(&p);
    }
}
