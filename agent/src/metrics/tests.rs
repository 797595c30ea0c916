//! Tests of the metrics: the rendered contract, recording, `/proc` parsing.

use margay_policy::model::ResourceKey;

use super::process::{parse_boot_time, parse_max_fds, status_kb};
use super::*;

fn sample_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|rest| rest.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn rendered_names_are_exactly_the_contract() {
    let metrics = Metrics::new("1.2.3", "nftables");
    let text = metrics.render();
    let mut got = rendered_family_names(&text);
    let mut want: Vec<String> = METRIC_NAMES.iter().map(|s| s.to_string()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "rendered:\n{text}");
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn every_family_has_help_text() {
    let text = Metrics::new("1.2.3", "nftables").render();
    let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP ")).collect();
    assert_eq!(types, helps.len());
    for help in helps {
        let words = help.split_whitespace().count();
        assert!(words >= 4, "help text too short: {help}");
    }
}

#[test]
fn help_texts_end_with_exactly_one_period() {
    let text = Metrics::new("v", "nftables").render();
    for help in text.lines().filter(|l| l.starts_with("# HELP ")) {
        assert!(help.ends_with('.') && !help.ends_with(".."), "{help}");
    }
}

#[test]
fn every_family_has_samples_from_the_start() {
    let text = Metrics::new("v", "nftables").render();
    let names = rendered_family_names(&text);
    for name in names {
        let base = name.trim_end_matches("_total").trim_end_matches("_info");
        let has_sample = text
            .lines()
            .any(|l| !l.starts_with('#') && l.starts_with(base));
        assert!(has_sample, "{name} has no samples:\n{text}");
    }
}

#[test]
fn counters_render_with_single_total_suffix() {
    let text = Metrics::new("v", "nftables").render();
    assert!(!text.contains("_total_total"));
    assert!(text.contains("# TYPE margay_datastore_events counter"));
    assert!(text.contains("margay_datastore_events_total{kind=\"workload_endpoint\"} 0"));
}

#[test]
fn build_info_carries_the_version() {
    let text = Metrics::new("0.1.0-test", "iptables").render();
    assert!(
        text.contains("margay_build_info{version=\"0.1.0-test\"} 1"),
        "{text}"
    );
}

#[test]
fn backend_series_exist_before_any_apply() {
    let text = Metrics::new("v", "iptables").render();
    assert_eq!(
        sample_value(
            &text,
            "margay_dataplane_apply_failures_total{backend=\"iptables\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample_value(
            &text,
            "margay_dataplane_apply_duration_seconds_count{backend=\"iptables\"}"
        ),
        Some(0.0)
    );
}

#[test]
fn recording_moves_the_rendered_values() {
    let metrics = Metrics::new("v", "nftables");
    let clone = metrics.clone();
    clone.set_datastore_connected(true);
    clone.datastore_event("policy");
    clone.datastore_event("policy");
    clone.datastore_resync("startup");
    clone.invalid_update("workload_endpoint");
    clone.set_invalid_objects("workload_endpoint", 3);
    clone.observe_apply("nftables", Duration::from_millis(3), true);
    clone.observe_apply("nftables", Duration::from_millis(5), false);
    clone.dataplane_writes("route", 4);
    clone.drift_repairs("chain", 1);
    clone.set_pending_updates(7);
    clone.observe_update_latency(Duration::from_millis(20));
    clone.observe_calc(Duration::from_micros(300));
    clone.set_counts(&ObjectCounts {
        local_endpoints: 2,
        set_members: 11,
        ..ObjectCounts::default()
    });
    let text = metrics.render();
    let expect = [
        ("margay_datastore_connected", 1.0),
        ("margay_datastore_events_total{kind=\"policy\"}", 2.0),
        ("margay_datastore_resyncs_total{reason=\"startup\"}", 1.0),
        (
            "margay_invalid_updates_total{kind=\"workload_endpoint\"}",
            1.0,
        ),
        ("margay_invalid_objects{kind=\"workload_endpoint\"}", 3.0),
        (
            "margay_dataplane_apply_duration_seconds_count{backend=\"nftables\"}",
            2.0,
        ),
        (
            "margay_dataplane_apply_failures_total{backend=\"nftables\"}",
            1.0,
        ),
        ("margay_dataplane_writes_total{object=\"route\"}", 4.0),
        ("margay_drift_repairs_total{object=\"chain\"}", 1.0),
        ("margay_pending_updates", 7.0),
        ("margay_update_latency_seconds_count", 1.0),
        ("margay_calc_duration_seconds_count", 1.0),
        ("margay_local_endpoints", 2.0),
        ("margay_set_members", 11.0),
    ];
    for (series, value) in expect {
        assert_eq!(
            sample_value(&text, series),
            Some(value),
            "{series} in\n{text}"
        );
    }
    let last = sample_value(&text, "margay_last_apply_timestamp_seconds").unwrap_or(0.0);
    assert!(last > 1.6e9, "last apply timestamp {last}");
    assert_eq!(metrics.last_apply_timestamp(), Some(last));
}

#[test]
fn zero_writes_do_not_create_series() {
    let metrics = Metrics::new("v", "nftables");
    metrics.dataplane_writes("made_up", 0);
    assert!(!metrics.render().contains("made_up"));
}

#[test]
fn key_kinds_cover_the_model() {
    let key = ResourceKey::GlobalConfig("LogSeverityScreen".into());
    assert!(KEY_KINDS.contains(&key_kind(&key)));
    assert!(KEY_KINDS.contains(&key_kind(&ResourceKey::Ready)));
    let bgp = ResourceKey::Bgp(margay_policy::model::BgpKey::NodeMesh);
    assert_eq!(key_kind(&bgp), "bgp");
    assert!(KEY_KINDS.contains(&"bgp"));
}

#[test]
fn parses_proc_stat_with_awkward_command_names() {
    // Fields after the name: state ppid pgrp session tty tpgid flags minflt
    // cminflt majflt cmajflt utime stime cutime cstime prio nice threads
    // itreal starttime ...
    let stat =
        "42 (we ird) name)) S 1 42 42 0 -1 4194560 10 0 0 0 250 50 0 0 20 0 3 0 12345 1000 200";
    assert_eq!(parse_stat(stat), Some((300, 12345)));
    assert_eq!(parse_stat("garbage"), None);
}

#[test]
fn parses_status_limits_and_boot_time() {
    let status = "Name:\tmargay\nVmSize:\t  1000 kB\nVmRSS:\t   200 kB\nThreads:\t5\n";
    assert_eq!(status_kb(status, "VmRSS:"), Some(200));
    assert_eq!(status_kb(status, "Threads:"), Some(5));
    let limits = "Limit Soft Hard Units\nMax open files            1024                 524288               files\n";
    assert_eq!(parse_max_fds(limits), Some(1024));
    assert_eq!(
        parse_boot_time("cpu 1 2\nbtime 1700000000\n"),
        Some(1_700_000_000)
    );
}

#[test]
fn process_metrics_are_read_from_proc() {
    let stats = ProcessStats::read().expect("/proc/self readable");
    assert!(stats.resident_bytes.unwrap_or(0) > 0);
    assert!(stats.open_fds.unwrap_or(0) >= 3);
    assert!(stats.threads.unwrap_or(0) >= 1);
    assert!(stats.start_time_seconds.unwrap_or(0.0) > 1.0e9);
}

#[test]
fn bgp_sessions_are_replaced_not_accumulated() {
    let metrics = Metrics::new("1.2.3", "nftables");
    metrics.set_bgp_sessions([("mesh", "established", 3), ("global", "active", 1)]);
    let text = metrics.render();
    assert_eq!(
        sample_value(
            &text,
            r#"margay_bgp_sessions{peer_type="mesh",state="established"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        sample_value(
            &text,
            r#"margay_bgp_sessions{peer_type="global",state="active"}"#
        ),
        Some(1.0)
    );
    metrics.set_bgp_sessions([("global", "established", 1)]);
    let text = metrics.render();
    assert_eq!(
        sample_value(
            &text,
            r#"margay_bgp_sessions{peer_type="global",state="active"}"#
        ),
        None,
        "a state left behind is gone"
    );
    assert_eq!(
        sample_value(
            &text,
            r#"margay_bgp_sessions{peer_type="mesh",state="established"}"#
        ),
        Some(0.0)
    );
}
