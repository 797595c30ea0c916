//! The manager over a shared in-memory backend: incremental applies, adoption after a restart or an upgrade, drift repair, retries after failed writes.

use super::*;
use crate::firewall::scenario::{changes_between, rule, DesiredBuilder};
use margay_policy::desired::RuleAction;
use std::sync::{Arc, Mutex};

/// A noop backend whose state is shared with the test and whose writes
/// can be made to fail.
#[derive(Clone, Default)]
struct Shared {
    inner: Arc<Mutex<(NoopBackend, bool)>>,
}

impl FirewallBackend for Shared {
    fn name(&self) -> &'static str {
        "shared"
    }
    fn observe(&mut self) -> Result<ObservedRuleset, FirewallError> {
        self.inner.lock().expect("lock").0.observe()
    }
    fn write(&mut self, ops: &[FirewallOp]) -> Result<(), FirewallError> {
        let mut g = self.inner.lock().expect("lock");
        if g.1 {
            return Err(FirewallError::Tool {
                tool: "test".into(),
                status: "1".into(),
                stderr: "refused".into(),
            });
        }
        g.0.write(ops)
    }
}

fn state(n: usize) -> DesiredBuilder {
    let mut b = DesiredBuilder::new();
    b.profile(
        "web",
        vec![rule(RuleAction::Allow)],
        vec![rule(RuleAction::Allow)],
    );
    for i in 0..n {
        b.endpoint(&format!("cali{i}"), &format!("10.0.0.{i}/32"), &["web"]);
    }
    b
}

#[test]
fn applies_incrementally_and_restarts_without_writing() {
    let backend = Shared::default();
    let settings = FirewallSettings::default();
    let mut m = FirewallManager::new(Box::new(backend.clone()));
    m.start().expect("start");
    let s1 = state(3).build();
    let first = m
        .apply(&s1, &changes_between(&Default::default(), &s1), &settings)
        .expect("apply");
    assert!(first.full && first.ops > 0);
    assert_eq!(
        m.apply(&s1, &Changes::default(), &settings)
            .expect("again")
            .ops,
        0
    );
    let s2 = state(4).build();
    let second = m
        .apply(&s2, &changes_between(&s1, &s2), &settings)
        .expect("apply");
    assert!(!second.full);
    // Two endpoint chains and two bucket chains (cali3 shares no bucket: new one) + tops.
    assert!(second.chains_replaced <= 6, "{second:?}");
    assert_eq!(second.chains_deleted, 0);

    // A new manager adopting the state writes nothing.
    let mut again = FirewallManager::new(Box::new(backend.clone()));
    again.start().expect("start");
    assert!(again.plan(&s2, &settings).is_empty());
    let stats = again
        .apply(&s2, &Changes::default(), &settings)
        .expect("apply");
    assert_eq!(stats.ops, 0);
    assert_eq!(again.stats(), m.stats());
}

#[test]
fn drift_is_reported_and_repaired() {
    let backend = Shared::default();
    let settings = FirewallSettings::default();
    let mut m = FirewallManager::new(Box::new(backend.clone()));
    let s = state(2).build();
    m.apply(&s, &Changes::default(), &settings).expect("apply");
    assert!(m.repair_drift(&s, &settings).expect("check").is_clean());
    let victim = crate::firewall::lower::endpoint_chain(
        margay_policy::desired::Direction::Inbound,
        &crate::firewall::scenario::iface("cali1"),
    );
    backend
        .inner
        .lock()
        .expect("lock")
        .0
        .write(&[FirewallOp::ReplaceChain {
            name: victim.clone(),
            rules: vec![],
        }])
        .expect("tamper");
    let report = m.repair_drift(&s, &settings).expect("repair");
    assert_eq!(report.chains, vec![victim]);
    assert_eq!(report.ops, 1);
    assert!(m.repair_drift(&s, &settings).expect("check").is_clean());
}

#[test]
fn a_failed_write_is_retried_in_full() {
    let backend = Shared::default();
    let settings = FirewallSettings::default();
    let mut m = FirewallManager::new(Box::new(backend.clone()));
    let s1 = state(1).build();
    m.apply(&s1, &Changes::default(), &settings).expect("apply");
    backend.inner.lock().expect("lock").1 = true;
    let s2 = state(2).build();
    assert!(m.apply(&s2, &changes_between(&s1, &s2), &settings).is_err());
    backend.inner.lock().expect("lock").1 = false;
    // The changes were consumed by the failed apply; the retry must still converge.
    let retry = m.apply(&s2, &Changes::default(), &settings).expect("retry");
    assert!(retry.full && retry.ops > 0);
    assert!(m.plan(&s2, &settings).is_empty());
}

/// A kernel as the previous release left it: our chains, sets and hooks,
/// each rule tagged with the fingerprint that release computed (FNV-1a of
/// the rule's `Debug` text), which the canonical encoding does not
/// reproduce.
fn upgraded_from_debug_fingerprints(desired: &crate::firewall::model::Ruleset) -> NoopBackend {
    use crate::firewall::model::{fnv1a64, GenericRule};
    let old_fingerprint = |r: &GenericRule| fnv1a64(format!("{r:?}").as_bytes());
    let mut ops: Vec<FirewallOp> = Vec::new();
    for (name, set) in &desired.sets {
        ops.push(FirewallOp::CreateSet {
            name: name.clone(),
            family: set.family,
        });
        ops.push(FirewallOp::AddMembers {
            set: name.clone(),
            family: set.family,
            members: set.members.clone(),
        });
    }
    for (hook, chain) in &desired.hooks {
        ops.push(FirewallOp::AttachHook {
            hook: *hook,
            chain: chain.clone(),
        });
    }
    let mut backend = NoopBackend::new();
    backend.write(&ops).expect("sets and hooks");
    let mut observed = backend.observe().expect("observe");
    for (name, rules) in &desired.chains {
        let fps: Vec<u64> = rules.iter().map(old_fingerprint).collect();
        assert!(rules.iter().all(|r| old_fingerprint(r) != r.fingerprint()));
        observed.chains.insert(name.clone(), fps);
    }
    NoopBackend::holding(observed)
}

#[test]
fn rules_with_unknown_fingerprints_are_rewritten_once_then_left_alone() {
    let settings = FirewallSettings::default();
    let s = state(3).build();
    let desired = crate::firewall::lower::lower(&s, &settings);
    let backend = Shared::default();
    backend.inner.lock().expect("lock").0 = upgraded_from_debug_fingerprints(&desired);
    let mut m = FirewallManager::new(Box::new(backend.clone()));
    m.start().expect("start");
    // The first apply after the upgrade replaces every chain holding rules
    // (empty chains compare equal) and touches nothing else.
    let first = m.apply(&s, &Changes::default(), &settings).expect("apply");
    let with_rules = desired.chains.values().filter(|r| !r.is_empty()).count();
    assert!(first.full);
    assert_eq!(first.chains_replaced, with_rules, "{first:?}");
    assert_eq!(first.ops, with_rules, "{first:?}");
    // Then it has converged: no further writes, read-back finds no drift,
    // and a restarted manager adopts the result as is.
    let writes = backend.inner.lock().expect("lock").0.writes();
    assert_eq!(
        m.apply(&s, &Changes::default(), &settings)
            .expect("again")
            .ops,
        0
    );
    assert!(m.repair_drift(&s, &settings).expect("check").is_clean());
    let mut restarted = FirewallManager::new(Box::new(backend.clone()));
    restarted.start().expect("start");
    assert!(restarted.plan(&s, &settings).is_empty());
    assert_eq!(
        restarted
            .apply(&s, &Changes::default(), &settings)
            .expect("apply")
            .ops,
        0
    );
    assert_eq!(backend.inner.lock().expect("lock").0.writes(), writes);
}

#[test]
fn host_endpoint_bindings_follow_interface_addresses() {
    let addrs = |list: &[(&str, &str)]| -> InterfaceAddresses {
        list.iter()
            .map(|(i, a)| {
                let set = a.parse().into_iter().collect();
                ((*i).to_owned(), set)
            })
            .collect()
    };
    let backend = Shared::default();
    let settings = FirewallSettings::default();
    let mut m = FirewallManager::new(Box::new(backend.clone()));
    let before_apply = m
        .set_interface_addresses(&addrs(&[("eth0", "192.0.2.1")]))
        .expect("stored");
    assert_eq!(before_apply.ops, 0, "nothing applied yet: only stored");
    let mut b = state(1);
    b.host_endpoint("by-addr", None, &["192.0.2.1"], &["web"]);
    let s = b.build();
    m.apply(&s, &changes_between(&Default::default(), &s), &settings)
        .expect("apply");
    let hep = crate::firewall::scenario::id("by-addr");
    let on = |i: &str| BTreeMap::from([(hep.clone(), BTreeSet::from([iface(i)]))]);
    assert_eq!(m.host_endpoint_bindings(), on("eth0"));

    let moved = m
        .set_interface_addresses(&addrs(&[("eth0", "192.0.2.9"), ("eth1", "192.0.2.1")]))
        .expect("moved");
    assert!(!moved.full && moved.chains_replaced > 0 && moved.chains_deleted > 0);
    assert_eq!(m.host_endpoint_bindings(), on("eth1"));
    assert_eq!(&backend.clone().observe().expect("observe"), m.observed());
    assert!(
        m.plan(&s, &settings).is_empty(),
        "plan knows the interfaces"
    );

    m.set_interface_addresses(&addrs(&[("eth1", "192.0.2.9")]))
        .expect("gone");
    assert!(m.host_endpoint_bindings().is_empty());
    let observed = backend.clone().observe().expect("observe");
    let leftovers: Vec<&ObjectName> = observed
        .chains
        .keys()
        .filter(|c| c.as_str().starts_with("margay-h") || c.as_str().contains("fsafe"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let output = ObjectName::fixed(crate::firewall::lower::CHAIN_OUTPUT);
    assert_eq!(observed.chains.get(&output), Some(&vec![]), "emptied");
    let mut adopting = FirewallManager::new(Box::new(backend.clone()));
    adopting.start().expect("start");
    adopting
        .set_interface_addresses(&addrs(&[("eth1", "192.0.2.9")]))
        .expect("stored");
    assert!(adopting.plan(&s, &settings).is_empty());
}

fn iface(name: &str) -> InterfaceName {
    crate::firewall::scenario::iface(name)
}
