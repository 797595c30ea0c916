//! Gathers the raw material for [`margay_config::Settings`]: the command-line
//! map, the process environment, the config file and the kernel hostname.
//!
//! The config crate is pure; this module does the reading. It remembers the
//! local layers so the running agent can re-resolve when datastore settings
//! change (live) or when SIGHUP asks to re-read the config file.
//!
//! The config file is `--config FILE`, else `$MARGAY_CONFIG`, else
//! `/etc/margay/margay.toml` when it exists. A file named explicitly must
//! exist; the default one is optional.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use margay_config::layers::ENV_CONFIG_FILE;
use margay_config::{Inputs, Resolved, Setting, Settings, DEFAULT_CONFIG_FILE};

/// Where the kernel keeps this host's name.
const KERNEL_HOSTNAME: &str = "/proc/sys/kernel/hostname";

/// Which file, if any, holds the config, and whether it must exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFileChoice {
    /// The path.
    pub path: PathBuf,
    /// True when named explicitly (`--config` or `MARGAY_CONFIG`).
    pub required: bool,
}

/// Picks the config file: the flag, else the environment, else the default.
pub fn choose_config_file(flag: Option<&Path>, env: &BTreeMap<String, String>) -> ConfigFileChoice {
    if let Some(path) = flag {
        return ConfigFileChoice {
            path: path.to_path_buf(),
            required: true,
        };
    }
    if let Some(path) = env.get(ENV_CONFIG_FILE).filter(|p| !p.is_empty()) {
        return ConfigFileChoice {
            path: PathBuf::from(path),
            required: true,
        };
    }
    ConfigFileChoice {
        path: PathBuf::from(DEFAULT_CONFIG_FILE),
        required: false,
    }
}

/// Reads the config file text; `None` when an optional file is absent.
pub fn read_config_file(choice: &ConfigFileChoice) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(&choice.path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !choice.required => Ok(None),
        Err(e) => {
            Err(e).with_context(|| format!("cannot read config file {}", choice.path.display()))
        }
    }
}

/// The kernel's hostname, if readable.
pub fn kernel_hostname() -> Option<String> {
    let name = std::fs::read_to_string(KERNEL_HOSTNAME).ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Holds the local layers and resolves settings from them plus the datastore.
#[derive(Debug, Clone)]
pub struct SettingsLoader {
    inputs: Inputs,
    file: ConfigFileChoice,
}

impl SettingsLoader {
    /// Captures the command-line map and the process environment, and reads
    /// the config file and kernel hostname.
    pub fn from_process(
        command_line: BTreeMap<String, String>,
        config_flag: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let environment: BTreeMap<String, String> = std::env::vars().collect();
        Self::new(command_line, environment, config_flag, kernel_hostname())
    }

    /// Like [`Self::from_process`] with explicit sources (tests).
    pub fn new(
        command_line: BTreeMap<String, String>,
        environment: BTreeMap<String, String>,
        config_flag: Option<&Path>,
        kernel_hostname: Option<String>,
    ) -> anyhow::Result<Self> {
        let file = choose_config_file(config_flag, &environment);
        let config_file = read_config_file(&file)?;
        Ok(SettingsLoader {
            inputs: Inputs {
                command_line,
                environment,
                config_file,
                kernel_hostname,
                ..Inputs::default()
            },
            file,
        })
    }

    /// The config file in use (it may not exist when optional).
    pub fn config_file(&self) -> &ConfigFileChoice {
        &self.file
    }

    /// Resolves with the datastore layers last given (none at first).
    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        Settings::resolve(&self.inputs).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Replaces the datastore layers and resolves. A bad datastore value
    /// never fails this (it is a warning); only local layers can.
    pub fn resolve_with_datastore(
        &mut self,
        global: BTreeMap<String, String>,
        host: BTreeMap<String, String>,
    ) -> anyhow::Result<Resolved> {
        self.inputs.global_config = global;
        self.inputs.host_config = host;
        self.resolve()
    }

    /// Re-reads the config file (SIGHUP) and resolves. On error the previous
    /// file contents stay in force.
    pub fn reload_file(&mut self) -> anyhow::Result<Resolved> {
        let text = read_config_file(&self.file)?;
        let mut next = self.inputs.clone();
        next.config_file = text;
        let resolved = Settings::resolve(&next).map_err(|e| anyhow::anyhow!("{e}"))?;
        self.inputs = next;
        Ok(resolved)
    }
}

/// Merges a reloaded `next` into the running `current`: live settings take
/// the new value, the others keep the current one. Returns the merged
/// settings, the live settings that changed and the ones that need a restart.
pub fn merge_reload(current: &Settings, next: &Settings) -> (Settings, Vec<Setting>, Vec<Setting>) {
    let mut merged = next.clone();
    let mut live = Vec::new();
    let mut restart = Vec::new();
    for setting in current.changed(next) {
        if setting.is_live() {
            live.push(setting);
        } else {
            restart.push(setting);
            // Re-setting a value that parsed before cannot fail.
            let _ = merged.set(setting, &current.text(setting));
        }
    }
    (merged, live, restart)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mgy-settings-{}-{name}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        dir
    }

    #[test]
    fn config_file_choice_prefers_flag_then_env_then_default() {
        let env = map(&[("MARGAY_CONFIG", "/env.toml")]);
        let flag = Path::new("/flag.toml");
        assert_eq!(choose_config_file(Some(flag), &env).path, flag);
        let c = choose_config_file(None, &env);
        assert_eq!(
            (c.path.as_path(), c.required),
            (Path::new("/env.toml"), true)
        );
        let c = choose_config_file(None, &BTreeMap::new());
        assert_eq!(c.path, Path::new(DEFAULT_CONFIG_FILE));
        assert!(!c.required);
    }

    #[test]
    fn a_named_file_must_exist_the_default_need_not() {
        let missing =
            std::env::temp_dir().join(format!("mgy-settings-{}-nope.toml", std::process::id()));
        let err = SettingsLoader::new(
            BTreeMap::new(),
            BTreeMap::new(),
            Some(&missing),
            Some("h".into()),
        )
        .expect_err("missing explicit file");
        assert!(format!("{err:#}").contains("nope.toml"), "{err:#}");
        let optional = ConfigFileChoice {
            path: missing,
            required: false,
        };
        assert_eq!(read_config_file(&optional).expect("optional"), None);
    }

    #[test]
    fn sighup_reload_rereads_the_file_and_keeps_restart_only_settings() {
        let dir = scratch("reload");
        let file = dir.join("margay.toml");
        std::fs::write(&file, "log_level = \"info\"\ndataplane = \"none\"\n").expect("write");
        let mut loader = SettingsLoader::new(
            BTreeMap::new(),
            BTreeMap::new(),
            Some(&file),
            Some("h1".into()),
        )
        .expect("loads");
        let first = loader.resolve().expect("resolves").settings;
        assert_eq!(first.log_level, margay_config::LogLevel::Info);

        std::fs::write(&file, "log_level = \"debug\"\ndataplane = \"iptables\"\n").expect("write");
        let next = loader.reload_file().expect("reloads").settings;
        let (merged, live, restart) = merge_reload(&first, &next);
        assert_eq!(live, vec![Setting::LogLevel]);
        assert_eq!(restart, vec![Setting::Dataplane]);
        assert_eq!(merged.log_level, margay_config::LogLevel::Debug);
        assert_eq!(merged.dataplane, margay_config::DataplaneKind::None);

        // A broken file is refused and the last good one stays in force.
        std::fs::write(&file, "log_level = \"loud\"\n").expect("write");
        assert!(loader.reload_file().is_err());
        assert_eq!(
            loader.resolve().expect("still fine").settings.log_level,
            margay_config::LogLevel::Debug
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn datastore_layers_are_replaced_not_accumulated() {
        let mut loader = SettingsLoader::new(
            BTreeMap::new(),
            BTreeMap::new(),
            Some(Path::new("/dev/null")),
            Some("h".into()),
        )
        .expect("loads");
        let r = loader
            .resolve_with_datastore(map(&[("InterfacePrefix", "tap")]), BTreeMap::new())
            .expect("resolves");
        assert_eq!(r.settings.interface_prefixes, vec!["tap"]);
        let r = loader
            .resolve_with_datastore(BTreeMap::new(), BTreeMap::new())
            .expect("resolves");
        assert_eq!(r.settings.interface_prefixes, vec!["cali"]);
    }
}
