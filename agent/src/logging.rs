//! Logging setup and the rules that keep logs useful under bad input.
//!
//! - [`init`] installs the global `tracing` subscriber on stderr, as `text`
//!   (human lines) or `json` (one object per line: `timestamp`, `level`,
//!   `message`, `target` and the event's fields such as `endpoint`, `key`,
//!   `duration_ms`). The level comes from `--log-level`/settings unless
//!   `MARGAY_LOG` is set: then it is an `EnvFilter` directive string (e.g.
//!   `info,margay_datastore::sync=debug`) that wins, also over live level changes.
//! - [`LogHandle::set_level`] changes the level live (datastore
//!   `LogSeverityScreen`).
//! - [`RateLimiter`] / [`LogLimiter`]: lines that datastore content can
//!   trigger go through a per-kind limiter, so a flood of bad keys cannot
//!   flood the journal; suppressed lines are summed up in a summary line.
//! - [`log_startup`]: the one startup line with version, backend and settings.
//! - [`sanitize`]: datastore strings (keys, reasons) are escaped and
//!   truncated before they reach a text log line.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use margay_config::LogFormat;
use thiserror::Error;
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// Environment variable holding an `EnvFilter` directive string that, when
/// set, overrides `--log-level`.
pub const LOG_ENV: &str = margay_config::layers::ENV_LOG_FILTER;

/// Longest datastore-provided string put into a log line by [`sanitize`].
pub const MAX_LOGGED_CHARS: usize = 256;

/// Why logging could not be set up.
#[derive(Debug, Error)]
pub enum LoggingError {
    /// `--log-level` is not a level.
    #[error("unknown log level {0:?} (expected error, warn, info, debug or trace)")]
    Level(String),
    /// `MARGAY_LOG` is not a valid filter directive string.
    #[error("invalid {LOG_ENV} filter {directives:?}: {reason}")]
    Filter { directives: String, reason: String },
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// Maps a level name (also Felix's `LogSeverityScreen` names such as
/// `WARNING`, `CRITICAL`) to a `tracing` level directive.
pub fn normalize_level(level: &str) -> Option<&'static str> {
    match level.trim().to_ascii_lowercase().as_str() {
        "trace" => Some("trace"),
        "debug" => Some("debug"),
        "info" => Some("info"),
        "warn" | "warning" => Some("warn"),
        "error" | "critical" | "fatal" | "panic" => Some("error"),
        "off" | "none" => Some("off"),
        _ => None,
    }
}

/// The filter in force: `env` (the value of `MARGAY_LOG`) when set and
/// non-empty, else `level`. Returns the filter and whether it came from `env`.
pub fn build_filter(level: &str, env: Option<&str>) -> Result<(EnvFilter, bool), LoggingError> {
    if let Some(directives) = env.filter(|d| !d.trim().is_empty()) {
        let filter = EnvFilter::builder()
            .parse(directives)
            .map_err(|e| LoggingError::Filter {
                directives: directives.to_string(),
                reason: e.to_string(),
            })?;
        return Ok((filter, true));
    }
    let level = normalize_level(level).ok_or_else(|| LoggingError::Level(level.to_string()))?;
    Ok((EnvFilter::new(level), false))
}

type FilterHandle = reload::Handle<EnvFilter, Registry>;

/// Changes the log level of the installed subscriber at run time.
#[derive(Debug, Clone)]
pub struct LogHandle {
    handle: FilterHandle,
    pinned_by_env: bool,
}

impl LogHandle {
    /// Sets a new level (e.g. from `LogSeverityScreen`). Ignored (returns
    /// `Ok(false)`) while `MARGAY_LOG` pins the filter; `Ok(true)` when applied.
    pub fn set_level(&self, level: &str) -> Result<bool, LoggingError> {
        if self.pinned_by_env {
            return Ok(false);
        }
        let (filter, _) = build_filter(level, None)?;
        self.handle
            .reload(filter)
            .map_err(|e| LoggingError::Install(e.to_string()))?;
        Ok(true)
    }
}

/// A subscriber writing `format` lines to `writer`, filtered by a reloadable
/// `filter`. [`init`] uses it with stderr; tests use it with a buffer.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> (
    impl Subscriber + Send + Sync + for<'a> LookupSpan<'a>,
    FilterHandle,
)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (filter_layer, handle) = reload::Layer::new(filter);
    let fmt_layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
    };
    let subscriber = Registry::default().with(filter_layer).with(fmt_layer);
    (subscriber, handle)
}

/// Installs the global subscriber on stderr. `level` is the configured
/// level (`settings.log_level.as_str()`); `MARGAY_LOG`, if set, wins. Call
/// once, first thing in `main`; keep the [`LogHandle`] for live changes.
pub fn init(format: LogFormat, level: &str) -> Result<LogHandle, LoggingError> {
    let env = std::env::var(LOG_ENV).ok();
    let (filter, pinned_by_env) = build_filter(level, env.as_deref())?;
    let ansi = std::io::stderr().is_terminal();
    let (subscriber, handle) = subscriber(format, filter, std::io::stderr, ansi);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| LoggingError::Install(e.to_string()))?;
    Ok(LogHandle {
        handle,
        pinned_by_env,
    })
}

/// Escapes control characters (a key with a newline must not fake a second
/// log line) and truncates to [`MAX_LOGGED_CHARS`] characters.
pub fn sanitize(s: &str) -> Cow<'_, str> {
    let clean = s.chars().all(|c| !c.is_control()) && s.chars().count() <= MAX_LOGGED_CHARS;
    if clean {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(MAX_LOGGED_CHARS + 8));
    for (n, c) in s.chars().enumerate() {
        if n == MAX_LOGGED_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Hides `user:password@` in a URL (etcd endpoints may carry credentials).
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else {
        return Cow::Borrowed(url);
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => Cow::Owned(format!("{}://***@{}", &url[..scheme_end], &rest[at + 1..])),
        None => Cow::Borrowed(url),
    }
}

/// [`redact_url`] on each element of a comma-separated list.
fn redact_list(value: &str) -> String {
    value
        .split(',')
        .map(redact_url)
        .collect::<Vec<_>>()
        .join(",")
}

/// Formats settings as `name=value` pairs separated by spaces; values with
/// spaces or quotes are quoted, URLs are redacted.
pub fn format_settings(settings: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (name, value) in settings {
        if !out.is_empty() {
            out.push(' ');
        }
        let value = redact_list(value);
        if value.is_empty() || value.contains([' ', '"', '=']) {
            let _ = write!(out, "{name}={value:?}");
        } else {
            let _ = write!(out, "{name}={value}");
        }
    }
    out
}

/// Logs the startup line: version, firewall backend and the effective
/// settings. Pass every setting as `(name, value)`; never pass secrets (URL
/// credentials are redacted anyway; file *paths* are fine).
pub fn log_startup(version: &str, backend: &str, settings: &[(&str, String)]) {
    tracing::info!(
        version,
        backend,
        settings = %format_settings(settings),
        "margay starting"
    );
}

/// What the [`RateLimiter`] says about one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it. `suppressed` lines of the same kind were dropped in the
    /// previous window and not yet reported: mention the count.
    Emit { suppressed: u64 },
    /// Drop it (it is counted).
    Suppress,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    emitted: u32,
    suppressed: u64,
}

/// Per-kind limiter: at most `burst` lines per `interval` for each kind;
/// further lines are counted and reported later in one summary (either with
/// the next emitted line of that kind, or by [`RateLimiter::drain_summaries`]).
///
/// Pure: the caller passes the current time, so tests need no clock. Kinds
/// are `&'static str` on purpose: they must be fixed names from the code
/// (`invalid_key`, `apply_failed`), never datastore content, so the map
/// stays small.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    burst: u32,
    interval: Duration,
    windows: HashMap<&'static str, Window>,
}

impl RateLimiter {
    /// A limiter allowing `burst` lines per kind per `interval`.
    pub fn new(burst: u32, interval: Duration) -> Self {
        RateLimiter {
            burst: burst.max(1),
            interval,
            windows: HashMap::new(),
        }
    }

    /// Decides about one line of `kind` at time `now`.
    pub fn check(&mut self, kind: &'static str, now: Instant) -> Verdict {
        let interval = self.interval;
        let window = self.windows.entry(kind).or_insert(Window {
            start: now,
            emitted: 0,
            suppressed: 0,
        });
        let mut carried = 0;
        if now.saturating_duration_since(window.start) >= interval {
            carried = window.suppressed;
            *window = Window {
                start: now,
                emitted: 0,
                suppressed: 0,
            };
        }
        if window.emitted < self.burst {
            window.emitted += 1;
            Verdict::Emit {
                suppressed: carried,
            }
        } else {
            window.suppressed += 1;
            Verdict::Suppress
        }
    }

    /// Kinds whose window has ended with suppressed lines, with their counts;
    /// those windows are closed. Call periodically and log one summary line
    /// per entry, so a flood that stops is still reported.
    pub fn drain_summaries(&mut self, now: Instant) -> Vec<(&'static str, u64)> {
        let interval = self.interval;
        let mut out = Vec::new();
        self.windows.retain(|kind, window| {
            let ended = now.saturating_duration_since(window.start) >= interval;
            if ended && window.suppressed > 0 {
                out.push((*kind, window.suppressed));
            }
            !ended
        });
        out.sort_unstable();
        out
    }
}

/// A [`RateLimiter`] on the real clock, shareable between tasks, with
/// helpers that emit the lines.
#[derive(Debug)]
pub struct LogLimiter {
    inner: Mutex<RateLimiter>,
}

impl Default for LogLimiter {
    /// 10 lines per kind per minute.
    fn default() -> Self {
        Self::new(10, Duration::from_secs(60))
    }
}

impl LogLimiter {
    /// `burst` lines per kind per `interval`.
    pub fn new(burst: u32, interval: Duration) -> Self {
        LogLimiter {
            inner: Mutex::new(RateLimiter::new(burst, interval)),
        }
    }

    /// The verdict for one line of `kind` now.
    pub fn check(&self, kind: &'static str) -> Verdict {
        match self.inner.lock() {
            Ok(mut limiter) => limiter.check(kind, Instant::now()),
            Err(poisoned) => poisoned.into_inner().check(kind, Instant::now()),
        }
    }

    /// Logs (rate-limited, kind `invalid_key`) that a datastore key was
    /// ignored as invalid, with the key and the reason, both sanitized.
    pub fn warn_invalid_key(&self, key: &str, reason: &dyn std::fmt::Display) {
        if let Verdict::Emit { suppressed } = self.check("invalid_key") {
            let reason = reason.to_string();
            tracing::warn!(
                key = %sanitize(key),
                reason = %sanitize(&reason),
                suppressed,
                "invalid datastore key ignored"
            );
        }
    }

    /// Logs one summary line per kind whose suppressed lines were not yet
    /// reported. Call from a periodic tick (e.g. the refresh timer).
    pub fn flush_summaries(&self) {
        let summaries = match self.inner.lock() {
            Ok(mut limiter) => limiter.drain_summaries(Instant::now()),
            Err(poisoned) => poisoned.into_inner().drain_summaries(Instant::now()),
        };
        for (kind, suppressed) in summaries {
            tracing::warn!(kind, suppressed, "similar log lines suppressed");
        }
    }
}

#[cfg(test)]
mod tests;
