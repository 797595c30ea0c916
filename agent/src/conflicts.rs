//! Endpoint conflicts found by the calculation (two local endpoints claiming
//! one interface, or one address on different interfaces; each fails closed,
//! see `margay_policy::calc`), turned into log lines and the
//! `margay_endpoint_conflicts` gauge. A conflict is logged once when it
//! appears or its claimants change, with every key involved, and once when
//! it is resolved; lines are rate-limited (datastore content triggers them).

use std::collections::BTreeMap;

use margay_policy::calc::{key_text, CalcEngine, ConflictSubject};
use margay_policy::desired::WorkloadEndpointKey;

use crate::logging::{sanitize, LogLimiter, Verdict};
use crate::metrics::{Metrics, CONFLICT_KINDS};

/// The conflicts last reported.
#[derive(Debug, Default)]
pub struct ConflictLog {
    generation: Option<u64>,
    known: BTreeMap<ConflictSubject, Vec<WorkloadEndpointKey>>,
}

impl ConflictLog {
    /// Reports what changed since the last call (cheap when nothing did).
    pub fn observe(&mut self, calc: &CalcEngine, metrics: &Metrics, limiter: &LogLimiter) {
        let generation = calc.conflicts_generation();
        if self.generation == Some(generation) {
            return;
        }
        self.generation = Some(generation);
        let now: BTreeMap<_, _> = calc
            .conflicts()
            .into_iter()
            .map(|c| (c.subject, c.keys))
            .collect();
        for (subject, keys) in &now {
            if self.known.get(subject) != Some(keys) {
                log_conflict(limiter, subject, keys);
            }
        }
        for (subject, keys) in &self.known {
            if !now.contains_key(subject) {
                log_resolved(limiter, subject, keys);
            }
        }
        for kind in CONFLICT_KINDS {
            let n = now.keys().filter(|s| s.kind() == *kind).count();
            metrics.set_endpoint_conflicts(kind, n as u64);
        }
        self.known = now;
    }
}

fn keys_text(keys: &[WorkloadEndpointKey]) -> String {
    let text: Vec<String> = keys.iter().map(key_text).collect();
    sanitize(&text.join(", ")).into_owned()
}

fn log_conflict(limiter: &LogLimiter, subject: &ConflictSubject, keys: &[WorkloadEndpointKey]) {
    if let Verdict::Emit { suppressed } = limiter.check("endpoint_conflict") {
        tracing::warn!(
            conflict = %sanitize(&subject.to_string()),
            kind = subject.kind(),
            keys = %keys_text(keys),
            suppressed,
            "endpoint conflict: several local endpoints claim the same {}; their interfaces drop all traffic and no route moves until all but one key goes away",
            subject.kind()
        );
    }
}

fn log_resolved(limiter: &LogLimiter, subject: &ConflictSubject, keys: &[WorkloadEndpointKey]) {
    if let Verdict::Emit { suppressed } = limiter.check("endpoint_conflict") {
        tracing::info!(
            conflict = %sanitize(&subject.to_string()),
            kind = subject.kind(),
            keys = %keys_text(keys),
            suppressed,
            "endpoint conflict resolved"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/calico/v1";

    fn gauge(metrics: &Metrics, kind: &str) -> String {
        let want = format!("margay_endpoint_conflicts{{kind=\"{kind}\"}} ");
        metrics
            .render()
            .lines()
            .find(|l| l.starts_with(&want))
            .unwrap_or_else(|| panic!("no {want}"))
            .trim_start_matches(&want)
            .to_owned()
    }

    fn put(calc: &mut CalcEngine, key: &str, iface: &str, addr: &str) {
        let doc = format!(
            r#"{{"state":"active","name":"{iface}","profile_ids":["p"],"ipv4_nets":["{addr}"]}}"#
        );
        calc.apply_raw(P, &format!("{P}/host/h1/workload/{key}"), Some(&doc))
            .expect("valid endpoint");
    }

    #[test]
    fn conflicts_are_counted_by_kind_and_cleared_when_resolved() {
        let metrics = Metrics::new("test", "nftables");
        let limiter = LogLimiter::default();
        let mut calc = CalcEngine::new("h1");
        let mut log = ConflictLog::default();
        put(&mut calc, "k8s/w2/endpoint/e2", "caliw2", "10.99.0.2/32");
        log.observe(&calc, &metrics, &limiter);
        assert_eq!(gauge(&metrics, "interface"), "0");
        put(&mut calc, "aaa/x/endpoint/x", "caliw2", "10.99.0.2/32");
        put(&mut calc, "k8s/w3/endpoint/e3", "caliw3", "10.99.0.9/32");
        put(&mut calc, "k8s/w4/endpoint/e4", "caliw4", "10.99.0.9/32");
        log.observe(&calc, &metrics, &limiter);
        assert_eq!(gauge(&metrics, "interface"), "1");
        assert_eq!(gauge(&metrics, "address"), "1");
        calc.apply_raw(P, &format!("{P}/host/h1/workload/aaa/x/endpoint/x"), None)
            .expect("delete");
        log.observe(&calc, &metrics, &limiter);
        assert_eq!(gauge(&metrics, "interface"), "0");
        assert_eq!(gauge(&metrics, "address"), "1");
        assert_eq!(log.known.len(), 1);
    }
}
