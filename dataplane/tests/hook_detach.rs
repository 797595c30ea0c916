//! `FirewallOp::DetachHook` on the real kernel, every backend, as ops
//! written straight to the backend (the diff's side is unit-tested): a
//! detached hook leaves the kernel's listing and read-back, the chain it
//! called stays (its deletion is a separate op), another hook is not
//! touched, and both hooks can go with their chains in one write.
//!
//! Needs root (network namespaces); under CI a missing root fails instead
//! of skipping.

mod common;

use common::backends::{ipt_legacy, ipt_nft, nft_netlink, nft_tool};
use common::hooks::hook_attachments;
use margay_dataplane::firewall::model::{Action, GenericRule, Hook, ObjectName};
use margay_dataplane::firewall::FirewallOp;
use margay_dataplane::firewall::{FirewallBackend, FirewallError};
use margay_dataplane::netns::NetnsTarget;
use margay_tests::netns::{require_root, TestNetns};

type Make = fn(&NetnsTarget) -> Result<Box<dyn FirewallBackend>, FirewallError>;

fn chain(name: &'static str) -> ObjectName {
    ObjectName::fixed(name)
}

/// A chain with one accept rule, hooked to `hook`.
fn hooked(hook: Hook, name: &'static str) -> [FirewallOp; 2] {
    [
        FirewallOp::ReplaceChain {
            name: chain(name),
            rules: vec![GenericRule {
                matches: vec![],
                action: Action::Accept,
            }],
        },
        FirewallOp::AttachHook {
            hook,
            chain: chain(name),
        },
    ]
}

fn detach(hook: Hook, name: &'static str) -> FirewallOp {
    FirewallOp::DetachHook {
        hook,
        chain: chain(name),
    }
}

fn detach_one_hook_then_both(make: Make, test: &str) {
    if !require_root(test) {
        return;
    }
    let ns = TestNetns::new("hookdet");
    let target = NetnsTarget::named(ns.name()).expect("valid namespace name");
    let mut backend = make(&target).expect("backend");
    let mut ops = hooked(Hook::Output, "margay-out").to_vec();
    ops.extend(hooked(Hook::Input, "margay-in"));
    backend.write(&ops).expect("attach");
    assert!(!hook_attachments(&ns, Hook::Output).is_empty(), "attached");
    assert!(!hook_attachments(&ns, Hook::Input).is_empty(), "attached");

    backend
        .write(&[detach(Hook::Output, "margay-out")])
        .expect("detach output");
    let left = hook_attachments(&ns, Hook::Output);
    assert!(left.is_empty(), "output still attached: {left:?}");
    assert!(!hook_attachments(&ns, Hook::Input).is_empty(), "input kept");
    let seen = make(&target).expect("backend").observe().expect("observe");
    assert_eq!(seen.hooks.get(&Hook::Output), None);
    assert_eq!(seen.hooks.get(&Hook::Input), Some(&chain("margay-in")));
    assert!(seen.chains.contains_key(&chain("margay-out")), "chain kept");

    let both = [
        detach(Hook::Input, "margay-in"),
        FirewallOp::DeleteChain {
            name: chain("margay-in"),
        },
        FirewallOp::DeleteChain {
            name: chain("margay-out"),
        },
    ];
    backend.write(&both).expect("detach input, delete both");
    assert!(hook_attachments(&ns, Hook::Input).is_empty());
    let seen = make(&target).expect("backend").observe().expect("observe");
    assert!(seen.hooks.is_empty(), "{:?}", seen.hooks);
    assert!(seen.chains.is_empty(), "{:?}", seen.chains);
}

#[test]
fn detach_nftables() {
    detach_one_hook_then_both(nft_netlink, "detach_nftables");
}

#[test]
fn detach_nftables_tool() {
    detach_one_hook_then_both(nft_tool, "detach_nftables_tool");
}

#[test]
fn detach_iptables() {
    detach_one_hook_then_both(ipt_nft, "detach_iptables");
}

#[test]
fn detach_iptables_legacy() {
    detach_one_hook_then_both(ipt_legacy, "detach_iptables_legacy");
}
