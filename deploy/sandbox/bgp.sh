# shellcheck shell=bash
# The sandbox's BGP topology, sourced by sandbox.sh (`--routing bgp`, the default, or
# `--routing mesh`):
#
#   subnet A 192.0.2.0/24   (bridge br0): etcd, router leg 192.0.2.1, odd hosts h1, h3, ...
#   subnet B 203.0.113.0/24 (bridge br1): router leg 203.0.113.1, even hosts h2, h4, ...
#
# The router namespace (<name>-out) forwards between the subnets and runs its own BIRD,
# written here and never by margay: AS 64511, a route reflector with every host as an
# `rr client`, accepting and re-advertising only prefixes inside the pool, installing
# what it learns into its kernel (it must: packets between the subnets cross it).
# Every host runs BIRD too, started on a placeholder file (as Debian's unit starts it)
# with its own control socket in the state dir; margay runs with
# `--inter-host-routes bgp --bird-config <file> --bird-socket <socket>`, replaces the
# file and reloads BIRD. etcd carries the router as a global peer, as calicoctl writes
# it; `bgp` switches the node-to-node mesh off (routes flow through the reflector),
# `mesh` leaves it on (hosts also peer with each other, the router still learns all).

SUBNET_B_PREFIX=203.0.113
ROUTER_IP_B=203.0.113.1
BGP_AS=64511

# bgp_enabled: the current sandbox routes between hosts with BGP.
bgp_enabled() { [ "${ROUTING:-direct}" != direct ]; }

bgp_conf() { printf '%s/bird-%s.conf' "$SB_STATE" "$1"; }
bgp_sock() { printf '%s/bird-%s.ctl' "$SB_STATE" "$1"; }

# bgp_birdc NODE(router|hN) ARGS...: birdc against that node's BIRD, inside its namespace.
bgp_birdc() {
  local node=$1 ns
  shift
  if [ "$node" = router ]; then ns=$(sb_ns out); else ns=$(sb_host_ns "$node"); fi
  sb_in "$ns" birdc -s "$(bgp_sock "$node")" "$@"
}

# bgp_start_bird NODE NS: BIRD in the foreground (so the sandbox tracks and kills it)
# on NODE's file and socket; waits until its socket answers.
bgp_start_bird() {
  local node=$1 ns=$2
  sb_spawn "$ns" "$SB_STATE/bird-$node.log" bird -f -c "$(bgp_conf "$node")" \
    -s "$(bgp_sock "$node")" >"$SB_STATE/bird-$node.pid"
  sb_wait 10 "BIRD of $node" bgp_birdc "$node" show status || {
    tail -20 "$SB_STATE/bird-$node.log" >&2
    return 1
  }
}

# bgp_router_conf: the router's BIRD configuration for the hosts listed so far.
bgp_router_conf() {
  local host
  cat <<EOF
# The sandbox's data-centre router (written by sandbox.sh, not by margay).
router id $ROUTER_IP;
log stderr all;

protocol device {
  scan time 10;
}

# The connected subnets, so that next hops resolve (never exported anywhere).
protocol direct {
  ipv4;
}

# What the hosts announce goes into the kernel: packets between subnets cross here.
protocol kernel {
  ipv4 {
    import none;
    export where source = RTS_BGP;
  };
}

filter sandbox_pool {
  if net ~ [ $POOL_CIDR{16,32} ] then accept;
  reject;
}

template bgp sandbox_host {
  local $ROUTER_IP as $BGP_AS;
  multihop;
  rr client;
  connect delay time 1;
  connect retry time 5;
  error wait time 1, 10;
  ipv4 {
    import filter sandbox_pool;
    export filter sandbox_pool;
  };
}
EOF
  while read -r host; do
    printf '\nprotocol bgp host_%s from sandbox_host {\n  neighbor %s as %s;\n}\n' \
      "$host" "$(sb_host_ip "$host")" "$BGP_AS"
  done <"$SB_STATE/hosts"
}

# bgp_router_update: rewrites the router's file and reloads its BIRD.
bgp_router_update() {
  local reply
  bgp_router_conf >"$(bgp_conf router)"
  reply=$(bgp_birdc router configure 2>&1) || true
  [[ "$reply" == *Reconfigured* ]] ||
    die "the router's BIRD rejected $(bgp_conf router): $reply"
}

# bgp_router_up: the second subnet, the router's leg on it, forwarding, its BIRD, and
# the BGP data calicoctl would write (AS, mesh switch, the router as global peer).
bgp_router_up() {
  local fab out mesh=false
  fab=$(sb_ns fab)
  out=$(sb_ns out)
  ip -n "$fab" link add br1 type bridge
  ip -n "$fab" link set br1 up
  sb_fabric_attach "$out" "$ROUTER_IP_B" p-outb br1 eth1
  sb_in "$out" sysctl -qw net.ipv4.ip_forward=1
  # etcd answers hosts on subnet B through the router.
  ip -n "$(sb_etcd_ns)" route add default via "$ROUTER_IP"
  bgp_router_conf >"$(bgp_conf router)"
  bgp_start_bird router "$out"

  [ "$ROUTING" = mesh ] && mesh=true
  sb_put /calico/bgp/v1/global/as_num "$BGP_AS"
  sb_put /calico/bgp/v1/global/node_mesh "{\"enabled\": $mesh}"
  sb_put "/calico/bgp/v1/global/peer_v4/$ROUTER_IP" "{\"ip\": \"$ROUTER_IP\", \"as_num\": \"$BGP_AS\"}"
}

# bgp_host_up HOST: the host's BIRD on a placeholder file (margay replaces it), and
# the router told about the new client.
bgp_host_up() {
  local host=$1
  printf '# Placeholder: margay replaces this file once it has read the datastore.\nrouter id %s;\nprotocol device {}\n' \
    "$(sb_host_ip "$host")" >"$(bgp_conf "$host")"
  bgp_start_bird "$host" "$(sb_host_ns "$host")"
  bgp_router_update
}

# bgp_agent_args HOST: the agent's extra options for the current routing mode.
bgp_agent_args() {
  bgp_enabled || return 0
  printf '%s\n' --inter-host-routes bgp --bird-config "$(bgp_conf "$1")" --bird-socket "$(bgp_sock "$1")"
}

# bgp_sessions_up: the router has an established session with every host.
bgp_sessions_up() {
  local host states
  states=$(bgp_birdc router show protocols)
  while read -r host; do
    grep -Eq "^host_$host +BGP .* up .*Established" <<<"$states" || return 1
  done <"$SB_STATE/hosts"
}

# bgp_show_learned: per host, the routes its kernel got from BIRD (`proto bird`) and
# the BGP sessions margay configured (named Mesh_/Global_/Node_<peer>), then the
# router's sessions and routes.
bgp_show_learned() {
  local host routes
  while read -r host; do
    routes=$(ip -n "$(sb_host_ns "$host")" -4 route show proto bird)
    printf '  %s (%s) learned over BGP:\n' "$host" "$(sb_host_ip "$host")"
    printf '%s\n' "${routes:-(none)}" | sed 's/^/    /'
    printf '  %s sessions:\n' "$host"
    bgp_birdc "$host" show protocols | awk 'NR > 1 && $2 == "BGP"' | sed 's/^/    /'
  done <"$SB_STATE/hosts"
  printf '  router (AS %s, route reflector) sessions:\n' "$BGP_AS"
  bgp_birdc router show protocols | awk 'NR > 1 && $2 == "BGP"' | sed 's/^/    /'
  printf '  router kernel routes from BGP:\n'
  ip -n "$(sb_ns out)" -4 route show proto bird | sed 's/^/    /'
}

# bgp_ms_until_learned HOST ADDR T0_NS SECONDS: polls HOST's kernel every 10 ms for a
# BIRD route to ADDR/32; prints the ms from T0 until it is there, or fails at the deadline.
bgp_ms_until_learned() {
  local ns deadline now
  ns=$(sb_host_ns "$1")
  deadline=$(($3 + $4 * 1000000000))
  while now=$(date +%s%N); [ "$now" -lt "$deadline" ]; do
    if [ -n "$(ip -n "$ns" -4 route show "$2/32" proto bird)" ]; then
      echo $(((now - $3) / 1000000))
      return 0
    fi
    sleep 0.01
  done
  return 1
}
