//! How `margay plan` shows a [`Plan`]: one line per change as text, or a
//! JSON document (`--json`). The dataplane only returns the plan as data.
//!
//! ```text
//! routes: 1 change(s)
//!   + route 10.0.0.1/32 dev cali1 scope link
//! firewall: 2 op(s)
//!   + set mg-ep-... (ipv4)
//!   ~ chain mg-from-cali1 (4 rules)
//! ```

use std::fmt::{self, Write as _};

use margay_dataplane::firewall::FirewallOp;
use margay_dataplane::{Plan, RoutePlan};
use margay_policy::desired::IpVersion;
use serde_json::{json, Value};

/// The plan as text, ending with a newline.
pub fn plan_text(plan: &Plan) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = write_plan(&mut text, plan);
    text
}

fn write_plan(out: &mut String, plan: &Plan) -> fmt::Result {
    if plan.is_empty() {
        return writeln!(out, "nothing to do: the kernel matches the desired state");
    }
    writeln!(out, "routes: {} change(s)", plan.routes.len())?;
    for route in &plan.routes {
        writeln!(out, "  {}", route_line(route))?;
    }
    writeln!(out, "firewall: {} op(s)", plan.firewall.len())?;
    for op in &plan.firewall {
        writeln!(out, "  {}", firewall_line(op))?;
    }
    Ok(())
}

/// One route change: `+ route DST ROUTE`, `~ route DST FROM -> TO`,
/// `- route DST ROUTE`.
pub fn route_line(route: &RoutePlan) -> String {
    match route {
        RoutePlan::Add { dst, route } => format!("+ route {dst} {route}"),
        RoutePlan::Replace { dst, from, to } => format!("~ route {dst} {from} -> {to}"),
        RoutePlan::Delete { dst, route } => format!("- route {dst} {route}"),
    }
}

/// One firewall operation, sets and chains by name.
pub fn firewall_line(op: &FirewallOp) -> String {
    match op {
        FirewallOp::CreateSet { name, family: v } => {
            format!("+ set {} ({})", name.as_str(), family(*v))
        }
        FirewallOp::DeleteSet { name } => format!("- set {}", name.as_str()),
        FirewallOp::AddMembers { set, members, .. } => {
            format!("+ {} member(s) in set {}", members.len(), set.as_str())
        }
        FirewallOp::RemoveMembers { set, members, .. } => {
            format!("- {} member(s) from set {}", members.len(), set.as_str())
        }
        FirewallOp::ReplaceChain { name, rules } => {
            format!("~ chain {} ({} rules)", name.as_str(), rules.len())
        }
        FirewallOp::DeleteChain { name } => format!("- chain {}", name.as_str()),
        FirewallOp::AttachHook { hook, chain } => {
            format!("~ hook {hook:?} -> {}", chain.as_str())
        }
        FirewallOp::DetachHook { hook, chain } => {
            format!("- hook {hook:?} -> {}", chain.as_str())
        }
    }
}

/// The plan as JSON: `{"routes": [{"op", "dst", "route", "from"?}],
/// "firewall": [{"op", ...}]}`.
pub fn plan_json(plan: &Plan) -> Value {
    let routes: Vec<_> = plan.routes.iter().map(route_json).collect();
    let firewall: Vec<_> = plan.firewall.iter().map(firewall_op_json).collect();
    json!({ "routes": routes, "firewall": firewall })
}

fn route_json(route: &RoutePlan) -> Value {
    match route {
        RoutePlan::Add { dst, route } => {
            json!({"op": "add", "dst": dst.to_string(), "route": route.to_string()})
        }
        RoutePlan::Replace { dst, from, to } => json!({
            "op": "replace", "dst": dst.to_string(), "from": from.to_string(), "route": to.to_string()
        }),
        RoutePlan::Delete { dst, route } => {
            json!({"op": "delete", "dst": dst.to_string(), "route": route.to_string()})
        }
    }
}

fn firewall_op_json(op: &FirewallOp) -> Value {
    fn texts<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> Vec<String> {
        items.into_iter().map(|i| i.to_string()).collect()
    }
    match op {
        FirewallOp::CreateSet { name, family: v } => {
            json!({"op": "create_set", "name": name.as_str(), "family": family(*v)})
        }
        FirewallOp::DeleteSet { name } => json!({"op": "delete_set", "name": name.as_str()}),
        FirewallOp::AddMembers { set, members, .. } => {
            json!({"op": "add_members", "set": set.as_str(), "members": texts(members)})
        }
        FirewallOp::RemoveMembers { set, members, .. } => {
            json!({"op": "remove_members", "set": set.as_str(), "members": texts(members)})
        }
        FirewallOp::ReplaceChain { name, rules } => {
            json!({"op": "replace_chain", "name": name.as_str(), "rules": rules.len()})
        }
        FirewallOp::DeleteChain { name } => json!({"op": "delete_chain", "name": name.as_str()}),
        FirewallOp::AttachHook { hook, chain } => {
            json!({"op": "attach_hook", "hook": format!("{hook:?}"), "chain": chain.as_str()})
        }
        FirewallOp::DetachHook { hook, chain } => {
            json!({"op": "detach_hook", "hook": format!("{hook:?}"), "chain": chain.as_str()})
        }
    }
}

fn family(version: IpVersion) -> &'static str {
    match version {
        IpVersion::V4 => "ipv4",
        IpVersion::V6 => "ipv6",
    }
}

#[cfg(test)]
mod tests {
    use margay_dataplane::hostnet::KernelRoute;
    use margay_policy::names::InterfaceName;

    use super::*;

    #[test]
    fn plans_print_and_serialise() {
        let plan = Plan {
            routes: vec![
                RoutePlan::Add {
                    dst: "10.0.0.1/32".parse().expect("net"),
                    route: KernelRoute::Dev(InterfaceName::new("cali1").expect("iface")),
                },
                RoutePlan::Delete {
                    dst: "10.0.0.9/32".parse().expect("net"),
                    route: KernelRoute::Via("192.168.0.2".parse().expect("ip")),
                },
            ],
            firewall: vec![],
        };
        let text = plan_text(&plan);
        assert_eq!(
            text,
            "routes: 2 change(s)\n  + route 10.0.0.1/32 dev cali1 scope link\n  \
             - route 10.0.0.9/32 via 192.168.0.2\nfirewall: 0 op(s)\n"
        );
        let j = plan_json(&plan);
        assert_eq!(j["routes"][0]["op"], "add");
        assert_eq!(j["routes"][1]["route"], "via 192.168.0.2");
        assert!(plan_text(&Plan::default()).contains("nothing to do"));
    }

    #[test]
    fn hook_attach_and_detach_read_apart() {
        use margay_dataplane::firewall::model::{Hook, ObjectName};
        let output = ObjectName::fixed("margay-output");
        let attach = FirewallOp::AttachHook {
            hook: Hook::Output,
            chain: output.clone(),
        };
        let detach = FirewallOp::DetachHook {
            hook: Hook::Output,
            chain: output,
        };
        assert_eq!(firewall_line(&attach), "~ hook Output -> margay-output");
        assert_eq!(firewall_line(&detach), "- hook Output -> margay-output");
        let j = firewall_op_json(&detach);
        assert_eq!(j["op"], "detach_hook");
        assert_eq!(j["hook"], "Output");
        assert_eq!(j["chain"], "margay-output");
    }
}
