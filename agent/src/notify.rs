//! systemd notifications (`Type=notify`): READY, STATUS, WATCHDOG, STOPPING.
//!
//! A thin wrapper around `sd-notify`. When `NOTIFY_SOCKET` is unset (not
//! started by systemd, or in tests) every call is a no-op. Notification
//! failures are logged at debug level and otherwise ignored: systemd being
//! unreachable must never stop the agent.
//!
//! The agent's contract with the unit file (`deploy/margay.service`):
//! - [`Notifier::ready`] once, after the first successful dataplane apply;
//! - [`Notifier::status`] with a one-line [`StatusSummary`] after applies;
//! - [`Notifier::watchdog`] from the main loop, at least every
//!   [`Notifier::watchdog_interval`] (half of `WatchdogSec`), only while the
//!   loop is healthy, so a hung loop gets the service restarted;
//! - [`Notifier::stopping`] when shutting down.

use std::fmt;
use std::time::Duration;

use sd_notify::NotifyState;

/// Sends notifications to systemd, if it is listening.
#[derive(Debug, Clone)]
pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the
    /// environment (the variables are left in place).
    pub fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        let watchdog = sd_notify::watchdog_enabled()
            .filter(|_| enabled)
            .and_then(watchdog_ping_interval);
        Notifier { enabled, watchdog }
    }

    /// A notifier that never sends anything.
    pub fn disabled() -> Self {
        Notifier {
            enabled: false,
            watchdog: None,
        }
    }

    /// True when systemd asked for notifications.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// How often to call [`Self::watchdog`]: half of `WatchdogSec`, or
    /// `None` when the unit has no watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// The service is up: sent once, after the first successful apply,
    /// together with a first status line.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
    }

    /// A short human-readable state shown by `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(&one_line(status))]);
    }

    /// Keep-alive for `WatchdogSec`; a no-op when the watchdog is off.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    /// The service is shutting down.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(error) = sd_notify::notify(states) {
            tracing::debug!(%error, "cannot notify systemd");
        }
    }
}

/// The watchdog timeout (`WATCHDOG_USEC`) halved, as systemd recommends;
/// `None` for 0.
fn watchdog_ping_interval(timeout: Duration) -> Option<Duration> {
    (!timeout.is_zero()).then(|| timeout / 2)
}

/// Status text must be one line (the protocol is newline-separated).
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// The figures shown in the STATUS line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusSummary {
    /// The etcd watch is established.
    pub datastore_connected: bool,
    /// `/calico/v1/Ready` is `true`.
    pub datastore_ready: bool,
    /// Active local endpoints programmed.
    pub local_endpoints: u64,
    /// Routes programmed.
    pub routes: u64,
    /// Firewall chains programmed.
    pub chains: u64,
    /// Datastore keys ignored as invalid.
    pub invalid_objects: u64,
    /// Updates received and not yet applied.
    pub pending_updates: u64,
}

impl fmt::Display for StatusSummary {
    /// E.g. `in sync; 3 endpoints, 5 routes, 12 chains` or
    /// `datastore disconnected; 3 endpoints, ... ; 2 invalid keys`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match (self.datastore_connected, self.datastore_ready) {
            (false, _) => "datastore disconnected",
            (true, false) => "waiting for datastore Ready",
            (true, true) if self.pending_updates > 0 => "applying",
            (true, true) => "in sync",
        };
        write!(
            f,
            "{state}; {} endpoints, {} routes, {} chains",
            self.local_endpoints, self.routes, self.chains
        )?;
        if self.pending_updates > 0 {
            write!(f, "; {} pending", self.pending_updates)?;
        }
        if self.invalid_objects > 0 {
            write!(f, "; {} invalid keys", self.invalid_objects)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_well() {
        let s = StatusSummary {
            datastore_connected: true,
            datastore_ready: true,
            local_endpoints: 3,
            routes: 5,
            chains: 12,
            ..StatusSummary::default()
        };
        assert_eq!(s.to_string(), "in sync; 3 endpoints, 5 routes, 12 chains");
        let s = StatusSummary {
            datastore_connected: false,
            invalid_objects: 2,
            pending_updates: 4,
            ..s
        };
        assert_eq!(
            s.to_string(),
            "datastore disconnected; 3 endpoints, 5 routes, 12 chains; 4 pending; 2 invalid keys"
        );
        let s = StatusSummary {
            datastore_connected: true,
            datastore_ready: false,
            ..StatusSummary::default()
        };
        assert!(s.to_string().starts_with("waiting for datastore Ready"));
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout() {
        assert_eq!(
            watchdog_ping_interval(Duration::from_secs(30)),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_ping_interval(Duration::ZERO), None);
    }

    #[test]
    fn status_text_is_kept_on_one_line() {
        assert_eq!(one_line("a\nb\rc"), "a b c");
    }

    #[test]
    fn disabled_notifier_sends_nothing_and_has_no_watchdog() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_interval(), None);
        // No socket: these must simply return.
        n.ready("x");
        n.status("x");
        n.watchdog();
        n.stopping();
    }
}
