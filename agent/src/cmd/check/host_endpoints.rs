//! `margay check`: would a host endpoint of this host block the agent's own
//! etcd port? margay always lets its own etcd traffic through (the firewall
//! accepts the configured endpoints before any host endpoint policy), but a
//! policy that would otherwise block it deserves a warning: another etcd
//! client on the host, or etcd itself listening here, gets no such pass.
//!
//! A direction is safe when its program is plain allow-all (no tier, a first
//! profile whose first rule allows everything) or the port is in that
//! direction's failsafe list (tcp). [`etcd_port_check`] is pure; [`gather`]
//! lists the datastore, asks the dataplane for the bindings and calls it.

use std::collections::{BTreeMap, BTreeSet};

use margay_config::Settings;
use margay_policy::desired::{
    DesiredState, DirectionProgram, Rule, RuleAction, RuleSet, RuleSetId, SideMatch,
};

use crate::cmd::host_endpoints::{dataplane_bindings, Bindings};
use crate::dataplane_setup::{firewall_settings, open_dataplane};
use crate::logging::sanitize;
use crate::preflight::CheckResult;
use crate::settings::SettingsLoader;

const NAME: &str = "host endpoints and etcd";
/// IP protocol number of tcp.
const TCP: u8 = 6;

/// The ports of the configured etcd endpoints (2379 when a URL names none).
pub fn etcd_ports(endpoints: &[String]) -> BTreeSet<u16> {
    endpoints
        .iter()
        .filter_map(|url| crate::host_guard::endpoint_host(url))
        .map(|(_, port)| port)
        .collect()
}

/// True when `program` accepts every packet: no tier, not failing closed,
/// and the first profile's first rule allows everything without condition.
pub fn allows_everything(
    program: &DirectionProgram,
    rule_sets: &BTreeMap<RuleSetId, RuleSet>,
) -> bool {
    if !program.tiers.is_empty() || program.fail_closed {
        return false;
    }
    let first_rule = program
        .profiles
        .first()
        .and_then(|id| rule_sets.get(id))
        .and_then(|set| set.rules.first());
    first_rule.is_some_and(is_unconditional_allow)
}

fn is_unconditional_allow(rule: &Rule) -> bool {
    rule.action == RuleAction::Allow
        && rule.ip_version.is_none()
        && rule.protocol.is_none()
        && rule.not_protocol.is_none()
        && rule.src == SideMatch::default()
        && rule.dst == SideMatch::default()
        && rule.icmp.is_none()
        && rule.not_icmp.is_none()
}

/// The check line: a warning per host endpoint, direction and etcd port at
/// risk, ok otherwise. `failsafe_in`/`failsafe_out` are (protocol, port).
pub fn etcd_port_check(
    state: &DesiredState,
    bindings: &Bindings,
    ports: &BTreeSet<u16>,
    failsafe_in: &[(u8, u16)],
    failsafe_out: &[(u8, u16)],
) -> CheckResult {
    if state.host_endpoints.is_empty() {
        return CheckResult::ok(NAME, "no host endpoint on this host");
    }
    let mut risks = Vec::new();
    let mut settings_to_fix = BTreeSet::new();
    for (id, hep) in &state.host_endpoints {
        let Some(ifaces) = bindings.get(id).filter(|i| !i.is_empty()) else {
            continue;
        };
        let on: Vec<&str> = ifaces.iter().map(|i| i.as_str()).collect();
        let directions = [
            (
                "inbound",
                &hep.program.inbound,
                failsafe_in,
                "FailsafeInboundHostPorts",
            ),
            (
                "outbound",
                &hep.program.outbound,
                failsafe_out,
                "FailsafeOutboundHostPorts",
            ),
        ];
        for (direction, program, failsafe, setting) in directions {
            if allows_everything(program, &state.rule_sets) {
                continue;
            }
            for port in ports.iter().filter(|p| !failsafe.contains(&(TCP, **p))) {
                risks.push(format!(
                    "host endpoint {} on {} may block etcd port {port} ({direction})",
                    sanitize(id.as_str()),
                    on.join(",")
                ));
                settings_to_fix.insert(format!("tcp:{port} to {setting}"));
            }
        }
    }
    if risks.is_empty() {
        let shown: Vec<String> = ports.iter().map(|p| format!("tcp:{p}")).collect();
        return CheckResult::ok(
            NAME,
            format!(
                "{} host endpoint(s); etcd port(s) {} allowed or failsafe",
                state.host_endpoints.len(),
                shown.join(",")
            ),
        );
    }
    let fixes: Vec<String> = settings_to_fix.into_iter().collect();
    CheckResult::warning(
        NAME,
        risks.join("; "),
        format!(
            "margay still lets its own etcd traffic through, but add {}",
            fixes.join(" and ")
        ),
    )
}

/// Lists the datastore (settings included), reads the bindings from a
/// read-only dataplane and runs [`etcd_port_check`]. Call only when etcd
/// answered (the etcd check reports when it does not).
pub async fn gather(settings: &Settings, loader: &mut SettingsLoader) -> CheckResult {
    let computed = match crate::cmd::plan::compute(settings, Some(loader)).await {
        Ok(c) => c,
        Err(e) => {
            return CheckResult::problem(
                NAME,
                format!("cannot read the datastore: {e:#}"),
                "see the etcd lines above",
            )
        }
    };
    let effective = &computed.settings;
    let state = computed.calc.state();
    let bindings = match read_bindings(effective, state).await {
        Ok(b) => b,
        Err(e) => {
            return CheckResult::problem(
                NAME,
                format!("cannot read this host's interfaces: {e:#}"),
                "run as root (or with CAP_NET_ADMIN) in the host's network namespace",
            )
        }
    };
    let firewall = firewall_settings(effective, &[]);
    etcd_port_check(
        state,
        &bindings,
        &etcd_ports(&effective.etcd_endpoints),
        &firewall.failsafe_inbound,
        &firewall.failsafe_outbound,
    )
}

/// The host endpoints' bindings over the interfaces a read-only dataplane
/// reads (nothing is written).
async fn read_bindings(settings: &Settings, state: &DesiredState) -> anyhow::Result<Bindings> {
    if state.host_endpoints.is_empty() {
        return Ok(Bindings::new());
    }
    let mut dp = open_dataplane(settings).await?;
    dp.start_read_only().await?;
    Ok(dataplane_bindings(&dp, state, &settings.interface_prefixes))
}

#[cfg(test)]
mod tests {
    use margay_dataplane::firewall::scenario::{profile_rs, rule};
    use margay_policy::desired::{Direction, EndpointProgram, LocalHostEndpoint, TierProgram};
    use margay_policy::names::{Id, InterfaceName};

    use super::*;

    fn id(s: &str) -> Id {
        Id::new(s).expect("id")
    }

    fn profile_set(name: &str) -> RuleSetId {
        profile_rs(name, Direction::Inbound)
    }

    fn allow_all_rule() -> Rule {
        rule(RuleAction::Allow)
    }

    /// A state with host endpoint `mgmt` whose inbound program is
    /// `inbound` and whose outbound program allows everything.
    fn state_with(inbound: DirectionProgram, first_rule: Rule) -> (DesiredState, Bindings) {
        let allow = profile_set("allow");
        let restricted = profile_set("web");
        let mut s = DesiredState::default();
        s.rule_sets.insert(
            allow.clone(),
            RuleSet {
                rules: vec![allow_all_rule()],
            },
        );
        s.rule_sets.insert(
            restricted,
            RuleSet {
                rules: vec![first_rule],
            },
        );
        let outbound = DirectionProgram {
            tiers: vec![],
            profiles: vec![allow],
            fail_closed: false,
        };
        s.host_endpoints.insert(
            id("mgmt"),
            LocalHostEndpoint {
                id: id("mgmt"),
                name: InterfaceName::new("eth0").ok(),
                expected_addrs: vec![],
                program: EndpointProgram { inbound, outbound },
            },
        );
        let b = Bindings::from([(
            id("mgmt"),
            BTreeSet::from([InterfaceName::new("eth0").expect("iface")]),
        )]);
        (s, b)
    }

    fn profile_program(set: &str) -> DirectionProgram {
        DirectionProgram {
            tiers: vec![],
            profiles: vec![profile_set(set)],
            fail_closed: false,
        }
    }

    #[test]
    fn a_restrictive_inbound_policy_without_failsafe_warns() {
        let mut web_only = allow_all_rule();
        web_only.protocol = Some(margay_policy::desired::Protocol(TCP));
        let (s, b) = state_with(profile_program("web"), web_only);
        let ports = BTreeSet::from([12379]);
        let r = etcd_port_check(&s, &b, &ports, &[(TCP, 22)], &[]);
        assert!(r.ok && r.warning, "{r}");
        assert_eq!(
            r.to_string(),
            "WARNING  host endpoints and etcd: host endpoint mgmt on eth0 may block etcd \
             port 12379 (inbound) — hint: margay still lets its own etcd traffic through, \
             but add tcp:12379 to FailsafeInboundHostPorts"
        );
        // In the failsafe list: fine.
        let covered = etcd_port_check(&s, &b, &ports, &[(TCP, 12379)], &[]);
        assert!(covered.ok && !covered.warning, "{covered}");
        // udp does not count.
        let udp = etcd_port_check(&s, &b, &ports, &[(17, 12379)], &[]);
        assert!(udp.warning, "{udp}");
        // Not bound: nothing to block.
        let unbound = etcd_port_check(&s, &Bindings::new(), &ports, &[], &[]);
        assert!(!unbound.warning, "{unbound}");
    }

    #[test]
    fn allow_all_profiles_are_safe_and_tiers_or_fail_closed_are_not() {
        let (s, b) = state_with(profile_program("web"), allow_all_rule());
        let ports = BTreeSet::from([2379]);
        let r = etcd_port_check(&s, &b, &ports, &[], &[]);
        assert!(r.ok && !r.warning, "{r}");
        assert!(r.detail.contains("1 host endpoint(s)"), "{r}");

        let mut tiered = profile_program("web");
        tiered.tiers.push(TierProgram {
            tier: id("t1"),
            policies: vec![profile_set("web")],
        });
        let (s, b) = state_with(tiered, allow_all_rule());
        assert!(etcd_port_check(&s, &b, &ports, &[], &[]).warning);

        let closed = DirectionProgram {
            fail_closed: true,
            ..DirectionProgram::default()
        };
        let (s, b) = state_with(closed, allow_all_rule());
        let r = etcd_port_check(&s, &b, &ports, &[], &[(TCP, 2379)]);
        assert!(
            r.warning && r.hint.contains("FailsafeInboundHostPorts"),
            "{r}"
        );
        assert!(!r.hint.contains("Outbound"), "outbound allows all: {r}");
    }

    #[test]
    fn etcd_ports_come_from_the_urls() {
        let urls = [
            "http://127.0.0.1:12379".to_owned(),
            "https://etcd.example/".to_owned(),
            "nonsense://".to_owned(),
        ];
        assert_eq!(etcd_ports(&urls), BTreeSet::from([2379, 12379]));
        let none = etcd_port_check(
            &DesiredState::default(),
            &Bindings::new(),
            &BTreeSet::new(),
            &[],
            &[],
        );
        assert_eq!(none.detail, "no host endpoint on this host");
    }
}
