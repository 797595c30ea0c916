# shellcheck shell=bash
# The `make demo` scenario, sourced by sandbox.sh (`sandbox.sh demo`): a 2-host
# sandbox running a small three-tier application, its connectivity matrix checked
# with real packets, a live policy change timed, the matrix again, then cleanup.
# By default (`--routing bgp`) h1 and h2 sit on different subnets behind a router
# that runs BIRD as their route reflector (bgp.sh); each host runs BIRD configured
# by its margay, and the demo prints the routes each host learned over BGP before
# the first matrix. `--routing mesh` adds the node-to-node mesh; `--routing direct`
# is the single-subnet cluster where margay routes via the other host's bird_ip.
#
# The application (policy documents come from real Calico-era sources in
# tests/fixtures/calico-v1, a copy of ../shared/fixtures/calico-v1, when present):
#   h1: client 10.65.1.2  profile PROF  (calico-containers docs: inbound from tag PROF)
#       web    10.65.1.3  profile WEB   (calico-containers docs: tcp 80/443 + ping),
#                         label role=webserver, selected by tier "my-tier"'s policy
#                         "webserver" (bare-metal docs: inbound tcp 80 only)
#   h2: app    10.65.2.2  profile APP   (calico-containers docs: tcp 7890 from tag
#                         APP_7890, carried by WEB), profile label tier=app
#       db     10.65.2.3  profile DB    (tcp 5432 from selector tier == "app")
#   outside 198.51.100.1:8080 on the router: the pool masquerades, so it must see
#   the hosts' addresses, never a 10.65.0.0/16 one.
# The live change lets "webserver" accept 443 too.

DEMO_FIXTURES=${MARGAY_FIXTURES:-$REPO_DIR/tests/fixtures/calico-v1}

# demo_doc FIXTURE FALLBACK: the fixture's text when present, else FALLBACK (the same
# document, for checkouts without the shared fixtures).
demo_doc() {
  if [ -f "$DEMO_FIXTURES/$1" ]; then cat "$DEMO_FIXTURES/$1"; else printf '%s' "$2"; fi
}

demo_step() { printf '\n== %s\n' "$*"; }

demo_now_ms() { echo $(($(date +%s%N) / 1000000)); }

demo_write_app() {
  local p=/calico/v1/policy
  sb_put /calico/v1/ipam/v4/pool/10.65.0.0-16 '{"cidr": "10.65.0.0/16", "masquerade": true}'

  sb_put "$p/profile/PROF/rules" "$(demo_doc calico-containers-doc-default-profile-PROF-rules.json \
    '{"id": "PROF", "inbound_rules": [{"action": "allow", "src_tag": "PROF"}], "outbound_rules": [{"action": "allow"}]}')"
  sb_put "$p/profile/PROF/tags" '["PROF"]'

  sb_put "$p/profile/WEB/rules" "$(demo_doc calico-containers-doc-web_rules.json \
    '{"id": "WEB", "inbound_rules": [{"action": "allow", "protocol": "tcp", "dst_ports": [80, 443]}, {"action": "allow", "icmp_type": 8, "protocol": "icmp"}], "outbound_rules": [{"action": "allow"}]}')"
  sb_put "$p/profile/WEB/tags" '["APP_7890"]'

  sb_put "$p/profile/APP/rules" "$(demo_doc calico-containers-doc-APP-rules.json \
    '{"id": "APP", "inbound_rules": [{"action": "allow", "protocol": "tcp", "dst_ports": [7890], "src_tag": "APP_7890"}, {"action": "allow", "protocol": "icmp", "icmp_type": 8}], "outbound_rules": [{"action": "allow"}]}')"
  sb_put "$p/profile/APP/tags" '["APP"]'
  sb_put "$p/profile/APP/labels" '{"tier": "app"}'

  sb_put "$p/profile/DB/rules" \
    '{"inbound_rules": [{"action": "allow", "protocol": "tcp", "dst_ports": [5432], "src_selector": "tier == \"app\""}], "outbound_rules": [{"action": "allow"}]}'
  sb_put "$p/profile/DB/labels" '{"tier": "db"}'

  sb_put "$p/tier/my-tier/metadata" "$(demo_doc baremetal-doc-tier-my-tier-metadata.json '{"order": 100}')"
  sb_put "$p/tier/my-tier/policy/webserver" "$(demo_doc baremetal-doc-policy-webserver.json \
    '{"selector": "role==\"webserver\"", "order": 100, "inbound_rules": [{"protocol": "tcp", "dst_ports": [80], "action": "allow"}], "outbound_rules": [{"action": "allow"}]}')"

  sb_wl_add client h1 10.65.1.2
  sb_wl_add web h1 10.65.1.3
  sb_wl_add app h2 10.65.2.2
  sb_wl_add db h2 10.65.2.3
  sb_endpoint client '["PROF"]' '{}'
  sb_endpoint web '["WEB"]' '{"role": "webserver"}'
  sb_endpoint app '["APP"]' '{}'
  sb_endpoint db '["DB"]' '{}'
}

# demo_spec 443_ALLOWED(allow|deny): the expected matrix.
demo_spec() {
  local w443=$1
  cat <<EOF
# src   dst     port  expected
client  web     80    allow
client  web     443   $w443
client  app     7890  deny
client  db      5432  deny
client  outside 8080  allow
web     app     7890  allow
web     db      5432  deny
web     outside 8080  allow
app     web     80    allow
app     web     443   $w443
app     db      5432  allow
app     outside 8080  allow
db      web     80    allow
db      web     443   $w443
db      app     7890  deny
db      outside 8080  allow
EOF
}

demo_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  demo_step "cleanup"
  sb_down
  if ip netns list | grep -q "^$SB_NAME-"; then
    echo "WARNING: namespaces of $SB_NAME are left: $(ip netns list | grep "^$SB_NAME-" | tr '\n' ' ')"
    rc=1
  else
    echo "removed all namespaces of $SB_NAME"
  fi
  exit "$rc"
}

# demo_topology: one line saying what sb_up builds for the current ROUTING.
demo_topology() {
  case $ROUTING in
  direct) echo "one subnet, router/outside server, 2 hosts; margay routes via bird_ip" ;;
  *)
    echo "subnets 192.0.2.0/24 (h1) and $SUBNET_B_PREFIX.0/24 (h2) joined by a router running BIRD" \
      "(AS $BGP_AS, route reflector; node mesh $([ "$ROUTING" = mesh ] && echo on || echo off))," \
      "BIRD + margay --inter-host-routes bgp on each host"
    ;;
  esac
}

demo_main() {
  local name=$1 dataplane=$2 margay=$3 keep=$4 routing=${5:-bgp} t0 t1 t_agents ms failed=0
  sb_select "${name:-mgy$$}"
  # Refuse an existing sandbox before arming the cleanup, which would remove it.
  sb_require_absent
  # Cleanup on any exit, failure or signal; --keep disarms it once the demo is done,
  # so a finished sandbox stays but a half-built one never does.
  trap demo_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  ROUTING=$routing
  demo_step "starting sandbox $SB_NAME ($dataplane backend): $(demo_topology)"
  echo "binary: $margay"
  t0=$(demo_now_ms)
  sb_up 2 "$dataplane" "$margay" "$routing"
  t_agents=$(demo_now_ms)
  echo "namespaces up, etcd healthy, agents started in $(($(demo_now_ms) - t0)) ms"

  demo_step "writing the application to etcd (pool, 4 profiles, tier my-tier, 4 endpoints)"
  t0=$(demo_now_ms)
  demo_write_app
  if bgp_enabled && sb_wait 30 "BGP sessions (margay writes BIRD's file, BIRD connects)" bgp_sessions_up; then
    echo "both hosts' BGP sessions with the router established $(($(demo_now_ms) - t_agents)) ms after the agents started"
  fi
  if ! sb_wait 30 "routes on both hosts" sb_routes_converged ||
    ! sb_wait 30 "client -> web:80" sb_probe client web 80; then
    echo "the cluster did not converge; agent logs:"
    tail -n 20 "$SB_STATE"/agent-*.log
    if bgp_enabled; then
      echo "BGP state:"
      bgp_show_learned || true
    fi
    return 1
  fi
  echo "routes and first connection in place $(($(demo_now_ms) - t0)) ms after the first write"

  if bgp_enabled; then
    demo_step "routes learned over BGP (ip route show proto bird: installed by BIRD, not by margay)"
    bgp_show_learned
  fi

  demo_step "connectivity matrix (TCP connections between workloads, real packets)"
  demo_spec deny >"$SB_STATE/spec-before"
  sb_matrix "$SB_STATE/spec-before" || failed=1

  demo_step "live change: tier my-tier / policy webserver now accepts tcp 443 as well"
  t0=$(date +%s%N)
  sb_put /calico/v1/policy/tier/my-tier/policy/webserver \
    '{"selector": "role==\"webserver\"", "order": 100, "inbound_rules": [{"protocol": "tcp", "dst_ports": [80, 443], "action": "allow"}], "outbound_rules": [{"action": "allow"}]}'
  t1=$(date +%s%N)
  if ms=$(sb_time_until_open app web 443 10 "$t1"); then
    echo "app (h2) -> web (h1):443 open ${ms} ms after etcd acknowledged the write" \
      "(etcdctl itself took $(((t1 - t0) / 1000000)) ms; probe granularity ~5 ms)"
  else
    echo "app (h2) -> web (h1):443 still closed 10 s after the etcd write"
    failed=1
  fi
  demo_spec allow >"$SB_STATE/spec-after"
  sb_matrix "$SB_STATE/spec-after" || failed=1

  if bgp_enabled; then
    demo_step "a new workload on h1 (10.65.1.9): its route reaches h2 over BGP (h1's BIRD -> router -> h2's BIRD)"
    sb_wl_add extra h1 10.65.1.9
    t0=$(date +%s%N)
    sb_endpoint extra '["PROF"]' '{}'
    if ms=$(bgp_ms_until_learned h2 10.65.1.9 "$t0" 10); then
      echo "in h2's kernel ${ms} ms after the endpoint write began: $(ip -n "$(sb_host_ns h2)" -4 route show 10.65.1.9/32)"
    else
      echo "h2 has no BGP route to 10.65.1.9 10 s after the endpoint was written"
      failed=1
    fi
  fi

  demo_step "who did the outside server see? (pool 10.65.0.0/16 masquerades: host addresses expected)"
  grep -o 'Connection received on [0-9.]*' "$SB_STATE/outside.log" | awk '{print $4}' | sort | uniq -c |
    sed 's/^/  /'
  if grep -q 'Connection received on 10\.65\.' "$SB_STATE/outside.log"; then
    echo "  unexpected: a pool address reached the outside unmasqueraded"
    failed=1
  fi

  demo_step "result"
  if [ "$failed" -eq 0 ]; then
    echo "PASS: observed connectivity matched the policy, before and after the live change"
  else
    echo "FAIL: observed connectivity differs from the policy (see the !! cells above)"
  fi
  if [ "$keep" -eq 1 ]; then
    trap - EXIT INT TERM
    echo
    sb_explore_help
  fi
  return "$failed"
}
