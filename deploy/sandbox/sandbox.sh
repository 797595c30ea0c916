#!/usr/bin/env bash
# margay sandbox: a whole cluster inside network namespaces on one machine.
#
#   <name>-fab      the fabric: bridges that every other namespace hangs off; br0 is
#                   subnet A 192.0.2.0/24, and with BGP routing br1 is subnet B 203.0.113.0/24
#   <name>-etcd     etcd, listening on 192.0.2.2:2379 (fabric) and its own loopback
#   <name>-out      the router 192.0.2.1 (and 203.0.113.1 on subnet B) with "the internet"
#                   behind it: a server 198.51.100.1. With BGP routing it runs BIRD as
#                   the hosts' route reflector (bgp.sh); with direct routing it has no
#                   route back to the pools, so only masqueraded traffic works
#   <name>-h<i>     host i (192.0.2.1<i>; with BGP even hosts are 203.0.113.1<i>), running
#                   a margay agent, and with BGP a BIRD that margay configures
#   <name>-w-<wl>   workload wl: eth0 with a /32 from 10.65.0.0/16 (written as an IP pool
#                   without masquerade: margay routes remote workloads only inside a pool),
#                   default route via 169.254.1.1, attached by veth to its host (host side cali<wl>)
#
# The sandbox does what a CNI plugin and an orchestrator would do (create the veth,
# address and route the workload side, write the endpoint to etcd) and nothing that
# margay is supposed to do (host routes, proxy_arp, firewall): that is left to the agent,
# so what works proves the agent did it. It never touches the root network namespace:
# every link, address and route lives in namespaces it creates and deletes.
#
# Usage: sandbox.sh <command> [args]; see `sandbox.sh help`.
set -euo pipefail

SANDBOX_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SANDBOX_DIR/../.." && pwd)
# shellcheck source=deploy/sandbox/bgp.sh
source "$SANDBOX_DIR/bgp.sh"
# shellcheck source=deploy/sandbox/probe.sh
source "$SANDBOX_DIR/probe.sh"
STATE_ROOT=${MARGAY_SANDBOX_ROOT:-/run/margay-sandbox}

FABRIC_PREFIX=192.0.2
ETCD_IP=192.0.2.2
ROUTER_IP=192.0.2.1
OUTSIDE_IP=198.51.100.1
OUTSIDE_PORT=8080
POOL_CIDR=10.65.0.0/16
ORCHESTRATOR=cni
# Ports every workload listens on (TCP), so any pair can be probed.
WORKLOAD_PORTS=${MARGAY_SANDBOX_PORTS:-"80 443 5432 7890"}
METRICS_PORT=9091

SB_NAME=""
SB_STATE=""
# direct (one L2 segment, margay routes via bird_ip), bgp (two subnets, route
# reflector, no mesh) or mesh (two subnets, node-to-node mesh plus the router).
ROUTING=direct

log() { printf '%s\n' "sandbox: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# ---------------------------------------------------------------------------
# Names and state
# ---------------------------------------------------------------------------

# sb_select NAME: makes NAME the current sandbox (namespace prefix + state dir).
sb_select() {
  [[ "$1" =~ ^[a-z][a-z0-9]{0,11}$ ]] || die "bad sandbox name '$1' (a-z0-9, max 12)"
  SB_NAME=$1
  SB_STATE=$STATE_ROOT/$1
  # An existing sandbox's routing mode decides its addresses.
  if [ -f "$SB_STATE/config" ]; then
    # shellcheck disable=SC1091
    source "$SB_STATE/config"
  fi
}

sb_ns() { printf '%s-%s' "$SB_NAME" "$1"; }
sb_etcd_ns() { sb_ns etcd; }
sb_host_ns() { sb_ns "$1"; }
sb_wl_ns() { sb_ns "w-$1"; }
# sb_host_ip HOST: h<i> is 192.0.2.(10+i); with BGP even hosts are on subnet B.
sb_host_ip() {
  local i=${1#h} prefix=$FABRIC_PREFIX
  if bgp_enabled && [ $((i % 2)) -eq 0 ]; then prefix=$SUBNET_B_PREFIX; fi
  printf '%s.%d' "$prefix" $((10 + i))
}

# sb_host_bridge HOST / sb_host_gateway HOST: its subnet's bridge and router address.
sb_host_bridge() { if [[ "$(sb_host_ip "$1")" == "$FABRIC_PREFIX".* ]]; then echo br0; else echo br1; fi; }
sb_host_gateway() { if [ "$(sb_host_bridge "$1")" = br0 ]; then echo "$ROUTER_IP"; else echo "$ROUTER_IP_B"; fi; }

# sb_existing: names of sandboxes that have a state dir or namespaces.
sb_existing() {
  {
    [ -d "$STATE_ROOT" ] && ls -1 "$STATE_ROOT"
    ip netns list | awk '{print $1}' | sed -n 's/^\(mgy[0-9a-z]*\)-fab$/\1/p'
  } 2>/dev/null | sort -u
}

# sb_resolve [NAME]: selects NAME, or the only existing sandbox.
sb_resolve() {
  if [ -n "${1:-}" ]; then
    sb_select "$1"
    return
  fi
  local all
  all=$(sb_existing)
  [ -n "$all" ] || die "no sandbox is running"
  [ "$(wc -l <<<"$all")" -eq 1 ] || die "several sandboxes ($(tr '\n' ' ' <<<"$all")): pass --name"
  sb_select "$all"
}

sb_in() {
  local ns=$1
  shift
  ip netns exec "$ns" "$@"
}

# ---------------------------------------------------------------------------
# Plumbing
# ---------------------------------------------------------------------------

# sb_require_tools [DATAPLANE]: the sandbox's tools plus the chosen backend's (and
# BIRD's when routing with BGP).
sb_require_tools() {
  local dataplane=${1:-nftables} missing=() t tools=(ip etcd etcdctl nc ping timeout setsid)
  case $dataplane in
  iptables) tools+=(iptables-restore iptables-save ipset) ;;
  *) tools+=(nft) ;;
  esac
  if bgp_enabled; then tools+=(bird birdc); fi
  for t in "${tools[@]}"; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  [ ${#missing[@]} -eq 0 ] || die "missing tools: ${missing[*]} (run scripts/install-deps.sh)"
  [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
}

# sb_require_absent: dies when the current sandbox already has a state dir or any
# namespace. Call it before arming a cleanup trap, so that a trap never removes a
# sandbox this run did not create.
sb_require_absent() {
  local left
  left=$(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$SB_NAME-" || true)
  if [ -e "$SB_STATE" ] || [ -n "$left" ]; then
    die "sandbox $SB_NAME already exists; pick another --name or remove it first (sandbox.sh down --name $SB_NAME)"
  fi
}

# sb_up_abort: EXIT trap of `up` (disarmed on success): removes the half-built
# sandbox and exits non-zero (130/143 after INT/TERM, via their traps).
sb_up_abort() {
  local rc=$?
  trap - EXIT
  trap '' INT TERM # let the teardown finish
  [ "$rc" -ne 0 ] || rc=1
  log "up failed (exit $rc): removing sandbox $SB_NAME"
  sb_down
  exit "$rc"
}

sb_netns_add() {
  ip netns add "$1"
  ip -n "$1" link set lo up
}

# sb_fabric_attach NS IP PORT [BRIDGE [IFACE]]: veth from the fabric's BRIDGE (default
# br0; port PORT) to NS (IFACE, default eth0, = IP/24).
sb_fabric_attach() {
  local ns=$1 addr=$2 port=$3 bridge=${4:-br0} iface=${5:-eth0} fab
  fab=$(sb_ns fab)
  ip -n "$fab" link add "$port" type veth peer name "$iface" netns "$ns"
  ip -n "$fab" link set "$port" master "$bridge" up
  ip -n "$ns" addr add "$addr/24" dev "$iface"
  ip -n "$ns" link set "$iface" up
}

# sb_spawn NS LOGFILE CMD...: starts CMD in NS detached from this shell (it survives
# the script when --keep is used); prints its pid.
sb_spawn() {
  local ns=$1 logfile=$2
  shift 2
  setsid ip netns exec "$ns" "$@" </dev/null >>"$logfile" 2>&1 &
  local pid=$!
  disown "$pid" # no "Killed" job reports from this shell at teardown
  echo "$pid"
}

sb_etcdctl() {
  sb_in "$(sb_etcd_ns)" env ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 \
    --command-timeout=5s "$@"
}

# sb_put KEY VALUE
sb_put() { sb_etcdctl put -- "$1" "$2" >/dev/null; }
sb_del() { sb_etcdctl del "$@" >/dev/null; }

sb_wait() { # sb_wait SECONDS DESCRIPTION CMD...: polls CMD every 50 ms until it succeeds.
  local secs=$1 what=$2 deadline
  shift 2
  deadline=$(($(date +%s%N) + secs * 1000000000))
  # A subshell, so a trap that fires meanwhile (up's cleanup) keeps this shell's stderr.
  until ("$@") >/dev/null 2>&1; do
    [ "$(date +%s%N)" -lt "$deadline" ] || {
      log "timed out after ${secs}s waiting for $what"
      return 1
    }
    sleep 0.05
  done
}

sb_etcd_start() {
  local ns
  ns=$(sb_etcd_ns)
  # etcd reads ETCD_* variables as flags: start it with a clean environment.
  sb_spawn "$ns" "$SB_STATE/etcd.log" env -i PATH="$PATH" etcd --name sandbox \
    --data-dir "$SB_STATE/etcd-data" \
    --listen-client-urls "http://$ETCD_IP:2379,http://127.0.0.1:2379" \
    --advertise-client-urls "http://$ETCD_IP:2379" \
    --listen-peer-urls http://127.0.0.1:2380 \
    --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster sandbox=http://127.0.0.1:2380 \
    --logger zap --log-outputs stderr >"$SB_STATE/etcd.pid"
  sb_wait 30 "etcd" sb_etcdctl endpoint health || {
    tail -20 "$SB_STATE/etcd.log" >&2
    return 1
  }
}

# ---------------------------------------------------------------------------
# Up / down
# ---------------------------------------------------------------------------

# sb_up HOSTS DATAPLANE MARGAY_BIN [ROUTING]: fabric, etcd, outside (the router),
# HOSTS hosts with agents; with BGP routing also subnet B and the BIRDs.
sb_up() {
  local hosts=$1 dataplane=$2 margay=$3 fab out i
  ROUTING=${4:-direct}
  sb_require_tools "$dataplane"
  [ -x "$margay" ] || die "margay binary not found at '$margay' (build it, or pass --margay)"
  sb_require_absent # callers check before arming their cleanup; this is a backstop
  mkdir -p "$SB_STATE"
  printf 'DATAPLANE=%q\nMARGAY_BIN=%q\nROUTING=%q\n' "$dataplane" "$margay" "$ROUTING" >"$SB_STATE/config"
  : >"$SB_STATE/hosts"
  : >"$SB_STATE/workloads"

  fab=$(sb_ns fab)
  sb_netns_add "$fab"
  ip -n "$fab" link add br0 type bridge
  ip -n "$fab" link set br0 up

  sb_netns_add "$(sb_etcd_ns)"
  sb_fabric_attach "$(sb_etcd_ns)" "$ETCD_IP" p-etcd
  sb_etcd_start

  out=$(sb_ns out)
  sb_netns_add "$out"
  sb_fabric_attach "$out" "$ROUTER_IP" p-out
  ip -n "$out" addr add "$OUTSIDE_IP/32" dev lo
  sb_spawn "$out" "$SB_STATE/outside.log" nc -lkvn "$OUTSIDE_IP" "$OUTSIDE_PORT" >/dev/null

  sb_put /calico/v1/Ready true
  if bgp_enabled; then bgp_router_up; fi
  # The workloads' pool (no masquerade): margay routes remote workloads only inside a pool.
  sb_put "/calico/v1/ipam/v4/pool/${POOL_CIDR/\//-}" "{\"cidr\": \"$POOL_CIDR\"}"
  for i in $(seq 1 "$hosts"); do
    sb_host_add "h$i"
  done
}

# sb_host_add HOST: a host namespace on the fabric, its bird_ip in etcd, and its agent.
sb_host_add() {
  local host=$1 ns ip
  ns=$(sb_host_ns "$host")
  ip=$(sb_host_ip "$host")
  sb_netns_add "$ns"
  sb_fabric_attach "$ns" "$ip" "p-$host" "$(sb_host_bridge "$host")"
  ip -n "$ns" route add default via "$(sb_host_gateway "$host")"
  # A container host routes: the machine's own setting, not margay's.
  sb_in "$ns" sysctl -qw net.ipv4.ip_forward=1
  echo "$host" >>"$SB_STATE/hosts"
  sb_put "/calico/v1/host/$host/bird_ip" "$ip"
  if bgp_enabled; then bgp_host_up "$host"; fi
  sb_agent_start "$host"
}

sb_agent_start() {
  local host=$1 ns bgp_args
  # shellcheck disable=SC1091
  source "$SB_STATE/config"
  ns=$(sb_host_ns "$host")
  mapfile -t bgp_args < <(bgp_agent_args "$host")
  sb_spawn "$ns" "$SB_STATE/agent-$host.log" "$MARGAY_BIN" run --hostname "$host" \
    --etcd-endpoints "http://$ETCD_IP:2379" --dataplane "$DATAPLANE" \
    --metrics-addr "127.0.0.1:$METRICS_PORT" --log-format json "${bgp_args[@]}" >"$SB_STATE/agent-$host.pid"
}

sb_agent_stop() {
  local host=$1 pid
  pid=$(cat "$SB_STATE/agent-$host.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || true
  sb_wait 10 "agent $host to exit" sh -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
  rm -f "$SB_STATE/agent-$host.pid"
}

# sb_down: kills everything inside our namespaces, deletes them and the state dir.
# Best effort: carries on past failures so a half-built sandbox goes away too.
sb_down() {
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$SB_NAME-" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      kill -9 "$pid" 2>/dev/null || true
    done
  done
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$SB_NAME-" || true); do
    ip netns del "$ns" 2>/dev/null || log "could not delete namespace $ns"
  done
  [ -n "$SB_STATE" ] && rm -rf "$SB_STATE"
  return 0
}

# ---------------------------------------------------------------------------
# Workloads and data
# ---------------------------------------------------------------------------

# sb_wl_add NAME HOST IP: what the CNI plugin does (namespace, veth cali<NAME>, /32,
# routes in the workload), plus TCP listeners on WORKLOAD_PORTS. Writes no endpoint.
sb_wl_add() {
  local wl=$1 host=$2 addr=$3 ns hostns iface port
  [[ "$wl" =~ ^[a-z0-9]{1,11}$ ]] || die "bad workload name '$wl' (a-z0-9, max 11)"
  ns=$(sb_wl_ns "$wl")
  hostns=$(sb_host_ns "$host")
  iface="cali$wl"
  sb_netns_add "$ns"
  ip -n "$hostns" link add "$iface" type veth peer name eth0 netns "$ns"
  ip -n "$hostns" link set "$iface" up
  ip -n "$ns" addr add "$addr/32" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add 169.254.1.1 dev eth0 scope link
  ip -n "$ns" route add default via 169.254.1.1 dev eth0
  for port in $WORKLOAD_PORTS; do
    sb_spawn "$ns" /dev/null nc -lkn "$addr" "$port" >/dev/null
  done
  echo "$wl $host $addr $iface" >>"$SB_STATE/workloads"
}

# sb_wl_field NAME FIELD(2=host 3=ip 4=iface)
sb_wl_field() {
  awk -v w="$1" -v f="$2" '$1 == w { print $f; found=1 } END { exit !found }' \
    "$SB_STATE/workloads" || die "unknown workload '$1'"
}

sb_wl_key() {
  local host
  host=$(sb_wl_field "$1" 2)
  printf '/calico/v1/host/%s/workload/%s/%s/endpoint/%s' "$host" "$ORCHESTRATOR" "$1" "$1"
}

# sb_endpoint NAME PROFILES_JSON LABELS_JSON [STATE]: writes the workload's endpoint.
sb_endpoint() {
  local wl=$1 profiles=$2 labels=$3 state=${4:-active} ns mac addr iface
  ns=$(sb_wl_ns "$wl")
  addr=$(sb_wl_field "$wl" 3)
  iface=$(sb_wl_field "$wl" 4)
  mac=$(sb_in "$ns" cat /sys/class/net/eth0/address)
  sb_put "$(sb_wl_key "$wl")" "$(printf \
    '{"state": "%s", "name": "%s", "mac": "%s", "profile_ids": %s, "ipv4_nets": ["%s/32"], "ipv6_nets": [], "labels": %s}' \
    "$state" "$iface" "$mac" "$profiles" "$addr" "$labels")"
}

# sb_target_ip, sb_probe, sb_time_until_open and sb_matrix (real TCP probes
# between workloads) are in probe.sh.

# sb_routes_converged: every host has a route for every active workload address
# (local ones on the cali interface; remote ones via the owner's fabric address, or
# with BGP one that BIRD installed), and with BGP so does the router.
sb_routes_converged() {
  local host wl whost addr iface want got
  while read -r host; do
    while read -r wl whost addr iface; do
      got=$(ip -n "$(sb_host_ns "$host")" -4 route show "$addr/32")
      if [ "$host" = "$whost" ]; then
        want="dev $iface"
      elif bgp_enabled; then
        want="proto bird"
      else
        want="via $(sb_host_ip "$whost")"
      fi
      [[ "$got" == *"$want"* ]] || return 1
      if bgp_enabled; then
        got=$(ip -n "$(sb_ns out)" -4 route show "$addr/32" proto bird)
        [[ "$got" == *"via $(sb_host_ip "$whost")"* ]] || return 1
      fi
    done <"$SB_STATE/workloads"
  done <"$SB_STATE/hosts"
}

# ---------------------------------------------------------------------------
# Status and help
# ---------------------------------------------------------------------------

sb_status() {
  local host pid
  echo "sandbox $SB_NAME (state in $SB_STATE, routing between hosts: $ROUTING)"
  echo "namespaces:"
  ip netns list | awk '{print $1}' | grep "^$SB_NAME-" | sed 's/^/  /' || true
  echo "agents:"
  while read -r host; do
    pid=$(cat "$SB_STATE/agent-$host.pid" 2>/dev/null || echo "")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      echo "  $host ($(sb_host_ip "$host")): running, pid $pid"
    else
      echo "  $host ($(sb_host_ip "$host")): NOT running"
    fi
  done <"$SB_STATE/hosts"
  if bgp_enabled; then
    echo "BGP sessions of the router (AS $BGP_AS, route reflector):"
    bgp_birdc router show protocols 2>&1 | awk 'NR > 1 && $2 == "BGP"' | sed 's/^/  /' || true
  fi
  echo "workloads:"
  sed 's/^/  /' "$SB_STATE/workloads"
}

sb_explore_help() {
  local h1 w
  h1=$(sb_host_ns h1)
  w=$(head -1 "$SB_STATE/workloads" | awk '{print $1}')
  cat <<EOF
The sandbox '$SB_NAME' is still running. Look inside:
  ip netns list | grep $SB_NAME-                                 # all its namespaces
  ip netns exec $h1 nft list table inet margay                  # h1's firewall (nftables backend)
  ip netns exec $h1 iptables-save; ip netns exec $h1 ipset list  # (iptables backend)
  ip -n $h1 route                                              # routes margay programmed
  ip netns exec $h1 curl -s http://127.0.0.1:$METRICS_PORT/metrics  # h1's metrics
  tail -f $SB_STATE/agent-h1.log                     # h1's agent log (JSON)
  ip netns exec $(sb_etcd_ns) etcdctl get --prefix /calico/v1   # the datastore
EOF
  if bgp_enabled; then
    cat <<EOF
  ip -n $h1 route show proto bird                                # routes h1 learned over BGP
  ip netns exec $h1 birdc -s $(bgp_sock h1) show protocols   # h1's BGP sessions
  ip netns exec $h1 $MARGAY_BIN status --etcd-endpoints http://$ETCD_IP:2379 --bird-socket $(bgp_sock h1)
  cat $(bgp_conf h1)                                # the BIRD file margay wrote for h1
  ip netns exec $(sb_ns out) birdc -s $(bgp_sock router) show route  # the router's view
EOF
  fi
  cat <<EOF
  ip netns exec $(sb_wl_ns "$w") nc -zv -w1 <ip> <port>        # probe from workload $w
  $SANDBOX_DIR/sandbox.sh status --name $SB_NAME
  $SANDBOX_DIR/sandbox.sh matrix --name $SB_NAME SPEC   # lines: src dst port allow|deny
When done: $SANDBOX_DIR/sandbox.sh down --name $SB_NAME
EOF
}

usage() {
  cat <<EOF
usage: sandbox.sh <command> [options]
  demo [--keep] [--dataplane nftables|iptables] [--routing R] [--margay BIN] [--name N]
        2 hosts, a multi-tier application, the connectivity matrix before and after a
        live policy change; exit 0 only when observed matches expected every time
  up [--hosts N] [--dataplane D] [--routing R] [--margay BIN] [--name N]   an empty cluster
        --routing bgp (default): hosts on two subnets behind a router running BIRD as
        route reflector (node mesh off), BIRD + margay on every host; mesh: the same
        with the node-to-node mesh on; direct: one subnet, margay routes via bird_ip
  workload --name N WL HOST IP PROFILES_JSON LABELS_JSON    add a workload + endpoint
  put --name N KEY VALUE | etcdctl --name N ARGS...         write / query the datastore
  probe --name N SRC DST PORT                               one TCP probe
  matrix --name N SPEC                                      probe a spec, print the table
  status [--name N]     list namespaces, agents, workloads
  down [--name N | --all]  tear down (kills processes in its namespaces, deletes them)
State lives in $STATE_ROOT/<name>; namespaces are <name>-*.
EOF
}

# default_margay: the freshest built binary (release preferred).
default_margay() {
  local t=${CARGO_TARGET_DIR:-$REPO_DIR/target}
  if [ -x "$t/release/margay" ]; then echo "$t/release/margay"; else echo "$t/debug/margay"; fi
}

main() {
  local cmd=${1:-help} name="" hosts=2 dataplane=nftables routing=bgp margay="" keep=0 all=0 args=()
  [ $# -gt 0 ] && shift
  while [ $# -gt 0 ]; do
    case $1 in
    --name) name=$2; shift 2 ;;
    --hosts) hosts=$2; shift 2 ;;
    --dataplane) dataplane=$2; shift 2 ;;
    --routing) routing=$2; shift 2 ;;
    --margay) margay=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --all) all=1; shift ;;
    -h | --help) usage; return 0 ;;
    *) args+=("$1"); shift ;;
    esac
  done
  margay=${margay:-${MARGAY_BIN:-$(default_margay)}}
  case $dataplane in nftables | iptables) ;; *) die "bad --dataplane '$dataplane'" ;; esac
  case $routing in bgp | mesh | direct) ;; *) die "bad --routing '$routing' (bgp, mesh or direct)" ;; esac
  case $cmd in
  demo)
    # shellcheck source=deploy/sandbox/demo.sh
    source "$SANDBOX_DIR/demo.sh"
    demo_main "$name" "$dataplane" "$margay" "$keep" "$routing"
    ;;
  up)
    sb_select "${name:-mgy$$}"
    sb_require_absent # before the trap: never remove a sandbox we did not create
    # Any failure, die or signal removes what was built; disarmed once up.
    trap sb_up_abort EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    sb_up "$hosts" "$dataplane" "$margay" "$routing"
    trap - EXIT INT TERM
    echo "sandbox $SB_NAME is up"
    ;;
  workload)
    sb_resolve "$name"
    [ ${#args[@]} -eq 5 ] || die "workload WL HOST IP PROFILES_JSON LABELS_JSON"
    sb_wl_add "${args[0]}" "${args[1]}" "${args[2]}"
    sb_endpoint "${args[0]}" "${args[3]}" "${args[4]}"
    ;;
  put) sb_resolve "$name"; sb_put "${args[@]}" ;;
  etcdctl) sb_resolve "$name"; sb_etcdctl "${args[@]}" ;;
  probe) sb_resolve "$name"; sb_probe "${args[@]}" && echo allow || { echo deny; return 1; } ;;
  matrix) sb_resolve "$name"; sb_matrix "${args[0]}" ;;
  status) sb_resolve "$name"; sb_status ;;
  down)
    if [ "$all" -eq 1 ]; then
      for name in $(sb_existing); do sb_select "$name"; sb_down; log "removed $name"; done
    else
      sb_resolve "$name"
      sb_down
      log "removed $SB_NAME"
    fi
    ;;
  help | -h | --help) usage ;;
  *) usage; return 2 ;;
  esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
