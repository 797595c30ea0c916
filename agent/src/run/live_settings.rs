//! Settings that change while the agent runs (datastore `/config` keys,
//! the config file on SIGHUP): re-resolve, refuse what is unsafe, apply
//! what may change live, warn about what needs a restart.

use std::collections::BTreeSet;

use margay_config::{Resolved, Setting, Settings};
use margay_datastore::status::ReportConfig;

use super::{Agent, Driver};
use crate::dataplane_setup::firewall_settings;
use crate::settings::merge_reload;

impl<D: Driver> Agent<D> {
    /// Re-resolves settings with the datastore layers and applies them live.
    pub(super) fn refresh_datastore_settings(&mut self) {
        let global = self.datastore.global().clone();
        let host = self.datastore.host().clone();
        match self.loader.resolve_with_datastore(global, host) {
            Ok(resolved) => self.adopt(resolved, "datastore"),
            // Only local layers can fail, and they resolved before.
            Err(e) => tracing::error!(error = %format!("{e:#}"), "settings no longer resolve"),
        }
    }

    /// SIGHUP: re-reads the config file and applies what may change live.
    pub(super) fn reload_config_file(&mut self) {
        tracing::info!(file = %self.loader.config_file().path.display(), "reloading the config file");
        match self.loader.reload_file() {
            Ok(resolved) => self.adopt(resolved, "config file"),
            Err(e) => tracing::error!(
                error = %format!("{e:#}"),
                "config file reload failed; keeping the settings in force"
            ),
        }
    }

    /// Takes the live part of `resolved`; warns about the rest.
    fn adopt(&mut self, resolved: Resolved, source: &str) {
        let warned = std::mem::take(&mut self.warned);
        for w in &resolved.warnings {
            let text = w.to_string();
            if !warned.contains(&text) {
                tracing::warn!(warning = %crate::logging::sanitize(&text), "setting ignored or questionable");
                crate::host_guard::count_rejected_setting(&self.out.metrics, w);
            }
            self.warned.insert(text);
        }
        let (mut merged, mut live, restart) = merge_reload(&self.settings, &resolved.settings);
        if live.contains(&Setting::InterfacePrefix) && !self.prefixes_safe(&merged, source, &warned)
        {
            merged.interface_prefixes = self.settings.interface_prefixes.clone();
            live.retain(|s| *s != Setting::InterfacePrefix);
        }
        for s in &restart {
            tracing::warn!(setting = %s, source, "changing this setting needs a restart; keeping the current value");
        }
        if live.is_empty() {
            return;
        }
        let names: Vec<&str> = live.iter().map(|s| s.key()).collect();
        tracing::info!(settings = %names.join(","), source, "settings changed");
        self.settings = merged;
        self.apply_live(&live);
    }

    /// False (logged and counted once while it stays, `warned` being what
    /// was logged before) when `next`'s interface prefixes match an uplink:
    /// the host's own traffic would be firewalled.
    fn prefixes_safe(&mut self, next: &Settings, source: &str, warned: &BTreeSet<String>) -> bool {
        let conflicts =
            crate::host_guard::uplink_conflicts(&next.interface_prefixes, &self.dp.uplinks());
        if conflicts.is_empty() {
            return true;
        }
        let text = crate::host_guard::describe(&conflicts);
        if !warned.contains(&text) {
            crate::host_guard::report_rejected_prefixes(
                &self.out.metrics,
                &next.interface_prefixes,
                &self.settings.interface_prefixes,
                &text,
                source,
            );
        }
        self.warned.insert(text);
        false
    }

    fn apply_live(&mut self, changed: &[Setting]) {
        if changed.contains(&Setting::InterfacePrefix) {
            self.calc
                .set_interface_prefixes(self.settings.interface_prefixes.clone());
            self.conflicts
                .observe(&self.calc, &self.out.metrics, &self.limiter);
        }
        if changed.contains(&Setting::InterHostRoutes) {
            self.adopt_inter_host_routes();
        }
        self.collect_calc_changes();
        let firewall = firewall_settings(&self.settings, &self.firewall.own_endpoints);
        if firewall != self.firewall {
            self.firewall = firewall;
            self.pending.settings = true;
        }
        if changed.contains(&Setting::LogLevel) {
            if let Some(log) = &self.out.log {
                if let Err(e) = log.set_level(self.settings.log_level.as_str()) {
                    tracing::warn!(error = %e, "cannot change the log level");
                }
            }
        }
        let report = ReportConfig::from_settings(&self.settings);
        self.out
            .report_config
            .send_if_modified(|c| std::mem::replace(c, report.clone()) != report);
    }
}
