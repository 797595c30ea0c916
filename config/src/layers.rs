//! Layering: picks each setting's value from the highest layer that has one.
//!
//! Layers, highest first: command line, `MARGAY_*` environment, Calico-era
//! environment (`ETCD_ENDPOINTS`, ...), config file, host datastore key,
//! global datastore key, default. A bad value from a local layer is an error;
//! a bad datastore value is a warning and the next layer down applies.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use crate::error::{Origin, SettingsError, SettingsErrors};
use crate::setting::{Setting, LEGACY_ENV, SPECS};
use crate::Settings;

/// Environment variables with the `MARGAY_` prefix that are not settings but
/// are known (the config file location).
pub const ENV_CONFIG_FILE: &str = "MARGAY_CONFIG";

/// The variable holding a log filter directive string (read by the agent's
/// logging, not a setting).
pub const ENV_LOG_FILTER: &str = "MARGAY_LOG";

/// The raw material of a resolution. Everything is text already read by the
/// caller; nothing here touches files, the environment or the network.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Options given on the command line, by snake_case key (`etcd_endpoints`).
    pub command_line: BTreeMap<String, String>,
    /// The process environment (every variable; only ours are read).
    pub environment: BTreeMap<String, String>,
    /// The config file's TOML text, when there is a file.
    pub config_file: Option<String>,
    /// This host's datastore settings (`/host/<h>/config/<Name>`), by CamelCase name.
    pub host_config: BTreeMap<String, String>,
    /// Global datastore settings (`/config/<Name>`), by CamelCase name.
    pub global_config: BTreeMap<String, String>,
    /// The kernel's hostname, the default for `hostname`.
    pub kernel_hostname: Option<String>,
}

impl Inputs {
    /// Sets the environment from an iterator such as `std::env::vars()`.
    pub fn with_environment<I>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (String, String)>,
    {
        self.environment = vars.into_iter().collect();
        self
    }
}

/// A successful resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The settings.
    pub settings: Settings,
    /// Where each setting's value came from.
    pub origins: BTreeMap<Setting, Origin>,
    /// Problems that did not stop resolution (bad datastore values, unknown
    /// `MARGAY_*` variables, questionable combinations).
    pub warnings: Vec<SettingsError>,
}

/// One candidate value for a setting.
struct Candidate {
    text: String,
    origin: Origin,
}

/// Resolves every setting; returns all errors at once when any local value is bad.
pub fn resolve(inputs: &Inputs) -> Result<Resolved, SettingsErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let file = match &inputs.config_file {
        Some(text) => parse_toml(text, &mut errors),
        None => BTreeMap::new(),
    };
    check_command_line_keys(&inputs.command_line, &mut errors);
    let env = environment_layer(&inputs.environment, &mut warnings);

    let hostname = inputs.kernel_hostname.clone().unwrap_or_default();
    let mut settings = Settings::defaults(&hostname);
    let mut origins = BTreeMap::new();
    for spec in SPECS {
        let candidates = candidates(spec.setting, inputs, &env, &file);
        match choose(&mut settings, spec.setting, candidates, &mut warnings) {
            Ok(origin) => {
                origins.insert(spec.setting, origin);
            }
            Err(e) => errors.push(e),
        }
    }
    check_combinations(&settings, &mut errors, &mut warnings);
    if errors.is_empty() {
        Ok(Resolved {
            settings,
            origins,
            warnings,
        })
    } else {
        Err(SettingsErrors(errors))
    }
}

/// Every value offered for `setting`, highest layer first.
fn candidates(
    setting: Setting,
    inputs: &Inputs,
    env: &BTreeMap<Setting, Candidate>,
    file: &BTreeMap<Setting, String>,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    if let Some(text) = inputs.command_line.get(setting.key()) {
        out.push(Candidate {
            text: text.clone(),
            origin: Origin::CommandLine(setting.flag()),
        });
    }
    if let Some(c) = env.get(&setting) {
        out.push(Candidate {
            text: c.text.clone(),
            origin: c.origin.clone(),
        });
    }
    if let Some(text) = file.get(&setting) {
        out.push(Candidate {
            text: text.clone(),
            origin: Origin::ConfigFile(setting.key().to_owned()),
        });
    }
    if let Some(name) = setting.datastore_name() {
        if let Some(text) = inputs.host_config.get(name) {
            out.push(Candidate {
                text: text.clone(),
                origin: Origin::HostKey(name.to_owned()),
            });
        }
        if let Some(text) = inputs.global_config.get(name) {
            out.push(Candidate {
                text: text.clone(),
                origin: Origin::GlobalKey(name.to_owned()),
            });
        }
    }
    if setting == Setting::Hostname {
        if let Some(h) = &inputs.kernel_hostname {
            out.push(Candidate {
                text: h.clone(),
                origin: Origin::Kernel,
            });
        }
    }
    out
}

/// Applies the first candidate that parses. A bad local candidate is an
/// error; a bad datastore candidate is a warning and the next one is tried.
fn choose(
    settings: &mut Settings,
    setting: Setting,
    candidates: Vec<Candidate>,
    warnings: &mut Vec<SettingsError>,
) -> Result<Origin, SettingsError> {
    for c in candidates {
        match settings.set(setting, &c.text) {
            Ok(()) => return Ok(c.origin),
            Err(reason) => {
                let err = SettingsError::Invalid {
                    setting,
                    value: c.text,
                    origin: c.origin.clone(),
                    reason,
                };
                if c.origin.is_datastore() {
                    warnings.push(err);
                } else {
                    return Err(err);
                }
            }
        }
    }
    if setting == Setting::Hostname {
        return Err(SettingsError::NoHostname);
    }
    // `settings` already holds the default.
    Ok(Origin::Default)
}

/// The environment layer: `MARGAY_*` first, then the Calico-era names.
/// Empty Calico-era variables count as unset (Calico env files ship them empty).
fn environment_layer(
    vars: &BTreeMap<String, String>,
    warnings: &mut Vec<SettingsError>,
) -> BTreeMap<Setting, Candidate> {
    let mut out = BTreeMap::new();
    for (var, setting) in LEGACY_ENV {
        if let Some(text) = vars.get(*var).filter(|t| !t.trim().is_empty()) {
            out.insert(
                *setting,
                Candidate {
                    text: text.clone(),
                    origin: Origin::Environment((*var).to_owned()),
                },
            );
        }
    }
    if let (Entry::Vacant(slot), Some(c)) =
        (out.entry(Setting::EtcdEndpoints), legacy_authority(vars))
    {
        slot.insert(c);
    }
    for (var, text) in vars.iter().filter(|(v, _)| v.starts_with("MARGAY_")) {
        match Setting::from_env_var(var) {
            Some(setting) => {
                out.insert(
                    setting,
                    Candidate {
                        text: text.clone(),
                        origin: Origin::Environment(var.clone()),
                    },
                );
            }
            None if var == ENV_CONFIG_FILE || var == ENV_LOG_FILTER => {}
            None => warnings.push(SettingsError::Unknown {
                key: var.clone(),
                origin: Origin::Environment(var.clone()),
            }),
        }
    }
    out
}

/// Older Calico env files give `ETCD_AUTHORITY=host:port` (+ `ETCD_SCHEME`).
fn legacy_authority(vars: &BTreeMap<String, String>) -> Option<Candidate> {
    let authority = vars
        .get("ETCD_AUTHORITY")
        .filter(|t| !t.trim().is_empty())?;
    let scheme = vars
        .get("ETCD_SCHEME")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .unwrap_or("http");
    Some(Candidate {
        text: format!("{scheme}://{}", authority.trim()),
        origin: Origin::Environment("ETCD_AUTHORITY".into()),
    })
}

fn check_command_line_keys(cli: &BTreeMap<String, String>, errors: &mut Vec<SettingsError>) {
    for key in cli.keys() {
        if Setting::from_key(key).is_none() || key.contains('-') {
            errors.push(SettingsError::Unknown {
                key: key.clone(),
                origin: Origin::CommandLine(format!("--{}", key.replace('_', "-"))),
            });
        }
    }
}

/// Parses the config file into setting → text. Lists become comma lists.
fn parse_toml(text: &str, errors: &mut Vec<SettingsError>) -> BTreeMap<Setting, String> {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            errors.push(SettingsError::Toml(e.message().to_owned()));
            return BTreeMap::new();
        }
    };
    let mut out = BTreeMap::new();
    for (key, value) in table {
        let Some(setting) = Setting::from_key(&key) else {
            errors.push(SettingsError::Unknown {
                origin: Origin::ConfigFile(key.clone()),
                key,
            });
            continue;
        };
        match toml_text(&value) {
            Some(text) => {
                out.insert(setting, text);
            }
            None => errors.push(SettingsError::TomlType { key }),
        }
    }
    out
}

fn toml_text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Array(items) => {
            let parts: Option<Vec<String>> = items
                .iter()
                .map(|v| match v {
                    toml::Value::Array(_) | toml::Value::Table(_) => None,
                    v => toml_text(v),
                })
                .collect();
            parts.map(|p| p.join(","))
        }
        toml::Value::Datetime(_) | toml::Value::Table(_) => None,
    }
}

/// Checks that hold across settings.
fn check_combinations(
    s: &Settings,
    errors: &mut Vec<SettingsError>,
    warnings: &mut Vec<SettingsError>,
) {
    match (&s.etcd_cert_file, &s.etcd_key_file) {
        (Some(_), None) => errors.push(SettingsError::Conflict {
            setting: Setting::EtcdKeyFile,
            reason: "etcd_cert_file is set, so etcd_key_file must be set too".into(),
        }),
        (None, Some(_)) => errors.push(SettingsError::Conflict {
            setting: Setting::EtcdCertFile,
            reason: "etcd_key_file is set, so etcd_cert_file must be set too".into(),
        }),
        _ => {}
    }
    let https = s
        .etcd_endpoints
        .iter()
        .filter(|e| e.starts_with("https://"))
        .count();
    if https > 0 && https < s.etcd_endpoints.len() {
        errors.push(SettingsError::Conflict {
            setting: Setting::EtcdEndpoints,
            reason: "mixes http:// and https:// endpoints".into(),
        });
    }
    let has_tls_files =
        s.etcd_ca_file.is_some() || s.etcd_cert_file.is_some() || s.etcd_key_file.is_some();
    if https == 0 && has_tls_files {
        warnings.push(SettingsError::Conflict {
            setting: Setting::EtcdEndpoints,
            reason: "TLS files are set but every endpoint is http://; they are not used".into(),
        });
    }
    if s.reporting_interval_secs > 0 && s.reporting_ttl_secs <= s.reporting_interval_secs {
        warnings.push(SettingsError::Conflict {
            setting: Setting::ReportingTtlSecs,
            reason: format!(
                "{} s is not longer than the reporting interval ({} s); status will flap",
                s.reporting_ttl_secs, s.reporting_interval_secs
            ),
        });
    }
}

#[cfg(test)]
mod tests;
