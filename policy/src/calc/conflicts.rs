//! Conflicts between this host's endpoints, as the calculation found them:
//! two local endpoints claiming one interface, or local endpoints on
//! different interfaces claiming one address. What a conflict does to the
//! dataplane is decided in `locals` (drop-all program) and `routes` (no
//! route change); this module only keeps the list, for logs and metrics.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::desired::WorkloadEndpointKey;
use crate::names::InterfaceName;

/// What two or more local endpoints claim at once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConflictSubject {
    /// The same host-side interface.
    Interface(InterfaceName),
    /// The same address, on different interfaces.
    Address(IpNet),
}

impl ConflictSubject {
    /// A stable, low-cardinality label for metrics: `interface` or `address`.
    pub fn kind(&self) -> &'static str {
        match self {
            ConflictSubject::Interface(_) => "interface",
            ConflictSubject::Address(_) => "address",
        }
    }
}

impl std::fmt::Display for ConflictSubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConflictSubject::Interface(i) => write!(f, "interface {i}"),
            ConflictSubject::Address(n) => write!(f, "address {n}"),
        }
    }
}

/// One conflict and the endpoints in it (sorted, at least two).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointConflict {
    /// What they all claim.
    pub subject: ConflictSubject,
    /// Who claims it.
    pub keys: Vec<WorkloadEndpointKey>,
}

/// The current conflicts, with a generation that moves on every change.
#[derive(Debug, Default)]
pub(super) struct Conflicts {
    map: BTreeMap<ConflictSubject, Vec<WorkloadEndpointKey>>,
    generation: u64,
}

impl Conflicts {
    /// Interface `iface` is contested by `keys`, or (None) not.
    pub fn set_interface(&mut self, iface: &InterfaceName, keys: Option<Vec<WorkloadEndpointKey>>) {
        self.set(ConflictSubject::Interface(iface.clone()), keys);
    }

    /// Address `net` is contested by `keys`, or (None) not.
    pub fn set_address(&mut self, net: IpNet, keys: Option<Vec<WorkloadEndpointKey>>) {
        self.set(ConflictSubject::Address(net), keys);
    }

    fn set(&mut self, subject: ConflictSubject, keys: Option<Vec<WorkloadEndpointKey>>) {
        match keys {
            Some(mut keys) => {
                keys.sort();
                if self.map.get(&subject) != Some(&keys) {
                    self.map.insert(subject, keys);
                    self.generation += 1;
                }
            }
            None => {
                if self.map.remove(&subject).is_some() {
                    self.generation += 1;
                }
            }
        }
    }

    /// Every conflict, in subject order.
    pub fn list(&self) -> Vec<EndpointConflict> {
        self.map
            .iter()
            .map(|(subject, keys)| EndpointConflict {
                subject: subject.clone(),
                keys: keys.clone(),
            })
            .collect()
    }

    /// The endpoints contesting interface `iface`, if it is contested.
    pub fn on_interface(&self, iface: &InterfaceName) -> Option<&[WorkloadEndpointKey]> {
        self.map
            .get(&ConflictSubject::Interface(iface.clone()))
            .map(Vec::as_slice)
    }

    /// True when `net` is claimed on several interfaces of this host.
    pub fn has_address(&self, net: &IpNet) -> bool {
        self.map.contains_key(&ConflictSubject::Address(*net))
    }

    /// Moves on every change of [`Self::list`].
    pub fn generation(&self) -> u64 {
        self.generation
    }
}
