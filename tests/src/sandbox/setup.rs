//! Building the cluster: the builder's defaults, fabric, etcd and outside
//! namespaces, host namespaces, workloads, and the accessors tests use.

use super::*;

impl Cluster {
    /// A builder with 2 hosts, nftables, Ready, agents started.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            hosts: 2,
            dataplane: Dataplane::Nftables,
            ready: true,
            start_agents: true,
            agent_args: Vec::new(),
            agent_wrapper: Vec::new(),
            bgp: None,
            via_grpc_proxy: false,
        }
    }

    pub(super) fn create(b: ClusterBuilder) -> Cluster {
        let dir = scratch_dir();
        std::fs::write(dir.join("margay.toml"), "")
            .unwrap_or_else(|e| panic!("cannot write config file: {e}"));
        let fabric = TestNetns::new("fab");
        fabric.exec_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
        fabric.exec_ok(&["ip", "link", "set", "br0", "up"]);
        let etcd_ns = TestNetns::new("etcd");
        attach_to_fabric(&fabric, &etcd_ns, "p-etcd", ETCD_IP);
        let outside = TestNetns::new("out");
        attach_to_fabric(&fabric, &outside, "p-out", ROUTER_IP);
        outside.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{OUTSIDE_IP}/32"),
            "dev",
            "lo",
        ]);
        let client = NsEtcd::new(etcd_ns.name());
        let listeners = Listeners::new();
        listeners.listen(
            outside.name(),
            "outside",
            SocketAddr::from((OUTSIDE_IP, OUTSIDE_PORT)),
            true,
        );
        let mut cluster = Cluster {
            dataplane: b.dataplane,
            agent_args: b.agent_args.clone(),
            agent_wrapper: b.agent_wrapper.clone(),
            bgp: b.bgp.clone(),
            via_grpc_proxy: b.via_grpc_proxy,
            dir,
            client,
            listeners,
            etcd: None,
            grpc_proxy: None,
            router_bird: None,
            etcd_on_fabric: true,
            workloads: BTreeMap::new(),
            hosts: Vec::new(),
            outside,
            etcd_ns,
            fabric,
        };
        cluster.start_etcd();
        if b.via_grpc_proxy {
            cluster.start_grpc_proxy();
        }
        if b.ready {
            cluster.put(&format!("{PREFIX}/Ready"), "true");
        }
        if cluster.bgp.is_some() {
            cluster.add_subnet_b_and_router();
        }
        for i in 1..=b.hosts {
            cluster.add_host(i);
        }
        if let Some(bgp) = &b.bgp {
            cluster.start_bgp(bgp);
        }
        if b.start_agents {
            let names: Vec<String> = cluster.hosts.iter().map(|h| h.name.clone()).collect();
            for name in &names {
                cluster.spawn_agent(name);
            }
            if b.ready {
                for name in &names {
                    cluster.wait_agent_ready(name);
                }
            }
        }
        cluster
    }

    pub(super) fn add_host(&mut self, i: usize) {
        let name = format!("h{i}");
        let octet = u8::try_from(10 + i).unwrap_or_else(|_| panic!("too many hosts"));
        let ns = TestNetns::new(&name);
        let (ip, router) = if self.bgp.is_some() && i.is_multiple_of(2) {
            let ip = Ipv4Addr::new(203, 0, 113, octet);
            attach_to_bridge(&self.fabric, "br1", &ns, &format!("p-{name}"), "eth0", ip);
            (ip, ROUTER_IP_B)
        } else {
            let ip = Ipv4Addr::new(192, 0, 2, octet);
            attach_to_fabric(&self.fabric, &ns, &format!("p-{name}"), ip);
            (ip, ROUTER_IP)
        };
        ns.exec_ok(&["ip", "route", "add", "default", "via", &router.to_string()]);
        // A container host forwards: the machine's setting, not margay's.
        ns.sysctl("net.ipv4.ip_forward", "1");
        self.put(&format!("{PREFIX}/host/{name}/bird_ip"), &ip.to_string());
        let log = self.dir.join(format!("agent-{name}.log"));
        self.hosts.push(Host {
            name,
            ip,
            ns,
            agent: None,
            log,
            bird: None,
        });
    }

    // --- accessors -------------------------------------------------------

    /// The config file every agent is started with (`--config`), empty at
    /// first; write it and send SIGHUP to reload.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("margay.toml")
    }

    /// The backend the agents use.
    pub fn dataplane(&self) -> Dataplane {
        self.dataplane
    }

    /// Host `name` (`h1`, …). Panics if unknown.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    pub(super) fn host_mut(&mut self, name: &str) -> &mut Host {
        self.hosts
            .iter_mut()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Workload `name`. Panics if unknown.
    pub fn workload(&self, name: &str) -> &Workload {
        self.workloads
            .get(name)
            .unwrap_or_else(|| panic!("no workload {name}"))
    }

    /// The fabric namespace (holds bridge `br0`, ports `p-<host>`).
    pub fn fabric(&self) -> &TestNetns {
        &self.fabric
    }

    /// The outside namespace (router + server).
    pub fn outside(&self) -> &TestNetns {
        &self.outside
    }

    // --- workloads -------------------------------------------------------

    /// Adds workload `name` on `host` with address `ip`, as the CNI plugin
    /// would (namespace, veth `cali<name>`, /32, default via 169.254.1.1),
    /// listening on [`WORKLOAD_PORTS`]. Writes no endpoint.
    pub fn add_workload(&mut self, name: &str, host: &str, ip: &str) {
        assert!(
            !name.is_empty() && name.len() <= 11 && name.bytes().all(|b| b.is_ascii_alphanumeric()),
            "workload name {name:?}: 1-11 alphanumerics"
        );
        assert!(!self.workloads.contains_key(name), "workload {name} exists");
        let ip: Ipv4Addr = ip.parse().unwrap_or_else(|e| panic!("bad ip {ip}: {e}"));
        let iface = format!("cali{name}");
        let ns = TestNetns::new("wl");
        attach_workload(self.host(host).ns(), &iface, &ns, &ip.to_string());
        let mac = ns
            .exec_ok(&["cat", "/sys/class/net/eth0/address"])
            .trim()
            .to_owned();
        for port in WORKLOAD_PORTS {
            self.listeners
                .listen(ns.name(), name, SocketAddr::from((ip, port)), true);
        }
        self.workloads.insert(
            name.to_owned(),
            Workload {
                name: name.to_owned(),
                host: host.to_owned(),
                ip,
                ip6: None,
                iface,
                mac,
                ns,
            },
        );
    }

    /// Removes workload `name`'s namespace and veth (the CNI DEL), leaving
    /// its endpoint key alone.
    pub fn remove_workload_ns(&mut self, name: &str) {
        // Open sockets would keep the namespace (and so the veth) alive.
        self.listeners.remove(name);
        self.workloads.remove(name);
    }
}
