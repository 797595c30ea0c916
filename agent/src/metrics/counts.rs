//! The object-count gauges: what margay knows and programs right now.

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::saturating_i64;

/// How many objects of each kind margay currently knows or programs; set
/// after each calculation/apply with [`Metrics::set_counts`](super::Metrics::set_counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectCounts {
    /// Active workload endpoints on this host.
    pub local_endpoints: u64,
    /// Endpoints on other hosts (routed to or matched by sets).
    pub remote_endpoints: u64,
    /// Profiles in the datastore (valid ones).
    pub profiles: u64,
    /// Tiered policies in the datastore (valid ones).
    pub policies: u64,
    /// Routes margay programs.
    pub routes: u64,
    /// Firewall chains margay programs.
    pub chains: u64,
    /// Firewall rules in those chains.
    pub rules: u64,
    /// Address sets margay programs.
    pub sets: u64,
    /// Members over all those sets.
    pub set_members: u64,
}

/// The gauges behind [`ObjectCounts`].
#[derive(Debug, Clone, Default)]
pub(super) struct CountGauges {
    local_endpoints: Gauge,
    remote_endpoints: Gauge,
    profiles: Gauge,
    policies: Gauge,
    routes: Gauge,
    chains: Gauge,
    rules: Gauge,
    sets: Gauge,
    set_members: Gauge,
}

impl CountGauges {
    pub(super) fn register(&self, registry: &mut Registry) {
        let gauges: [(&str, &str, &Gauge); 9] = [
            (
                "margay_local_endpoints",
                "Active workload endpoints on this host",
                &self.local_endpoints,
            ),
            (
                "margay_remote_endpoints",
                "Workload endpoints on other hosts known to this agent",
                &self.remote_endpoints,
            ),
            (
                "margay_profiles",
                "Valid profiles in the datastore",
                &self.profiles,
            ),
            (
                "margay_policies",
                "Valid tiered policies in the datastore",
                &self.policies,
            ),
            ("margay_routes", "Routes programmed by margay", &self.routes),
            (
                "margay_chains",
                "Firewall chains programmed by margay",
                &self.chains,
            ),
            (
                "margay_rules",
                "Firewall rules in margay's chains",
                &self.rules,
            ),
            (
                "margay_sets",
                "Address sets programmed by margay",
                &self.sets,
            ),
            (
                "margay_set_members",
                "Members over all of margay's address sets",
                &self.set_members,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
    }

    pub(super) fn set(&self, counts: &ObjectCounts) {
        let pairs: [(&Gauge, u64); 9] = [
            (&self.local_endpoints, counts.local_endpoints),
            (&self.remote_endpoints, counts.remote_endpoints),
            (&self.profiles, counts.profiles),
            (&self.policies, counts.policies),
            (&self.routes, counts.routes),
            (&self.chains, counts.chains),
            (&self.rules, counts.rules),
            (&self.sets, counts.sets),
            (&self.set_members, counts.set_members),
        ];
        for (gauge, value) in pairs {
            gauge.set(saturating_i64(value));
        }
    }
}
