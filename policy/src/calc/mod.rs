//! The incremental calculation engine.
//!
//! [`CalcEngine`] is fed one datastore [`Update`] at a time, keeps what it
//! needs of the datastore, and maintains the [`DesiredState`] of *this* host
//! together with the [`Changes`] since the dataplane last took them. An
//! update touches only what depends on it:
//!
//! - endpoints with identical effective labels share a *label class*; a
//!   selector is evaluated once per class, and each class caches the active
//!   selector sets it matches (`classes`);
//! - only sets referenced by a present rule set are *active* (`sets`); tag
//!   sets are filled through tag → profiles → endpoints, selector sets through
//!   the classes; a remote endpoint update touches only the sets it is (or
//!   was) a member of and its own routes;
//! - rule sets, sets and set members are reference counted, so shared ones
//!   stay while used and disappear with their last user (`rules`);
//! - policy selectors are evaluated against plumbed local endpoints and
//!   this host's host endpoints only (`policies`);
//! - host endpoints of every host are endpoints too, for tags and selectors
//!   (their expected addresses are members); this host's get a state entry
//!   with a program, like a plumbed workload's (`hosts`).
//!
//! The resulting state does not depend on the order the updates arrived in:
//! every tie is broken by key, not by arrival. Pure: no I/O, no clocks.
//!
//! Decisions beyond the data model text:
//! - two active local endpoints naming one interface, or local endpoints on
//!   different interfaces naming one address, are a *conflict* (fail
//!   closed): the interfaces involved get a drop-all program and neither
//!   endpoint is plumbed; an address keeps its route while every local
//!   claim points at the same interface, and gets none while they disagree
//!   (see `locals` and `routes`); reported by [`CalcEngine::conflicts`];
//! - one address claimed by several endpoints otherwise: a local endpoint's
//!   interface route wins over remote ones, between remote ones the smaller key;
//! - a remote endpoint's addresses are routed via its host's `bird_ip` only
//!   in the gateway's family (no IPv6 route via an IPv4 next hop), and only
//!   inside an IP pool (as BIRD's export filter did); and only while remote
//!   routes are on ([`CalcEngine::set_remote_routes`]: off when BIRD
//!   distributes them);
//! - the BGP keys are kept apart (`bgp`): [`CalcEngine::bgp_config`] derives
//!   this host's BIRD configuration on demand, and `Changes::bgp` says when
//!   it may have changed;
//! - a tier with a matching policy is listed in both directions, even when
//!   the policy has no rules for one of them (that direction then drops).
//!
//! Costs: a remote endpoint update is O(its sets + its addresses) when its
//! labels stay, plus one lookup (or, for labels never seen before, one
//! evaluation of each active selector) when they change. A new selector set
//! costs one evaluation per label class plus its members.

mod bgp;
mod classes;
mod conflicts;
mod endpoints;
mod hashing;
mod hosts;
mod intern;
mod locals;
mod output;
mod policies;
mod pools;
mod profiles;
mod routes;
mod rules;
mod sets;
mod slab;

use std::net::IpAddr;

pub use conflicts::{ConflictSubject, EndpointConflict};
use endpoints::{Endpoints, EpIdx};
use hashing::FastMap;

use crate::desired::{Changes, DesiredState, IpSetId, WorkloadEndpointKey};
use crate::model::{EndpointState, ResourceKey, Update, Value};
use crate::names::Id;
use crate::update::{parse_update, InvalidUpdate};

/// Interface prefix used until [`CalcEngine::set_interface_prefixes`] says otherwise.
pub const DEFAULT_INTERFACE_PREFIX: &str = "cali";

/// Sizes of what the engine holds, for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CalcStats {
    /// Plumbed local endpoints (entries of [`DesiredState::endpoints`]).
    pub local_endpoints: usize,
    /// Workload endpoints of other hosts.
    pub remote_endpoints: usize,
    /// Profiles with at least one document.
    pub profiles: usize,
    /// Policy documents (in any tier).
    pub policies: usize,
    /// Tiers with metadata.
    pub tiers: usize,
    /// IP pools.
    pub pools: usize,
    /// Address sets in the desired state (including the two pool sets).
    pub ip_sets: usize,
    /// Members over all address sets.
    pub ip_set_members: usize,
    /// Rule sets in the desired state.
    pub rule_sets: usize,
    /// This host's host endpoints (entries of [`DesiredState::host_endpoints`]).
    pub host_endpoints: usize,
}

/// The calculation: datastore updates in, desired state of this host out.
pub struct CalcEngine {
    hostname: String,
    prefixes: Vec<String>,
    ready: bool,
    remote_routes: bool,
    bgp: bgp::BgpState,
    host_ips: FastMap<String, IpAddr>,
    eps: Endpoints,
    classes: classes::Classes,
    profiles: profiles::Profiles,
    tiers: policies::Tiers,
    pools: pools::Pools,
    sets: sets::Sets,
    rule_sets: rules::RuleSetRefs,
    ifaces: locals::Ifaces,
    routes: routes::RouteClaims,
    conflicts: conflicts::Conflicts,
    out: output::Output,
    scratch: endpoints::Scratch,
    shared: intern::Shared,
}

impl CalcEngine {
    /// An engine for host `hostname`, with interface prefix `cali`.
    pub fn new(hostname: impl Into<String>) -> Self {
        let mut out = output::Output::default();
        out.create_set(IpSetId::AllPools);
        out.create_set(IpSetId::MasqueradePools);
        CalcEngine {
            hostname: hostname.into(),
            prefixes: vec![DEFAULT_INTERFACE_PREFIX.to_owned()],
            ready: false,
            remote_routes: true,
            bgp: bgp::BgpState::default(),
            host_ips: FastMap::default(),
            eps: Endpoints::default(),
            classes: classes::Classes::default(),
            profiles: profiles::Profiles::default(),
            tiers: policies::Tiers::default(),
            pools: pools::Pools::default(),
            sets: sets::Sets::default(),
            rule_sets: rules::RuleSetRefs::default(),
            ifaces: locals::Ifaces::default(),
            routes: routes::RouteClaims::default(),
            conflicts: conflicts::Conflicts::default(),
            out,
            scratch: endpoints::Scratch::default(),
            shared: intern::Shared::default(),
        }
    }

    /// The host this engine calculates for.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Sets the interface prefixes local endpoints must carry to be plumbed,
    /// and re-evaluates every local endpoint.
    pub fn set_interface_prefixes(&mut self, prefixes: Vec<String>) {
        if prefixes == self.prefixes {
            return;
        }
        self.prefixes = prefixes;
        self.out.changes.bgp = true;
        self.reclaim_all();
    }

    /// Whether remote endpoints get routes via their host's `bird_ip`
    /// (`InterHostRoutes = direct`, the default) or none at all (`bgp`, where
    /// BIRD installs them, and `none`). Switching re-routes every remote
    /// endpoint; local routes stay as they are.
    pub fn set_remote_routes(&mut self, enabled: bool) {
        if enabled == self.remote_routes {
            return;
        }
        self.remote_routes = enabled;
        self.reroute_remote();
    }

    /// True when remote endpoints are routed (see [`Self::set_remote_routes`]).
    pub fn remote_routes(&self) -> bool {
        self.remote_routes
    }

    /// The interface prefixes in use.
    pub fn interface_prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// Applies one typed update (`value: None` deletes). A value of the
    /// wrong kind for its key counts as a deletion.
    pub fn apply(&mut self, update: Update) {
        let Update { key, value } = update;
        match key {
            ResourceKey::Ready => self.ready = matches!(value, Some(Value::Ready(true))),
            // Settings are the datastore layer's (margay_datastore::settings):
            // the agent resolves them and changes the calculation through
            // its own setters (e.g. `set_interface_prefixes`).
            ResourceKey::GlobalConfig(_) | ResourceKey::HostConfig { .. } => {}
            ResourceKey::HostIp(host) => {
                let ip = match value {
                    Some(Value::HostIp(ip)) => Some(ip),
                    _ => None,
                };
                self.set_host_ip(host, ip);
            }
            ResourceKey::WorkloadEndpoint(k) => match value {
                Some(Value::WorkloadEndpoint(doc)) => self.upsert_endpoint(k, doc),
                _ => self.delete_endpoint(&k),
            },
            ResourceKey::HostEndpoint(k) => match value {
                Some(Value::HostEndpoint(doc)) => self.upsert_host_endpoint(k, doc),
                _ => self.delete_host_endpoint(&k),
            },
            ResourceKey::ProfileRules(p) => {
                let rules = match value {
                    Some(Value::ProfileRules(r)) => Some(r),
                    _ => None,
                };
                self.set_profile_rules(p, rules);
            }
            ResourceKey::ProfileTags(p) => {
                let tags = match value {
                    Some(Value::ProfileTags(t)) => Some(t),
                    _ => None,
                };
                self.set_profile_tags(p, tags);
            }
            ResourceKey::ProfileLabels(p) => {
                let labels = match value {
                    Some(Value::ProfileLabels(l)) => Some(l),
                    _ => None,
                };
                self.set_profile_labels(p, labels);
            }
            ResourceKey::TierMetadata(t) => {
                let meta = match value {
                    Some(Value::TierMetadata(m)) => Some(m),
                    _ => None,
                };
                self.set_tier_metadata(t, meta);
            }
            ResourceKey::Policy { tier, policy } => {
                let doc = match value {
                    Some(Value::Policy(p)) => Some(p),
                    _ => None,
                };
                self.set_policy(tier, policy, doc);
            }
            ResourceKey::IpPool(cidr) => {
                let pool = match value {
                    Some(Value::IpPool(p)) => Some(p),
                    _ => None,
                };
                self.set_pool(cidr, pool);
            }
            ResourceKey::Bgp(k) => {
                let value = match value {
                    Some(Value::Bgp(v)) => Some(v),
                    _ => None,
                };
                self.set_bgp(k, value);
            }
        }
    }

    /// Treats `key` as absent (deleted, or its value became invalid).
    pub fn remove(&mut self, key: &ResourceKey) {
        self.apply(Update {
            key: key.clone(),
            value: None,
        });
    }

    /// Parses a raw datastore key/value and applies it. Keys margay does not
    /// read are ignored. On an invalid value the object it names is removed
    /// (invalid means absent) and the error is returned for logging.
    // The error is `update`'s, returned as is (the caller logs and counts it).
    #[allow(clippy::result_large_err)]
    pub fn apply_raw(
        &mut self,
        prefix: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), InvalidUpdate> {
        match parse_update(prefix, key, value) {
            Ok(Some(update)) => {
                self.apply(update);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(err) => {
                if let Some(resource) = &err.resource {
                    self.remove(resource);
                }
                Err(err)
            }
        }
    }

    /// The desired state of this host.
    pub fn state(&self) -> &DesiredState {
        &self.out.state
    }

    /// What changed since the last call; resets the dirty sets.
    pub fn take_changes(&mut self) -> Changes {
        let mut changes = std::mem::take(&mut self.out.changes);
        self.sets.flush_changes(&mut changes);
        changes
    }

    /// True once `/Ready` is `true`.
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// Sizes of what the engine holds.
    pub fn stats(&self) -> CalcStats {
        let state = &self.out.state;
        CalcStats {
            local_endpoints: state.endpoints.len(),
            remote_endpoints: self.eps.index.len() - self.eps.locals.len(),
            profiles: self
                .profiles
                .map
                .values()
                .filter(|p| p.has_documents())
                .count(),
            policies: self.tiers.map.values().map(|t| t.policies.len()).sum(),
            tiers: self
                .tiers
                .map
                .values()
                .filter(|t| t.order.is_some())
                .count(),
            pools: self.pools.map.len(),
            ip_sets: state.ip_sets.len(),
            ip_set_members: state.ip_sets.values().map(|s| s.len()).sum(),
            rule_sets: state.rule_sets.len(),
            host_endpoints: state.host_endpoints.len(),
        }
    }

    /// Every endpoint of this host, active or not, plumbed or not.
    pub fn local_endpoint_keys(&self) -> impl Iterator<Item = &WorkloadEndpointKey> {
        self.eps.locals.keys()
    }

    /// Conflicts between this host's endpoints (one interface or one address
    /// claimed twice), in a stable order. Each fails closed until resolved.
    pub fn conflicts(&self) -> Vec<EndpointConflict> {
        self.conflicts.list()
    }

    /// Changes whenever [`Self::conflicts`] does (cheap to poll after updates).
    pub fn conflicts_generation(&self) -> u64 {
        self.conflicts.generation()
    }

    /// Human-readable problems with this host's endpoints, for logs: not
    /// plumbed for lack of an interface prefix or because of a conflict;
    /// failing closed for want of (valid) profiles (workload and host
    /// endpoints alike).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (key, &e) in &self.eps.locals {
            self.endpoint_problems(key, e, &mut out);
        }
        for &e in self.eps.host_locals.values() {
            self.host_endpoint_problems(e, &mut out);
        }
        out
    }

    fn endpoint_problems(&self, key: &WorkloadEndpointKey, e: EpIdx, out: &mut Vec<String>) {
        let ep = &self.eps.slab[e];
        let Some((_, doc)) = ep.workload() else {
            return;
        };
        let name = key_text(key);
        if doc.state != EndpointState::Active {
            return;
        }
        if !doc.name.has_prefix(&self.prefixes) {
            out.push(format!(
                "endpoint {name}: interface {} lacks an interface prefix ({}); not plumbed",
                doc.name,
                self.prefixes.join(",")
            ));
            return;
        }
        if ep.publ.is_none() {
            let others: Vec<String> = self
                .conflicts
                .on_interface(&doc.name)
                .unwrap_or_default()
                .iter()
                .filter(|k| *k != key)
                .map(key_text)
                .collect();
            let what = if others.is_empty() {
                "one of its addresses is claimed on another interface".to_owned()
            } else {
                format!(
                    "interface {} is also claimed by {}",
                    doc.name,
                    others.join(", ")
                )
            };
            out.push(format!(
                "endpoint {name}: {what}; its interface drops all traffic until resolved"
            ));
            return;
        }
        let subject = format!("endpoint {name}");
        self.profile_problems(&subject, ep.profile_ids(), "", out);
    }

    /// The fail-closed problems of an endpoint's profile list: none at all,
    /// or one that is missing or invalid. `subject` names the endpoint,
    /// `except` qualifies "all its traffic is dropped" (or is empty).
    fn profile_problems(
        &self,
        subject: &str,
        profile_ids: &[Id],
        except: &str,
        out: &mut Vec<String>,
    ) {
        if profile_ids.is_empty() {
            out.push(format!(
                "{subject}: no profiles; all its traffic is dropped{except}"
            ));
        }
        for p in profile_ids {
            let has_rules = self
                .profiles
                .map
                .get(p)
                .is_some_and(|prof| prof.rules.is_some());
            if !has_rules {
                out.push(format!(
                    "{subject}: profile {p} is missing or invalid; all its traffic is dropped{except}"
                ));
            }
        }
    }
}

impl std::fmt::Debug for CalcEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CalcEngine")
            .field("hostname", &self.hostname)
            .field("prefixes", &self.prefixes)
            .field("ready", &self.ready)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// `host/<h>/workload/<o>/<w>/endpoint/<id>`, for messages.
pub fn key_text(k: &WorkloadEndpointKey) -> String {
    format!(
        "host/{}/workload/{}/{}/endpoint/{}",
        k.host, k.orchestrator, k.workload, k.endpoint
    )
}
