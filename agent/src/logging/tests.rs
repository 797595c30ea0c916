//! Tests of logging: line formats, levels, the rate limiter, sanitising and URL redaction.

use super::*;
use std::sync::Arc;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::ErrorKind::Other)?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf8")
    }
}

fn capture(format: LogFormat, level: &str, f: impl FnOnce()) -> String {
    let buffer = Buffer::default();
    let (filter, _) = build_filter(level, None).expect("filter");
    let (sub, _) = subscriber(format, filter, buffer.clone(), false);
    tracing::subscriber::with_default(sub, f);
    buffer.text()
}

#[test]
fn json_lines_have_timestamp_level_message_and_fields() {
    let out = capture(LogFormat::Json, "info", || {
        tracing::info!(endpoint = "cali123", duration_ms = 7u64, "applied");
        tracing::warn!(key = "/calico/v1/x", "bad key");
        tracing::debug!("filtered out");
    });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let first: serde_json::Value = serde_json::from_str(lines[0]).expect("json line");
    assert!(first["timestamp"].as_str().is_some_and(|t| t.contains('T')));
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["message"], "applied");
    assert_eq!(first["endpoint"], "cali123");
    assert_eq!(first["duration_ms"], 7);
    let second: serde_json::Value = serde_json::from_str(lines[1]).expect("json line");
    assert_eq!(second["level"], "WARN");
    assert_eq!(second["key"], "/calico/v1/x");
}

#[test]
fn text_lines_carry_level_message_and_fields() {
    let out = capture(LogFormat::Text, "debug", || {
        tracing::debug!(profile = "web", "recalculated");
    });
    assert!(out.contains("DEBUG"), "{out}");
    assert!(out.contains("recalculated"));
    assert!(
        out.contains("profile=\"web\"") || out.contains("profile=web"),
        "{out}"
    );
}

#[test]
fn startup_line_has_version_backend_and_settings() {
    let out = capture(LogFormat::Json, "info", || {
        log_startup(
            "0.1.0",
            "nftables",
            &[
                ("hostname", "node-1".to_string()),
                ("etcd_endpoints", "https://u:secret@etcd:2379".to_string()),
            ],
        );
    });
    let line: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(line["version"], "0.1.0");
    assert_eq!(line["backend"], "nftables");
    let settings = line["settings"].as_str().expect("settings field");
    assert!(settings.contains("hostname=node-1"), "{settings}");
    assert!(!settings.contains("secret"), "{settings}");
}

#[test]
fn env_filter_wins_over_level_and_pins_it() {
    let (_, from_env) = build_filter("info", Some("warn,margay=debug")).expect("filter");
    assert!(from_env);
    let (_, from_env) = build_filter("info", Some("  ")).expect("filter");
    assert!(!from_env, "blank MARGAY_LOG is ignored");
    assert!(matches!(
        build_filter("info", Some("margay=[")),
        Err(LoggingError::Filter { .. })
    ));
    assert!(matches!(
        build_filter("loud", None),
        Err(LoggingError::Level(_))
    ));
}

#[test]
fn level_names_include_felix_spellings() {
    assert_eq!(normalize_level("WARNING"), Some("warn"));
    assert_eq!(normalize_level("Critical"), Some("error"));
    assert_eq!(normalize_level("info"), Some("info"));
    assert_eq!(normalize_level("verbose"), None);
}

#[test]
fn live_level_change_applies_unless_pinned() {
    let buffer = Buffer::default();
    let (filter, _) = build_filter("warn", None).expect("filter");
    let (sub, handle) = subscriber(LogFormat::Text, filter, buffer.clone(), false);
    let live = LogHandle {
        handle: handle.clone(),
        pinned_by_env: false,
    };
    tracing::subscriber::with_default(sub, || {
        tracing::info!("before");
        assert_eq!(live.set_level("INFO").ok(), Some(true));
        tracing::info!("after");
    });
    let out = buffer.text();
    assert!(!out.contains("before") && out.contains("after"), "{out}");
    let pinned = LogHandle {
        handle,
        pinned_by_env: true,
    };
    assert_eq!(pinned.set_level("debug").ok(), Some(false));
}

#[test]
fn limiter_allows_burst_then_suppresses_and_reports() {
    let t0 = Instant::now();
    let mut limiter = RateLimiter::new(3, Duration::from_secs(60));
    for _ in 0..3 {
        assert_eq!(
            limiter.check("invalid_key", t0),
            Verdict::Emit { suppressed: 0 }
        );
    }
    for _ in 0..5 {
        assert_eq!(
            limiter.check("invalid_key", t0 + Duration::from_secs(1)),
            Verdict::Suppress
        );
    }
    // Another kind has its own budget.
    assert_eq!(
        limiter.check("apply_failed", t0),
        Verdict::Emit { suppressed: 0 }
    );
    // Next window: the first line carries the suppressed count.
    assert_eq!(
        limiter.check("invalid_key", t0 + Duration::from_secs(60)),
        Verdict::Emit { suppressed: 5 }
    );
    assert_eq!(
        limiter.check("invalid_key", t0 + Duration::from_secs(61)),
        Verdict::Emit { suppressed: 0 }
    );
}

#[test]
fn limiter_summaries_report_once_when_the_flood_stops() {
    let t0 = Instant::now();
    let mut limiter = RateLimiter::new(1, Duration::from_secs(10));
    assert_eq!(
        limiter.check("invalid_key", t0),
        Verdict::Emit { suppressed: 0 }
    );
    assert_eq!(limiter.check("invalid_key", t0), Verdict::Suppress);
    assert_eq!(limiter.check("invalid_key", t0), Verdict::Suppress);
    assert_eq!(limiter.check("quiet", t0), Verdict::Emit { suppressed: 0 });
    assert!(limiter
        .drain_summaries(t0 + Duration::from_secs(9))
        .is_empty());
    assert_eq!(
        limiter.drain_summaries(t0 + Duration::from_secs(10)),
        vec![("invalid_key", 2)]
    );
    assert!(limiter
        .drain_summaries(t0 + Duration::from_secs(30))
        .is_empty());
    // Reported already: the next line starts clean.
    assert_eq!(
        limiter.check("invalid_key", t0 + Duration::from_secs(31)),
        Verdict::Emit { suppressed: 0 }
    );
}

#[test]
fn limited_warnings_stop_after_the_burst() {
    let limiter = LogLimiter::new(2, Duration::from_secs(3600));
    let out = capture(LogFormat::Json, "info", || {
        for n in 0..50 {
            limiter.warn_invalid_key(&format!("/calico/v1/bad/{n}"), &"not json");
        }
    });
    assert_eq!(out.lines().count(), 2, "{out}");
}

#[test]
fn sanitize_escapes_control_chars_and_truncates() {
    assert_eq!(sanitize("/calico/v1/ok"), "/calico/v1/ok");
    assert_eq!(sanitize("a\nfake line"), "a\\nfake line");
    let long = "x".repeat(1000);
    let cut = sanitize(&long);
    assert_eq!(cut.chars().count(), MAX_LOGGED_CHARS + 1);
    assert!(cut.ends_with('…'));
}

#[test]
fn redact_url_hides_credentials_only() {
    assert_eq!(
        redact_url("https://user:pw@etcd:2379/x"),
        "https://***@etcd:2379/x"
    );
    assert_eq!(redact_url("http://127.0.0.1:2379"), "http://127.0.0.1:2379");
    assert_eq!(redact_url("not a url"), "not a url");
    assert_eq!(
        format_settings(&[
            ("a", "1".into()),
            ("b", "two words".into()),
            ("c", String::new()),
            ("e", "http://x:y@h1:1,http://h2:2".into()),
        ]),
        "a=1 b=\"two words\" c=\"\" e=http://***@h1:1,http://h2:2"
    );
}
