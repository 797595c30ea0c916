//! End-to-end, one host, both backends: a datastore of OpenStack-era size —
//! 20,000 profiles of about 2.5 KB (rules with long port lists) and one of
//! 1 MB (rules naming thousands of security groups, and filler) — syncs, the
//! real agent becomes ready, and workloads whose profiles are among the big
//! ones get the verdicts their rules say, checked with real connections.
//! The profiles are big by value more than by rule count, so that the test
//! stays within a minute a backend in a debug build (see the functions).
//!
//! Before issue 10 every list page of 5,000 such profiles was larger than
//! the client's 4 MiB receive limit: the agent retried "etcd unavailable"
//! forever and never became ready.

use std::time::{Duration, Instant};

use margay_tests::both_backends;
use margay_tests::sandbox::{allow, deny, margay_bin, wait_for, Cluster, Dataplane};
use serde_json::{json, Value};

both_backends!(twenty_thousand_big_profiles_and_one_of_a_megabyte_sync_and_enforce);

/// Profiles of about 2.5 KB in the datastore.
const PROFILES: usize = 20_000;
/// Filler rules of the 1 MB profile, per direction.
const MEGABYTE_FILLER_RULES: usize = 200;
/// Rules of the 1 MB profile that allow members of many security groups.
const MEGABYTE_GROUP_RULES: usize = 24;
/// Security groups named in each of those rules.
const GROUPS_PER_RULE: usize = 1_000;

/// A rule that matches none of the test's traffic (sources far outside the
/// workloads' pool), as OpenStack security groups were full of: a source
/// network and a list of ports.
fn filler_rule(n: usize, action: &str) -> Value {
    let ports: Vec<Value> = (0..52)
        .map(|k| json!(1000 + (n * 52 + k) % 60_000))
        .collect();
    json!({
        "action": action,
        "protocol": "tcp",
        "src_net": format!("172.{}.{}.{}/32", 16 + n % 16, (n / 16) % 256, n / 4096),
        "dst_ports": ports,
    })
}

/// Profile `i` of the [`PROFILES`]: about 2.5 KB, inbound TCP 5432 from the
/// workloads' pool after 4 filler rules, outbound everything after 2 filler
/// denies. Big by value, with few rules: parsing 20,000 profiles of 25 rules
/// each took longer than this test may in a debug build on a loaded machine.
fn openstack_profile(i: usize) -> Value {
    let mut inbound: Vec<Value> = (0..4).map(|k| filler_rule(i * 4 + k, "allow")).collect();
    inbound.push(
        json!({"action": "allow", "protocol": "tcp", "src_net": "10.65.0.0/16",
                        "dst_ports": [5432]}),
    );
    let mut outbound: Vec<Value> = (0..2).map(|k| filler_rule(i * 2 + k, "deny")).collect();
    outbound.push(json!({"action": "allow"}));
    json!({"inbound_rules": inbound, "outbound_rules": outbound})
}

fn profile_name(i: usize) -> String {
    format!("os-sg-{i:05}")
}

/// A rule allowing SSH from the members of [`GROUPS_PER_RULE`] security
/// groups (no endpoint here is a member of any).
fn group_rule(n: usize) -> Value {
    let groups: Vec<String> = (0..GROUPS_PER_RULE)
        .map(|k| format!("'sg-{:08x}-7d1c-4e0b-9a52-{:012x}'", n, k))
        .collect();
    json!({"action": "allow", "protocol": "tcp", "dst_ports": [22],
           "src_selector": format!("openstack_sg in {{{}}}", groups.join(","))})
}

/// The 1 MB profile: inbound, a deny of TCP 443 from `denied` first, then
/// rules for many security groups and filler, then an allow of TCP 80 and
/// 443; outbound, filler then allow. About 1,000 filler rules in the kernel
/// rather than 10,000: programming 10,000 took minutes in a debug build on a
/// loaded machine.
fn megabyte_profile(denied: &str) -> Value {
    let mut inbound = vec![json!({"action": "deny", "protocol": "tcp",
                                  "src_net": format!("{denied}/32"), "dst_ports": [443]})];
    inbound.extend((0..MEGABYTE_GROUP_RULES).map(group_rule));
    inbound.extend((0..MEGABYTE_FILLER_RULES).map(|n| filler_rule(n, "deny")));
    inbound.push(json!({"action": "allow", "protocol": "tcp", "dst_ports": [80, 443]}));
    let mut outbound: Vec<Value> = (0..MEGABYTE_FILLER_RULES)
        .map(|n| filler_rule(n, "deny"))
        .collect();
    outbound.push(json!({"action": "allow"}));
    json!({"inbound_rules": inbound, "outbound_rules": outbound})
}

fn twenty_thousand_big_profiles_and_one_of_a_megabyte_sync_and_enforce(dp: Dataplane) {
    let started = Instant::now();
    let mut c = Cluster::builder()
        .hosts(1)
        .dataplane(dp)
        .start_agents(false)
        .build();
    let profiles: Vec<(String, String)> = (0..PROFILES)
        .map(|i| {
            let key = format!("/calico/v1/policy/profile/{}/rules", profile_name(i));
            (key, openstack_profile(i).to_string())
        })
        .collect();
    let average = profiles.iter().map(|(_, v)| v.len()).sum::<usize>() / PROFILES;
    assert!(
        (2300..=2800).contains(&average),
        "profiles of about 2.5 KB, not {average} bytes"
    );
    c.put_many(&profiles);
    drop(profiles);
    c.add_workload("client", "h1", "10.65.1.70");
    c.add_workload("big", "h1", "10.65.1.71");
    c.add_workload("sg", "h1", "10.65.1.72");
    let megabyte = megabyte_profile("10.65.1.70").to_string();
    assert!(megabyte.len() > 1_000_000, "{} bytes", megabyte.len());
    c.put("/calico/v1/policy/profile/MEGABYTE/rules", &megabyte);
    c.put_endpoint("client", &[&profile_name(7)], &json!({}));
    c.put_endpoint("big", &["MEGABYTE"], &json!({}));
    c.put_endpoint("sg", &[&profile_name(PROFILES - 1)], &json!({}));
    let written = started.elapsed();

    // (The first agent start of a test process also checks the binary is
    // built; time it apart from the rest.)
    let _ = margay_bin();
    let agent_started = Instant::now();
    c.start_agent("h1");
    wait_for("every profile synced", Duration::from_secs(30), || {
        c.metric_sum("h1", "margay_profiles") == (PROFILES + 1) as f64
    });
    c.assert_matrix(&[
        // The 1 MB profile: its first rule, its last, and no rule at all.
        allow("client", "big", 80),
        deny("client", "big", 443),
        deny("client", "big", 5432),
        allow("sg", "big", 443),
        // A 2.5 KB profile: its one rule for the pool, after the filler.
        allow("client", "sg", 5432),
        deny("client", "sg", 80),
        allow("big", "sg", 5432),
    ]);
    eprintln!(
        "{dp:?}: data written in {written:?}; the agent synced and enforced {:?} after its start",
        agent_started.elapsed()
    );
}
