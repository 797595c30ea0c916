//! Tests of the datastore settings owner.

use super::*;

fn changed(layer: SettingLayer, name: &str) -> Option<ChangedSetting> {
    Some(ChangedSetting {
        layer,
        name: name.to_owned(),
    })
}

#[test]
fn only_this_hosts_setting_keys_are_settings() {
    let mut s = DatastoreSettings::new("/calico/v1", "h1");
    assert_eq!(
        s.observe("/calico/v1/config/InterfacePrefix", Some("tap")),
        changed(SettingLayer::Global, "InterfacePrefix")
    );
    assert_eq!(
        s.observe("/calico/v1/config/InterfacePrefix", Some("tap")),
        None,
        "same value: nothing changed"
    );
    assert_eq!(
        s.observe("/calico/v1/config/InterfacePrefix", None),
        changed(SettingLayer::Global, "InterfacePrefix")
    );
    assert_eq!(s.observe("/calico/v1/config/InterfacePrefix", None), None);
    assert_eq!(s.observe("/calico/v1/config/a/b", Some("x")), None);
    assert_eq!(s.observe("/calico/v1/config/", Some("x")), None);
    assert_eq!(
        s.observe("/calico/v1/host/h2/config/ReportingTTLSecs", Some("7")),
        None,
        "another host's setting"
    );
    assert_eq!(
        s.observe("/calico/v1/host/h1/config/LogSeverityScreen", Some("DEBUG")),
        changed(SettingLayer::Host, "LogSeverityScreen")
    );
    assert_eq!(
        s.observe("/calico/v1/host/h1/bird_ip", Some("10.0.0.1")),
        None
    );
    assert_eq!(s.observe("/calico/v1/Ready", Some("true")), None);
    assert!(s.global().is_empty());
    assert_eq!(s.host()["LogSeverityScreen"], "DEBUG");
}

#[test]
fn both_layers_are_kept_and_a_hidden_global_change_still_counts() {
    // A host value that does not parse falls back to the global one when
    // the settings are resolved, so a global change below a host value is
    // a change too.
    let mut s = DatastoreSettings::new("/calico/v1", "h1");
    let host = "/calico/v1/host/h1/config/DefaultEndpointToHostAction";
    let global = "/calico/v1/config/DefaultEndpointToHostAction";
    s.observe(host, Some("MAYBE"));
    s.observe(global, Some("ACCEPT"));
    assert_eq!(
        s.observe(global, Some("DROP")),
        changed(SettingLayer::Global, "DefaultEndpointToHostAction")
    );
    assert_eq!(s.host()["DefaultEndpointToHostAction"], "MAYBE");
    assert_eq!(s.global()["DefaultEndpointToHostAction"], "DROP");
    assert!(s.observe(host, None).is_some());
    assert!(s.host().is_empty());
}

/// Every order of the same changes ends with the same layers: the last
/// value written to each key (what the calculation's order tests asserted
/// of its copy of the settings, which is gone).
#[test]
fn any_order_of_changes_converges() {
    let changes: [(&str, Option<&str>); 6] = [
        ("/calico/v1/config/A", Some("g1")),
        ("/calico/v1/config/B", Some("g2")),
        ("/calico/v1/host/h1/config/A", Some("h1")),
        ("/calico/v1/host/h2/config/A", Some("other")),
        ("/calico/v1/host/h1/config/C", Some("h3")),
        ("/calico/v1/policy/tier/t/policy/p", Some("{}")),
    ];
    let mut orders = vec![Vec::new()];
    for _ in 0..changes.len() {
        orders = orders
            .into_iter()
            .flat_map(|order: Vec<usize>| {
                (0..changes.len())
                    .filter(|i| !order.contains(i))
                    .map(|i| {
                        let mut next = order.clone();
                        next.push(i);
                        next
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
    }
    assert_eq!(orders.len(), 720);
    let expected_global = BTreeMap::from([("A".into(), "g1".into()), ("B".into(), "g2".into())]);
    let expected_host = BTreeMap::from([("A".into(), "h1".into()), ("C".into(), "h3".into())]);
    for order in orders {
        let mut s = DatastoreSettings::new("/calico/v1", "h1");
        // A stale value first, overwritten later in every order.
        s.observe("/calico/v1/config/B", Some("stale"));
        for i in order {
            let (key, value) = changes[i];
            s.observe(key, value);
        }
        assert_eq!(s.global(), &expected_global);
        assert_eq!(s.host(), &expected_host);
    }
}
