//! The one owner of the datastore settings: the global
//! `<prefix>/config/<Name>` keys and this host's
//! `<prefix>/host/<me>/config/<Name>` keys, kept raw from the key stream.
//!
//! Both layers are kept as they are, not merged: the settings loader
//! (`margay_config`) resolves them below the local layers, and a host value
//! that does not parse falls back to the global one, so a change in either
//! layer can change what is in force. [`DatastoreSettings::observe`] says
//! which setting a key changed; what that means for the dataplane (only
//! firewall settings make the firewall re-lower) is decided by comparing
//! the resolved settings, not here.

use std::collections::BTreeMap;

/// The raw datastore settings of this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatastoreSettings {
    global_dir: String,
    host_dir: String,
    global: BTreeMap<String, String>,
    host: BTreeMap<String, String>,
}

/// Which layer a setting key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingLayer {
    /// `<prefix>/config/<Name>`.
    Global,
    /// `<prefix>/host/<me>/config/<Name>`.
    Host,
}

/// One setting key whose value changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedSetting {
    /// The layer of the key.
    pub layer: SettingLayer,
    /// The setting's datastore name, e.g. `LogSeverityScreen`.
    pub name: String,
}

impl DatastoreSettings {
    /// For data prefix `prefix` (e.g. `/calico/v1`) and `hostname`.
    pub fn new(prefix: &str, hostname: &str) -> Self {
        DatastoreSettings {
            global_dir: format!("{prefix}/config/"),
            host_dir: format!("{prefix}/host/{hostname}/config/"),
            ..Default::default()
        }
    }

    /// Records one key's change (`None`: deleted). Returns the setting it
    /// changed, or `None` when the key is no setting of this host (another
    /// host's, a nested key, not a config key at all) or its value is the
    /// one already known.
    pub fn observe(&mut self, key: &str, value: Option<&str>) -> Option<ChangedSetting> {
        let (layer, name) = self.setting_of(key)?;
        let map = match layer {
            SettingLayer::Global => &mut self.global,
            SettingLayer::Host => &mut self.host,
        };
        let changed = match value {
            Some(v) => map.insert(name.to_owned(), v.to_owned()).as_deref() != Some(v),
            None => map.remove(name).is_some(),
        };
        changed.then(|| ChangedSetting {
            layer,
            name: name.to_owned(),
        })
    }

    /// The layer and setting name of `key`, if it is a setting key.
    fn setting_of<'k>(&self, key: &'k str) -> Option<(SettingLayer, &'k str)> {
        let (layer, name) = if let Some(name) = key.strip_prefix(&self.global_dir) {
            (SettingLayer::Global, name)
        } else {
            (SettingLayer::Host, key.strip_prefix(&self.host_dir)?)
        };
        (!name.is_empty() && !name.contains('/')).then_some((layer, name))
    }

    /// The global settings by name.
    pub fn global(&self) -> &BTreeMap<String, String> {
        &self.global
    }

    /// This host's settings by name.
    pub fn host(&self) -> &BTreeMap<String, String> {
        &self.host
    }
}

#[cfg(test)]
mod tests;
