//! `margay plan`: what a sync would change right now. Writes nothing.
//!
//! Lists the datastore once (the same paginated list the agent uses), runs
//! the calculation over it with the datastore settings applied, reads what
//! the kernel has (our own routes and firewall objects only) and prints the
//! difference, as text or (`--json`) as one JSON document:
//!
//! ```text
//! {"hostname": "h1", "revision": 42, "keys": 17, "ready": true,
//!  "invalid": [{"key": "...", "reason": "..."}],
//!  "problems": ["endpoint ...: profile p is missing or invalid; ..."],
//!  "plan": {"routes": [...], "firewall": [...]},
//!  "host_endpoints": [{"id": "mgmt", "name": "eth0", "bound_to": ["eth0"], "chains": [...]}]}
//! ```
//!
//! The text form lists this host's host endpoints after the plan: how each
//! finds its interfaces, where it is bound now, and its chains by name, so
//! the `margay-hi-*`/`margay-ho-*` chain lines above can be told apart.

use std::collections::BTreeMap;

use anyhow::Context as _;
use margay_config::{DataplaneKind, Settings};
use margay_datastore::connect::{connect, EtcdConfig};
use margay_datastore::settings::DatastoreSettings;
use margay_datastore::sync::{list_all, DEFAULT_PAGE_SIZE};
use margay_policy::calc::CalcEngine;
use serde_json::json;

mod render;

use render::{plan_json, plan_text};

use crate::dataplane_setup::{firewall_settings, open_dataplane};
use crate::settings::SettingsLoader;

/// What the datastore says this host should look like.
#[derive(Debug)]
pub struct Computed {
    /// The calculation after the whole list.
    pub calc: CalcEngine,
    /// Settings with the datastore layers applied.
    pub settings: Settings,
    /// The list's revision.
    pub revision: i64,
    /// Keys listed.
    pub keys: usize,
    /// Invalid keys and why.
    pub invalid: BTreeMap<String, String>,
}

/// Lists the datastore and computes the desired state.
pub async fn compute(
    settings: &Settings,
    loader: Option<&mut SettingsLoader>,
) -> anyhow::Result<Computed> {
    let etcd = EtcdConfig::from_settings(settings);
    let prefix = settings.data_prefix();
    let mut conn = connect(&etcd, &format!("{prefix}/Ready"))
        .await
        .context("cannot reach etcd")?;
    let (revision, listed) = list_all(
        &mut conn.client,
        &format!("{prefix}/"),
        DEFAULT_PAGE_SIZE,
        etcd.request_timeout,
    )
    .await
    .context("cannot list the datastore")?;

    let mut datastore = DatastoreSettings::new(&prefix, &settings.hostname);
    for kv in &listed {
        datastore.observe(&kv.key, Some(&kv.value));
    }
    let settings = match loader {
        Some(loader) => {
            loader
                .resolve_with_datastore(datastore.global().clone(), datastore.host().clone())?
                .settings
        }
        None => settings.clone(),
    };

    let mut calc = CalcEngine::new(settings.hostname.clone());
    calc.set_interface_prefixes(settings.interface_prefixes.clone());
    let mut invalid = BTreeMap::new();
    for kv in &listed {
        if let Err(e) = calc.apply_raw(&prefix, &kv.key, Some(&kv.value)) {
            invalid.insert(kv.key.clone(), e.reason);
        }
    }
    Ok(Computed {
        calc,
        settings,
        revision,
        keys: listed.len(),
        invalid,
    })
}

/// Runs `margay plan`; prints to stdout. `loader` holds the local layers
/// (command line, environment, file); the datastore layers come from the list.
pub async fn run_plan(
    mut loader: SettingsLoader,
    settings: &Settings,
    json: bool,
) -> anyhow::Result<()> {
    let computed = compute(settings, Some(&mut loader)).await?;
    let effective = computed.settings.clone();
    let own_endpoints = crate::host_guard::resolve_etcd_endpoints(&effective.etcd_endpoints).await;
    let mut dp = open_dataplane(&effective).await?;
    dp.start_read_only()
        .await
        .context("cannot read the dataplane")?;
    let mut plan = dp
        .plan(
            computed.calc.state(),
            &firewall_settings(&effective, &own_endpoints),
        )
        .await
        .context("cannot compute the plan")?;
    if effective.dataplane == DataplaneKind::None {
        // The no-op backend observes nothing, so its "plan" lists every op it
        // would pretend to write; with no firewall there is nothing to change.
        plan.firewall.clear();
    }
    let problems = computed.calc.problems();
    let state = computed.calc.state();
    let bindings =
        crate::cmd::host_endpoints::dataplane_bindings(&dp, state, &effective.interface_prefixes);
    if json {
        let doc = json!({
            "hostname": effective.hostname,
            "revision": computed.revision,
            "keys": computed.keys,
            "ready": computed.calc.ready(),
            "invalid": computed.invalid.iter().map(|(k, r)| json!({"key": k, "reason": r})).collect::<Vec<_>>(),
            "problems": problems,
            "plan": plan_json(&plan),
            "host_endpoints": crate::cmd::host_endpoints::section_json(state, &bindings),
        });
        super::print_report(&format!("{doc}\n")).context("writing the plan")?;
        return Ok(());
    }
    let mut text = format!(
        "host {} at datastore revision {} ({} keys)\n",
        effective.hostname, computed.revision, computed.keys
    );
    if !computed.calc.ready() {
        text.push_str(
            "note: the datastore is not Ready; a running agent would program nothing yet\n",
        );
    }
    for (key, reason) in &computed.invalid {
        text.push_str(&format!(
            "invalid key {}: {}\n",
            crate::logging::sanitize(key),
            crate::logging::sanitize(reason)
        ));
    }
    for p in &problems {
        text.push_str(&format!("problem: {}\n", crate::logging::sanitize(p)));
    }
    text.push_str(&plan_text(&plan));
    text.push_str(&crate::cmd::host_endpoints::section_text(state, &bindings));
    super::print_report(&text).context("writing the plan")
}
