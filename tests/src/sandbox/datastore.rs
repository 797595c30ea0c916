//! Writing and reading the cluster's etcd: starting, stopping and cutting
//! etcd off, raw puts and deletes, and the Calico v1 documents (endpoints,
//! profiles, tiers, policies, pools) tests put.

use super::*;

impl Cluster {
    // --- etcd ------------------------------------------------------------

    /// Starts (or restarts) etcd and waits until it answers.
    pub fn start_etcd(&mut self) {
        if self.etcd.is_some() {
            return;
        }
        let clients = if self.etcd_on_fabric {
            format!("http://{ETCD_IP}:2379,http://127.0.0.1:2379")
        } else {
            "http://127.0.0.1:2379".to_owned()
        };
        let data = self.dir.join("etcd-data");
        let data = data.to_string_lossy();
        let cmd = self.etcd_ns.command(&[
            ETCD_BIN,
            "--name=sandbox",
            &format!("--data-dir={data}"),
            &format!("--listen-client-urls={clients}"),
            &format!("--advertise-client-urls=http://{ETCD_IP}:2379"),
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=sandbox=http://127.0.0.1:2380",
            "--logger=zap",
            "--log-outputs=stderr",
        ]);
        let log = self.dir.join("etcd.log");
        let child = spawn_logged(cmd, &log, "ETCD", "etcd");
        self.etcd = Some(child);
        let health = SocketAddr::from(([127, 0, 0, 1], 2379));
        let ns = self.etcd_ns.name().to_owned();
        wait_for("etcd to become healthy", Duration::from_secs(30), || {
            in_netns(&ns, || http_get(health, "/health"))
                .is_some_and(|(_, body)| body.contains("\"health\":\"true\""))
        });
    }

    /// Stops etcd (SIGTERM, wait). Data is kept for [`Self::start_etcd`].
    pub fn stop_etcd(&mut self) {
        if let Some(child) = self.etcd.take() {
            terminate(child, Duration::from_secs(10));
        }
    }

    /// Cuts the agents off from etcd: restarts it listening on its loopback
    /// only, so the agents' connections break and new ones are refused while
    /// the test keeps reading and writing.
    pub fn cut_etcd(&mut self) {
        self.stop_etcd();
        self.etcd_on_fabric = false;
        self.start_etcd();
    }

    /// Undoes [`Self::cut_etcd`].
    pub fn restore_etcd(&mut self) {
        self.stop_etcd();
        self.etcd_on_fabric = true;
        self.start_etcd();
    }

    /// Writes `key` = `value` (a plain string).
    pub fn put(&self, key: &str, value: &str) {
        let (k, v) = (key.to_owned(), value.to_owned());
        self.client
            .run(move |mut c| {
                let (k, v) = (k.clone(), v.clone());
                async move { c.put(k, v, None).await }
            })
            .unwrap_or_else(|e| panic!("etcd put {key}: {e}"));
    }

    /// Writes `key` = the JSON text of `value` and returns the moment the
    /// put was handed to the etcd client's already open connection (the
    /// write leaving this process), for latency benches. A retried put
    /// returns the last try's moment.
    pub fn put_json_timed(&self, key: &str, value: &Value) -> Instant {
        let (k, v) = (key.to_owned(), value.to_string());
        self.client
            .run(move |mut c| {
                let (k, v) = (k.clone(), v.clone());
                async move {
                    let sent = Instant::now();
                    c.put(k, v, None).await.map(|_| sent)
                }
            })
            .unwrap_or_else(|e| panic!("etcd put {key}: {e}"))
    }

    /// Writes `key` = the JSON text of `value`.
    pub fn put_json(&self, key: &str, value: &Value) {
        self.put(key, &value.to_string());
    }

    /// Writes many keys in transactions of up to 100 puts each.
    pub fn put_many(&self, pairs: &[(String, String)]) {
        self.client
            .put_many(pairs)
            .unwrap_or_else(|e| panic!("etcd txn: {e}"));
    }

    /// Writes `puts` and deletes `deletes` in one transaction (one etcd
    /// revision; the keys must all differ).
    pub fn txn(&self, puts: &[(String, String)], deletes: &[String]) {
        let (puts, deletes) = (puts.to_vec(), deletes.to_vec());
        self.client
            .run(move |mut c| {
                let ops: Vec<etcd_client::TxnOp> = puts
                    .iter()
                    .map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.as_str(), None))
                    .chain(
                        deletes
                            .iter()
                            .map(|k| etcd_client::TxnOp::delete(k.as_str(), None)),
                    )
                    .collect();
                async move { c.txn(etcd_client::Txn::new().and_then(ops)).await }
            })
            .unwrap_or_else(|e| panic!("etcd txn: {e}"));
    }

    /// Deletes `key`.
    pub fn delete(&self, key: &str) {
        let k = key.to_owned();
        self.client
            .run(move |mut c| {
                let k = k.clone();
                async move { c.delete(k, None).await }
            })
            .unwrap_or_else(|e| panic!("etcd delete {key}: {e}"));
    }

    /// Deletes every key under `prefix`.
    pub fn delete_prefix(&self, prefix: &str) {
        let k = prefix.to_owned();
        self.client
            .run(move |mut c| {
                let k = k.clone();
                async move {
                    c.delete(k, Some(etcd_client::DeleteOptions::new().with_prefix()))
                        .await
                }
            })
            .unwrap_or_else(|e| panic!("etcd delete prefix {prefix}: {e}"));
    }

    /// Every key and value under `prefix`.
    pub fn get_prefix(&self, prefix: &str) -> BTreeMap<String, String> {
        let k = prefix.to_owned();
        let resp = self
            .client
            .run(move |mut c| {
                let k = k.clone();
                async move {
                    c.get(k, Some(etcd_client::GetOptions::new().with_prefix()))
                        .await
                }
            })
            .unwrap_or_else(|e| panic!("etcd get {prefix}: {e}"));
        resp.kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect()
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        let resp = self
            .client
            .run(|mut c| async move { c.get("/", None).await })
            .unwrap_or_else(|e| panic!("etcd get: {e}"));
        resp.header()
            .map(|h| h.revision())
            .unwrap_or_else(|| panic!("etcd response without header"))
    }

    /// Writes 20 unrelated keys, so an agent cut off now is well behind,
    /// then compacts the history past its last revision ([`Self::compact`]).
    pub fn bury_history(&self) {
        for i in 0..20 {
            self.put(&format!("/calico/v1/config/Unrelated{i}"), "x");
        }
        self.compact();
    }

    /// Compacts the history up to the current revision (physically), so a
    /// watch from any older revision fails with "compacted".
    pub fn compact(&self) -> i64 {
        let rev = self.revision();
        self.client
            .run(move |mut c| async move {
                c.compact(
                    rev,
                    Some(etcd_client::CompactionOptions::new().with_physical()),
                )
                .await
            })
            .unwrap_or_else(|e| panic!("etcd compact {rev}: {e}"));
        rev
    }

    /// The endpoint key of workload `name` (under its current host).
    pub fn endpoint_key(&self, name: &str) -> String {
        let w = self.workload(name);
        format!(
            "{PREFIX}/host/{}/workload/{ORCHESTRATOR}/{}/endpoint/{}",
            w.host, w.name, w.name
        )
    }

    /// The endpoint document the CNI plugin would write for workload `name`.
    pub fn endpoint_doc(&self, name: &str, profiles: &[&str], labels: &Value) -> Value {
        let w = self.workload(name);
        json!({
            "state": "active",
            "name": w.iface,
            "mac": w.mac,
            "profile_ids": profiles,
            "ipv4_nets": [format!("{}/32", w.ip)],
            "ipv6_nets": w.ip6.map(|a| format!("{a}/128")).into_iter().collect::<Vec<_>>(),
            "labels": labels,
        })
    }

    /// Writes workload `name`'s endpoint with `profiles` and `labels`.
    pub fn put_endpoint(&self, name: &str, profiles: &[&str], labels: &Value) {
        let doc = self.endpoint_doc(name, profiles, labels);
        self.put_json(&self.endpoint_key(name), &doc);
    }

    /// Writes a profile's rules document.
    pub fn put_profile_rules(&self, profile: &str, rules: &Value) {
        self.put_json(&format!("{PREFIX}/policy/profile/{profile}/rules"), rules);
    }

    /// Writes a profile's tags.
    pub fn put_profile_tags(&self, profile: &str, tags: &[&str]) {
        self.put_json(
            &format!("{PREFIX}/policy/profile/{profile}/tags"),
            &json!(tags),
        );
    }

    /// Writes a profile's labels.
    pub fn put_profile_labels(&self, profile: &str, labels: &Value) {
        self.put_json(&format!("{PREFIX}/policy/profile/{profile}/labels"), labels);
    }

    /// Writes a tier's metadata.
    pub fn put_tier(&self, tier: &str, order: &Value) {
        self.put_json(
            &format!("{PREFIX}/policy/tier/{tier}/metadata"),
            &json!({ "order": order }),
        );
    }

    /// Writes a tiered policy.
    pub fn put_policy(&self, tier: &str, id: &str, policy: &Value) {
        self.put_json(&format!("{PREFIX}/policy/tier/{tier}/policy/{id}"), policy);
    }

    /// Writes an IPv4 pool.
    pub fn put_pool(&self, cidr: &str, masquerade: bool) {
        let key = format!("{PREFIX}/ipam/v4/pool/{}", cidr.replace('/', "-"));
        self.put_json(&key, &json!({ "cidr": cidr, "masquerade": masquerade }));
    }
}
