//! End-to-end, one host, both backends: a profile over the cap of rules per
//! direction (issue 9, case 5) is rejected as invalid with the limit in the
//! log line, counted, and its users fail closed; a profile at the cap is
//! programmed.

use margay_tests::both_backends;
use margay_tests::sandbox::{allow, allow_all_rules, deny, wait_for, Cluster, Dataplane};
use serde_json::{json, Value};
use std::time::Duration;

both_backends!(a_profile_over_the_rule_cap_is_rejected_and_counted);

/// The cap (`margay_policy::update::MAX_RULES_PER_DIRECTION`).
const CAP: usize = 10_000;

fn rules(inbound: usize) -> Value {
    json!({"inbound_rules": vec![json!({}); inbound], "outbound_rules": [{}]})
}

fn a_profile_over_the_rule_cap_is_rejected_and_counted(dp: Dataplane) {
    let mut c = Cluster::builder().hosts(1).dataplane(dp).build();
    c.put_profile_rules("OPEN", &allow_all_rules());
    c.add_workload("a", "h1", "10.65.1.60");
    c.add_workload("b", "h1", "10.65.1.61");
    c.put_endpoint("a", &["OPEN"], &json!({}));
    c.put_endpoint("b", &["OPEN"], &json!({}));
    c.assert_matrix(&[allow("a", "b", 80)]);

    c.put_profile_rules("OPEN", &rules(CAP + 1));
    wait_for(
        "the oversized profile counted",
        Duration::from_secs(30),
        || c.metric_sum("h1", "margay_invalid_updates_total{kind=\"profile_rules\"}") >= 1.0,
    );
    let log = c.agent_log("h1");
    assert!(
        log.contains("inbound_rules has 10001 rules, more than the limit of 10000 per direction"),
        "no log line naming the limit:\n{}",
        c.agent_log_tail("h1", 10)
    );
    // Its users fail closed, as with any invalid profile.
    c.assert_matrix(&[deny("a", "b", 80)]);
    assert_eq!(
        c.metric_sum("h1", "margay_invalid_objects{kind=\"profile_rules\"}"),
        1.0
    );

    // At the cap it is valid and programmed.
    c.put_profile_rules("OPEN", &rules(CAP));
    c.assert_matrix(&[allow("a", "b", 80)]);
    assert_eq!(
        c.metric_sum("h1", "margay_invalid_objects{kind=\"profile_rules\"}"),
        0.0
    );
}
