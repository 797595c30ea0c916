//! Settings read from the datastore: global `/config/<Name>` keys overlaid by
//! this host's `/host/<me>/config/<Name>` keys.

use std::collections::BTreeMap;

/// The two layers and their merge.
#[derive(Debug, Default)]
pub(super) struct Settings {
    global: BTreeMap<String, String>,
    host: BTreeMap<String, String>,
    effective: BTreeMap<String, String>,
}

/// Which layer a key belongs to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Layer {
    /// `/config/<Name>`.
    Global,
    /// `/host/<me>/config/<Name>`.
    Host,
}

impl Settings {
    /// Sets or deletes one key; true when the effective settings changed.
    pub fn set(&mut self, layer: Layer, name: String, value: Option<String>) -> bool {
        let map = match layer {
            Layer::Global => &mut self.global,
            Layer::Host => &mut self.host,
        };
        match value {
            Some(v) => map.insert(name.clone(), v),
            None => map.remove(&name),
        };
        let effective = self
            .host
            .get(&name)
            .or_else(|| self.global.get(&name))
            .cloned();
        if self.effective.get(&name) == effective.as_ref() {
            return false;
        }
        match effective {
            Some(v) => self.effective.insert(name, v),
            None => self.effective.remove(&name),
        };
        true
    }

    /// Global keys overlaid by this host's keys.
    pub fn effective(&self) -> &BTreeMap<String, String> {
        &self.effective
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_override_global_ones_and_deletes_fall_back() {
        let mut s = Settings::default();
        assert!(s.set(Layer::Global, "A".into(), Some("g".into())));
        assert!(s.set(Layer::Host, "A".into(), Some("h".into())));
        assert!(!s.set(Layer::Global, "A".into(), Some("g2".into())));
        assert_eq!(s.effective().get("A").map(String::as_str), Some("h"));
        assert!(s.set(Layer::Host, "A".into(), None));
        assert_eq!(s.effective().get("A").map(String::as_str), Some("g2"));
        assert!(!s.set(Layer::Host, "B".into(), None));
        assert!(s.set(Layer::Global, "A".into(), None));
        assert!(s.effective().is_empty());
    }
}
