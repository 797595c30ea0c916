//! Why settings could not be resolved, and where each value came from.
//!
//! Every message names the setting, the offending value and its source
//! (flag, environment variable, config file key, datastore key), so an
//! operator can find and fix it without reading code.

use std::fmt;

use thiserror::Error;

use crate::setting::Setting;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line option (the flag, e.g. `--dataplane`).
    CommandLine(String),
    /// An environment variable (its name).
    Environment(String),
    /// The config file (the TOML key).
    ConfigFile(String),
    /// This host's datastore config (`/host/<h>/config/<Name>`).
    HostKey(String),
    /// The global datastore config (`/config/<Name>`).
    GlobalKey(String),
    /// The built-in default.
    Default,
    /// The kernel's hostname.
    Kernel,
}

impl Origin {
    /// True for the two datastore layers, whose bad values are warnings, not errors.
    pub fn is_datastore(&self) -> bool {
        matches!(self, Origin::HostKey(_) | Origin::GlobalKey(_))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::CommandLine(flag) => write!(f, "command line {flag}"),
            Origin::Environment(var) => write!(f, "environment variable {var}"),
            Origin::ConfigFile(key) => write!(f, "config file key {key}"),
            Origin::HostKey(name) => write!(f, "host config key {name}"),
            Origin::GlobalKey(name) => write!(f, "global config key {name}"),
            Origin::Default => f.write_str("default"),
            Origin::Kernel => f.write_str("kernel hostname"),
        }
    }
}

/// One problem with the settings.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SettingsError {
    /// A value that does not parse or is out of range.
    #[error("invalid {setting} {value:?} (from {origin}): {reason}")]
    Invalid {
        /// Which setting.
        setting: Setting,
        /// The text as given.
        value: String,
        /// Where it came from.
        origin: Origin,
        /// What is wrong with it.
        reason: String,
    },
    /// A config file key or command-line key that is not a setting.
    #[error("unknown setting {key:?} (from {origin})")]
    Unknown {
        /// The key as given.
        key: String,
        /// Where it came from.
        origin: Origin,
    },
    /// The config file is not TOML.
    #[error("config file is not valid TOML: {0}")]
    Toml(String),
    /// A config file value that is a table or a nested list.
    #[error("config file key {key}: expected a string, number, boolean or list of those")]
    TomlType {
        /// The TOML key.
        key: String,
    },
    /// No hostname was given and the kernel's is unknown.
    #[error("hostname: not set and the kernel's hostname is unknown; use --hostname")]
    NoHostname,
    /// Values that are fine alone but not together.
    #[error("{setting}: {reason}")]
    Conflict {
        /// The setting to change.
        setting: Setting,
        /// What is wrong.
        reason: String,
    },
}

/// Every error found while resolving (resolution reports them all at once).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct SettingsErrors(pub Vec<SettingsError>);

impl fmt::Display for SettingsErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
