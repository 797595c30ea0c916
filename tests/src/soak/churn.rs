//! The soak's update stream: a deterministic pseudo-random mix of workload
//! endpoint (local and remote), profile (rules, tags, labels), tier and
//! policy adds, updates and deletes, handed out as transactions of distinct
//! keys. Every document is valid Calico v1 data, so whatever the agent ends
//! up with is fully determined by what was written.
//!
//! The generator remembers which keys exist, so a delete always removes
//! something and every operation is a real change the agent must see.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::sandbox::{ORCHESTRATOR, PREFIX};

/// How many objects of each kind the stream moves between.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Endpoints on the agent's own host (`h1`), one per interface
    /// `cali<i>`; at most 250.
    pub local: usize,
    /// Endpoints on the other hosts (`h2`, `h3`); at most 250.
    pub remote: usize,
    /// Profiles `P0`, `P1`, ….
    pub profiles: usize,
    /// Policies per tier (tiers `soak` and `soak2`).
    pub policies: usize,
}

/// One key change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Write `key` = `value`.
    Put(String, String),
    /// Delete `key` (which exists).
    Delete(String),
}

impl Op {
    /// The key this operation changes.
    pub fn key(&self) -> &str {
        match self {
            Op::Put(k, _) | Op::Delete(k) => k,
        }
    }
}

/// The other hosts' addresses (`bird_ip`), on the sandbox fabric.
pub const REMOTE_HOSTS: [(&str, &str); 2] = [("h2", "192.0.2.12"), ("h3", "192.0.2.13")];

/// The IPv4 pools: local and remote endpoints, and the soak's marker.
pub const POOLS: [&str; 3] = ["10.65.0.0/16", "10.66.0.0/16", "10.99.0.0/16"];

const ROLES: [&str; 4] = ["web", "db", "app", "cache"];
const TIERS: [&str; 2] = ["soak", "soak2"];

/// The generator.
#[derive(Debug)]
pub struct Churn {
    state: u64,
    shape: Shape,
    present: HashSet<String>,
}

impl Churn {
    /// A stream for `shape`, the same for the same `seed`.
    pub fn new(seed: u64, shape: Shape) -> Self {
        assert!(shape.local <= 250 && shape.remote <= 250, "shape too big");
        assert!(shape.profiles > 0 && shape.policies > 0, "shape too small");
        Churn {
            state: seed | 1,
            shape,
            present: HashSet::new(),
        }
    }

    /// The interface name of local endpoint slot `i`.
    pub fn local_iface(i: usize) -> String {
        format!("cali{i}")
    }

    /// What every run starts from: the other hosts' addresses, the pools, both tiers,
    /// every profile and half of the endpoints and policies.
    pub fn seed(&mut self) -> Vec<Op> {
        let mut ops: Vec<Op> = REMOTE_HOSTS
            .iter()
            .map(|(h, ip)| Op::Put(format!("{PREFIX}/host/{h}/bird_ip"), (*ip).to_owned()))
            .collect();
        // Remote addresses get routes only inside a pool.
        for cidr in POOLS {
            let key = format!("{PREFIX}/ipam/v4/pool/{}", cidr.replace('/', "-"));
            let doc = json!({"cidr": cidr, "masquerade": false});
            ops.push(Op::Put(key, doc.to_string()));
        }
        for t in TIERS {
            ops.push(self.tier(t));
        }
        for p in 0..self.shape.profiles {
            ops.push(self.profile_rules(p));
            ops.push(self.profile_tags(p));
            ops.push(self.profile_labels(p));
        }
        for i in (0..self.shape.local).step_by(2) {
            ops.push(self.local_endpoint(i));
        }
        for j in (0..self.shape.remote).step_by(2) {
            ops.push(self.remote_endpoint(j));
        }
        for t in 0..TIERS.len() {
            for m in (0..self.shape.policies).step_by(2) {
                ops.push(self.policy(t, m));
            }
        }
        for op in &ops {
            self.note(op);
        }
        ops
    }

    /// One transaction: between 1 and `max` operations on distinct keys.
    pub fn batch(&mut self, max: usize) -> Vec<Op> {
        let want = 1 + self.below(max.max(1));
        let mut keys = HashSet::new();
        let mut ops = Vec::with_capacity(want);
        while ops.len() < want {
            let op = self.one();
            if keys.insert(op.key().to_owned()) {
                self.note(&op);
                ops.push(op);
            }
        }
        ops
    }

    fn note(&mut self, op: &Op) {
        match op {
            Op::Put(k, _) => self.present.insert(k.clone()),
            Op::Delete(k) => self.present.remove(k),
        };
    }

    /// One change, not yet noted.
    fn one(&mut self) -> Op {
        let roll = self.below(100);
        let op = match roll {
            0..=14 => {
                let i = self.below(self.shape.local);
                self.local_endpoint(i)
            }
            15..=54 => {
                let j = self.below(self.shape.remote);
                self.remote_endpoint(j)
            }
            55..=64 => {
                let p = self.below(self.shape.profiles);
                self.profile_rules(p)
            }
            65..=69 => {
                let p = self.below(self.shape.profiles);
                self.profile_tags(p)
            }
            70..=74 => {
                let p = self.below(self.shape.profiles);
                self.profile_labels(p)
            }
            75..=94 => {
                let t = self.below(TIERS.len());
                let m = self.below(self.shape.policies);
                self.policy(t, m)
            }
            _ => {
                let t = self.below(TIERS.len());
                self.tier(TIERS[t])
            }
        };
        // A quarter of the changes to an existing key remove it; the first
        // tier's metadata stays so its policies keep mattering.
        let keep = op.key().ends_with("/tier/soak/metadata");
        if !keep && self.present.contains(op.key()) && self.below(4) == 0 {
            Op::Delete(op.key().to_owned())
        } else {
            op
        }
    }

    fn local_endpoint(&mut self, i: usize) -> Op {
        let key = format!("{PREFIX}/host/h1/workload/{ORCHESTRATOR}/wl{i}/endpoint/eth0");
        let addr = format!("10.65.{}.{}/32", self.below(4), i + 1);
        let mut doc = self.endpoint_doc(&Self::local_iface(i), &addr);
        doc["mac"] = json!(format!("ee:ee:ee:00:00:{i:02x}"));
        Op::Put(key, doc.to_string())
    }

    fn remote_endpoint(&mut self, j: usize) -> Op {
        let host = REMOTE_HOSTS[j % REMOTE_HOSTS.len()].0;
        let key = format!("{PREFIX}/host/{host}/workload/{ORCHESTRATOR}/r{j}/endpoint/eth0");
        let addr = format!("10.66.{}.{}/32", self.below(4), j + 1);
        let doc = self.endpoint_doc(&format!("cali{j}"), &addr);
        Op::Put(key, doc.to_string())
    }

    fn endpoint_doc(&mut self, iface: &str, addr: &str) -> Value {
        let state = if self.below(10) == 0 {
            "inactive"
        } else {
            "active"
        };
        let profiles: Vec<String> = (0..1 + self.below(2))
            .map(|_| format!("P{}", self.below(self.shape.profiles)))
            .collect();
        json!({
            "state": state,
            "name": iface,
            "profile_ids": profiles,
            "ipv4_nets": [addr],
            "ipv6_nets": [],
            "labels": self.labels(),
        })
    }

    fn labels(&mut self) -> Value {
        json!({
            "role": ROLES[self.below(ROLES.len())],
            "gen": self.below(4).to_string(),
        })
    }

    fn profile_rules(&mut self, p: usize) -> Op {
        let key = format!("{PREFIX}/policy/profile/P{p}/rules");
        let doc = json!({
            "inbound_rules": self.rules(),
            "outbound_rules": self.rules(),
        });
        Op::Put(key, doc.to_string())
    }

    fn profile_tags(&mut self, p: usize) -> Op {
        let key = format!("{PREFIX}/policy/profile/P{p}/tags");
        let tags: Vec<String> = (0..self.below(3))
            .map(|_| format!("T{}", self.below(4)))
            .collect();
        Op::Put(key, json!(tags).to_string())
    }

    fn profile_labels(&mut self, p: usize) -> Op {
        let key = format!("{PREFIX}/policy/profile/P{p}/labels");
        Op::Put(
            key,
            json!({"zone": format!("z{}", self.below(3))}).to_string(),
        )
    }

    fn tier(&mut self, tier: &str) -> Op {
        let key = format!("{PREFIX}/policy/tier/{tier}/metadata");
        Op::Put(key, json!({"order": 10 + self.below(20)}).to_string())
    }

    fn policy(&mut self, t: usize, m: usize) -> Op {
        let key = format!("{PREFIX}/policy/tier/{}/policy/pol{m}", TIERS[t]);
        let doc = json!({
            "selector": self.selector(),
            "order": self.below(100),
            "inbound_rules": self.rules(),
            "outbound_rules": self.rules(),
        });
        Op::Put(key, doc.to_string())
    }

    fn selector(&mut self) -> String {
        let role = ROLES[self.below(ROLES.len())];
        match self.below(5) {
            0 => format!("role == '{role}'"),
            1 => format!("gen in {{'{}', '{}'}}", self.below(4), self.below(4)),
            2 => format!("role != '{role}' && has(gen)"),
            3 => format!("zone == 'z{}' || role == '{role}'", self.below(3)),
            _ => "all()".to_owned(),
        }
    }

    fn rules(&mut self) -> Vec<Value> {
        (0..self.below(4)).map(|_| self.rule()).collect()
    }

    fn rule(&mut self) -> Value {
        let action = ["allow", "deny", "next-tier", "allow"][self.below(4)];
        match self.below(6) {
            0 => json!({"action": action, "protocol": "tcp", "dst_ports": [1 + self.below(1024)]}),
            1 => json!({"action": action, "src_tag": format!("T{}", self.below(4))}),
            2 => {
                let lo = 1000 + self.below(1000);
                json!({"action": action, "protocol": "udp", "dst_ports": [format!("{lo}:{}", lo + 50)]})
            }
            3 => json!({"action": action, "src_selector": self.selector()}),
            4 => json!({"action": action, "dst_net": format!("10.66.{}.0/24", self.below(4))}),
            _ => {
                json!({"action": action, "protocol": "icmp", "!src_tag": format!("T{}", self.below(4))})
            }
        }
    }

    /// A number in `0..n` (xorshift64*).
    fn below(&mut self, n: usize) -> usize {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let x = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
        (x % n.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape {
        local: 4,
        remote: 10,
        profiles: 3,
        policies: 2,
    };

    #[test]
    fn batches_have_distinct_keys_and_deletes_hit_existing_keys() {
        let mut churn = Churn::new(7, SHAPE);
        let mut present: HashSet<String> =
            churn.seed().iter().map(|o| o.key().to_owned()).collect();
        let mut deletes = 0;
        for _ in 0..500 {
            let batch = churn.batch(20);
            assert!(!batch.is_empty() && batch.len() <= 20);
            let keys: HashSet<&str> = batch.iter().map(Op::key).collect();
            assert_eq!(keys.len(), batch.len(), "duplicate key in {batch:?}");
            for op in batch {
                match op {
                    Op::Put(k, v) => {
                        assert!(serde_json::from_str::<Value>(&v).is_ok() || !v.starts_with('{'));
                        present.insert(k);
                    }
                    Op::Delete(k) => {
                        assert!(present.remove(&k), "delete of absent {k}");
                        deletes += 1;
                    }
                }
            }
        }
        assert!(deletes > 100, "only {deletes} deletes");
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let mut a = Churn::new(42, SHAPE);
        let mut b = Churn::new(42, SHAPE);
        assert_eq!(a.seed(), b.seed());
        for _ in 0..50 {
            assert_eq!(a.batch(10), b.batch(10));
        }
    }
}
