//! Per-interface sysctls of local workloads: the desired state's
//! [`InterfaceSetting`]s made Linux sysctls by [`sysctl_for`] (`rp_filter`,
//! `proxy_arp`, `proxy_delay`, `route_localnet`, `proxy_ndp`).
//!
//! An [`IfaceObjects`] of (interface, path) → value. The observed side is
//! learnt by reading: a pending sysctl is read first and written only when it
//! differs, so a restarted agent writes nothing when all is in place. Files
//! under `/proc/sys/net` belong to the namespace of whoever opens them, so
//! all reads and writes of a flush run on one thread inside the target
//! namespace. Sysctls of interfaces that do not exist yet wait; when an
//! endpoint goes, its sysctls are simply forgotten (the interface goes too).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::RangeInclusive;

use margay_policy::desired::{InterfaceSetting, LocalEndpoint};
use margay_policy::names::InterfaceName;

use super::iface_objects::{
    Blocked, DeletePolicy, IfaceObject, IfaceObjects, KeyedByIface, LinkNeed, Outcome, Step,
};
use super::links::LinkCache;
use super::report::{FlushReport, ObjectKind, WriteKind};
use super::tracker::DeltaTracker;
use crate::netns::{NetnsError, NetnsTarget};

/// One sysctl of one interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SysctlKey {
    /// The interface it belongs to.
    pub iface: InterfaceName,
    /// Path under `/proc/sys` (built from a validated interface name).
    pub path: String,
}

impl fmt::Display for SysctlKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

fn keys_of(iface: &InterfaceName) -> RangeInclusive<SysctlKey> {
    let lo = SysctlKey {
        iface: iface.clone(),
        path: String::new(),
    };
    let hi = SysctlKey {
        iface: iface.clone(),
        path: "\u{10ffff}".to_owned(),
    };
    lo..=hi
}

/// The sysctl (path under `/proc/sys`, value) that makes `setting` so on `iface`.
pub fn sysctl_for(iface: &InterfaceName, setting: InterfaceSetting) -> (String, &'static str) {
    let i = iface.as_str();
    match setting {
        InterfaceSetting::StrictReversePathFilter => (format!("net/ipv4/conf/{i}/rp_filter"), "1"),
        InterfaceSetting::RouteLocalnet => (format!("net/ipv4/conf/{i}/route_localnet"), "1"),
        InterfaceSetting::ProxyArp => (format!("net/ipv4/conf/{i}/proxy_arp"), "1"),
        InterfaceSetting::ProxyArpWithoutDelay => (format!("net/ipv4/neigh/{i}/proxy_delay"), "0"),
        InterfaceSetting::ProxyNdp => (format!("net/ipv6/conf/{i}/proxy_ndp"), "1"),
    }
}

/// The sysctls an endpoint needs.
pub fn desired_for(ep: &LocalEndpoint) -> Vec<(SysctlKey, String)> {
    ep.interface_settings()
        .into_iter()
        .map(|setting| {
            let (path, value) = sysctl_for(&ep.iface, setting);
            (
                SysctlKey {
                    iface: ep.iface.clone(),
                    path,
                },
                value.to_owned(),
            )
        })
        .collect()
}

/// Reads `/proc/sys/<path>` and writes `value` if it differs:
/// [`Outcome::Unchanged`] or [`Outcome::Done`].
fn ensure(path: &str, value: &str) -> io::Result<Outcome> {
    if path.split('/').any(|seg| seg.is_empty() || seg == "..") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad sysctl path",
        ));
    }
    let full = format!("/proc/sys/{path}");
    if std::fs::read_to_string(&full)?.trim() == value {
        return Ok(Outcome::Unchanged);
    }
    std::fs::write(&full, value)?;
    Ok(Outcome::Done)
}

/// Sysctls as per-interface objects: they need their interface to exist
/// (up or not) and are never reverted.
#[derive(Debug, Clone, Copy)]
pub struct InterfaceSysctl;

impl IfaceObject for InterfaceSysctl {
    type Key = SysctlKey;
    type Value = String;
    const KIND: ObjectKind = ObjectKind::Sysctl;
    const NEEDS: LinkNeed = LinkNeed::Exists;
    const DELETE: DeletePolicy = DeletePolicy::Forget;

    fn iface<'a>(key: &'a SysctlKey, _: &'a String) -> Option<&'a InterfaceName> {
        Some(&key.iface)
    }

    fn failed_iface(key: &SysctlKey) -> Option<InterfaceName> {
        Some(key.iface.clone())
    }
}

impl KeyedByIface for InterfaceSysctl {
    fn keys_of(iface: &InterfaceName) -> RangeInclusive<SysctlKey> {
        keys_of(iface)
    }
}

/// Our per-interface sysctls.
#[derive(Debug, Clone, Default)]
pub struct SysctlManager {
    objects: IfaceObjects<InterfaceSysctl>,
}

impl SysctlManager {
    /// An empty manager.
    pub fn new() -> Self {
        Self::default()
    }

    /// The tracker (for stats and tests).
    pub fn tracker(&self) -> &DeltaTracker<SysctlKey, String> {
        self.objects.tracker()
    }

    /// Replaces every desired sysctl.
    pub fn set_all(&mut self, endpoints: &BTreeMap<InterfaceName, LocalEndpoint>) {
        let desired = endpoints.values().flat_map(desired_for).collect();
        self.objects.replace_desired(desired);
    }

    /// Takes the sysctls of one interface (`None`: endpoint gone).
    pub fn set_endpoint(&mut self, iface: &InterfaceName, ep: Option<&LocalEndpoint>) {
        self.objects
            .set_iface(iface, ep.map(desired_for).unwrap_or_default());
    }

    /// Pending sysctls whose interface exists, and how many wait and are
    /// blocked; forgets those no longer wanted.
    fn plan(&mut self, links: &LinkCache) -> (Vec<(SysctlKey, String)>, usize, usize) {
        let plan = self.objects.plan(links);
        let todo = plan
            .steps
            .into_iter()
            .filter_map(|step| match step {
                Step::Upsert { key, value, .. } => Some((key, value)),
                // Never planned: sysctls are forgotten, not reverted.
                Step::Delete { .. } => None,
            })
            .collect();
        (todo, plan.waiting, plan.blocked)
    }

    /// Reads, and writes where different, every pending sysctl.
    pub fn flush(
        &mut self,
        target: &NetnsTarget,
        links: &LinkCache,
    ) -> Result<FlushReport, NetnsError> {
        let (todo, waiting, blocked) = self.plan(links);
        let mut report = FlushReport {
            waiting,
            blocked,
            ..FlushReport::default()
        };
        if todo.is_empty() {
            return Ok(report);
        }
        let results: Vec<io::Result<Outcome>> = target.run_in(|| {
            todo.iter()
                .map(|(key, value)| ensure(&key.path, value))
                .collect()
        })?;
        for ((key, _), result) in todo.into_iter().zip(results) {
            self.record(key, result, &mut report);
        }
        report.log_refusals(ObjectKind::Sysctl);
        Ok(report)
    }

    fn record(&mut self, key: SysctlKey, result: io::Result<Outcome>, report: &mut FlushReport) {
        let outcome = match result {
            Ok(outcome) => outcome,
            // The interface went away under us: wait for it again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Outcome::Waiting,
            Err(e) => Outcome::Failed {
                errno: e.raw_os_error(),
                block: Some(Blocked::Rejected(e.raw_os_error())),
            },
        };
        self.objects.record(key, WriteKind::Upsert, outcome, report);
    }

    /// A re-created interface has default sysctls: forget what we knew.
    pub fn on_link_vanished(&mut self, name: &str) {
        self.objects.forget_iface(name);
    }

    /// Forgets everything observed, so the next flush re-reads every sysctl.
    pub fn resync(&mut self) {
        self.objects.replace_observed(BTreeMap::new());
        self.objects.unblock_all();
    }

    /// Gives refused sysctls another chance.
    pub fn unblock(&mut self) {
        self.objects.unblock_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostnet::links::Link;
    use crate::hostnet::tracker::Op;
    use margay_policy::desired::WorkloadEndpointKey;
    use margay_policy::names::Id;

    fn endpoint(name: &str, v6: bool) -> LocalEndpoint {
        LocalEndpoint {
            key: WorkloadEndpointKey {
                host: "h".into(),
                orchestrator: "o".into(),
                workload: "w".into(),
                endpoint: Id::new("e").expect("id"),
            },
            iface: InterfaceName::new(name).expect("iface"),
            mac: None,
            ipv4: vec!["10.0.0.1/32".parse().expect("v4")],
            ipv6: if v6 {
                vec!["fd00::1/128".parse().expect("v6")]
            } else {
                vec![]
            },
        }
    }

    #[test]
    fn sysctls_wait_for_their_interface() {
        let mut s = SysctlManager::new();
        let ep = endpoint("cali1", true);
        s.set_endpoint(&ep.iface, Some(&ep));
        assert_eq!(s.tracker().desired().len(), 5);
        let (todo, waiting, _) = s.plan(&LinkCache::default());
        assert!(todo.is_empty());
        assert_eq!(waiting, 5);
        let links = LinkCache::from_links([(
            3,
            Link {
                name: "cali1".into(),
                up: false,
            },
        )]);
        let (todo, _, _) = s.plan(&links);
        assert_eq!(todo.len(), 5);
        assert!(todo
            .iter()
            .any(|(k, v)| k.path == "net/ipv6/conf/cali1/proxy_ndp" && v == "1"));
    }

    #[test]
    fn results_are_recorded_and_removed_endpoints_forgotten() {
        let mut s = SysctlManager::new();
        let ep = endpoint("cali1", false);
        s.set_endpoint(&ep.iface, Some(&ep));
        let mut report = FlushReport::default();
        let pending: Vec<_> = s.tracker().pending();
        for (i, op) in pending.into_iter().enumerate() {
            let Op::Upsert { key, .. } = op else {
                panic!("only upserts");
            };
            let r = if i == 0 {
                Ok(Outcome::Done)
            } else {
                Ok(Outcome::Unchanged)
            };
            s.record(key, r, &mut report);
        }
        assert_eq!(report.upserts, 1);
        assert!(s.tracker().in_sync());
        s.on_link_vanished("cali1");
        assert_eq!(s.tracker().pending_len(), 4);
        s.set_endpoint(&ep.iface, None);
        let (todo, _, _) = s.plan(&LinkCache::default());
        assert!(todo.is_empty());
        assert!(s.tracker().in_sync());
    }

    #[test]
    fn settings_become_the_same_sysctls() {
        let ep = endpoint("cali1", true);
        let paths: Vec<_> = desired_for(&ep)
            .into_iter()
            .map(|(k, v)| format!("{}={v}", k.path))
            .collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            vec![
                "net/ipv4/conf/cali1/proxy_arp=1",
                "net/ipv4/conf/cali1/route_localnet=1",
                "net/ipv4/conf/cali1/rp_filter=1",
                "net/ipv4/neigh/cali1/proxy_delay=0",
                "net/ipv6/conf/cali1/proxy_ndp=1",
            ]
        );
        assert_eq!(desired_for(&endpoint("cali1", false)).len(), 4);
        let (key, _) = desired_for(&ep).remove(0);
        let f = InterfaceSysctl::failure(&key, WriteKind::Upsert, Some(13));
        assert_eq!(f.kind, ObjectKind::Sysctl);
        assert_eq!(f.object, key.path);
        assert_eq!((f.iface, f.addr), (Some(ep.iface.clone()), None));
    }

    #[test]
    fn paths_with_traversal_are_refused() {
        assert!(ensure("net/../../etc/passwd", "1").is_err());
        assert!(ensure("/net/x", "1").is_err());
    }
}
