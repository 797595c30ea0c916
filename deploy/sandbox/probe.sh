# shellcheck shell=bash
# Probing, sourced by sandbox.sh: one TCP connection attempt between workloads, the
# time until a port opens, and the connectivity matrix of a spec.

# sb_target_ip NAME: a workload's address, or the outside server's.
sb_target_ip() {
  if [ "$1" = outside ]; then echo "$OUTSIDE_IP"; else sb_wl_field "$1" 3; fi
}

# sb_probe SRC DST PORT: exit 0 when a TCP connection from workload SRC to DST:PORT
# is accepted within a second (real packets through both hosts' rules).
sb_probe() {
  local ip
  ip=$(sb_target_ip "$2")
  timeout 3 ip netns exec "$(sb_wl_ns "$1")" nc -z -w1 "$ip" "$3" >/dev/null 2>&1
}

# sb_time_until_open SRC DST PORT DEADLINE_S T0_NS: probes SRC -> DST:PORT with four
# staggered loops of short-lived connection attempts; prints ms from T0 to the first
# accepted connection (granularity ~10 ms), or fails at the deadline.
sb_time_until_open() {
  local src=$1 dst=$2 port=$3 secs=$4 t0=$5 ip ns dir pids=() k first=""
  ip=$(sb_target_ip "$dst")
  ns=$(sb_wl_ns "$src")
  dir=$(mktemp -d)
  for k in 0 1 2 3; do
    ip netns exec "$ns" bash -c '
      sleep "0.00$(( $1 * 5 ))"
      end=$(( $(date +%s%N) + $4 * 1000000000 ))
      until timeout 0.02 nc -z "$2" "$3" 2>/dev/null; do
        [ "$(date +%s%N)" -lt "$end" ] || exit 1
      done
      date +%s%N >"$5/$1"' _ "$k" "$ip" "$port" "$secs" "$dir" &
    pids+=($!)
  done
  wait "${pids[@]}" || true
  for k in "$dir"/*; do
    [ -f "$k" ] || continue
    if [ -z "$first" ] || [ "$(cat "$k")" -lt "$first" ]; then first=$(cat "$k"); fi
  done
  rm -rf "$dir"
  [ -n "$first" ] || return 1
  echo $(((first - t0) / 1000000))
}

# ---------------------------------------------------------------------------
# Connectivity matrix
# ---------------------------------------------------------------------------

# sb_matrix SPEC: SPEC has lines "src dst port allow|deny" ('#' comments). Probes every
# line in parallel, prints a table (rows: sources, columns: dst:port) and returns 0 only
# when every observation matches its expectation.
sb_matrix() {
  local spec=$1 dir rows cols src dst port exp n=0 bad=0 line cell obs pids=()
  dir=$(mktemp -d)
  while read -r src dst port exp; do
    [[ -z "$src" || "$src" == \#* ]] && continue
    n=$((n + 1))
    (if sb_probe "$src" "$dst" "$port"; then echo allow; else echo deny; fi) >"$dir/$src,$dst:$port" &
    pids+=($!)
  done <"$spec"
  # Only our probes: a bare `wait` would also wait for the sandbox's daemons.
  wait "${pids[@]}"
  # The listeners are single `nc -lk` processes with a tiny accept backlog, so a
  # burst of parallel probes can lose a SYN to an allowed port. Probe every cell
  # that disagrees once more, alone; a real policy mismatch disagrees again.
  while read -r src dst port exp; do
    [[ -z "$src" || "$src" == \#* ]] && continue
    [ "$(cat "$dir/$src,$dst:$port")" = "$exp" ] && continue
    if sb_probe "$src" "$dst" "$port"; then echo allow; else echo deny; fi >"$dir/$src,$dst:$port"
  done <"$spec"
  rows=$(awk '!/^#/ && NF { print $1 }' "$spec" | awk '!seen[$0]++')
  cols=$(awk '!/^#/ && NF { print $2 ":" $3 }' "$spec" | awk '!seen[$0]++')
  printf '  %-16s' "from \\ to"
  for cell in $cols; do printf ' %-13s' "$cell"; done
  printf '\n'
  for src in $rows; do
    line=$(printf '  %-16s' "$src ($(sb_wl_field "$src" 2))")
    for cell in $cols; do
      exp=$(awk -v s="$src" -v c="$cell" '$1 == s && $2 ":" $3 == c { print $4 }' "$spec")
      if [ -z "$exp" ]; then
        line+=$(printf ' %-13s' "  .")
        continue
      fi
      obs=$(cat "$dir/$src,$cell")
      if [ "$obs" = "$exp" ]; then
        line+=$(printf ' %-13s' "  $( [ "$obs" = allow ] && echo ok || echo '--')")
      else
        bad=$((bad + 1))
        line+=$(printf ' %-13s' "!!$( [ "$obs" = allow ] && echo ok || echo '--') (exp $( [ "$exp" = allow ] && echo ok || echo '--'))")
      fi
    done
    printf '%s\n' "$line"
  done
  rm -rf "$dir"
  printf '  ok = connection accepted, -- = blocked, . = not probed; %d probes, %d unexpected\n' "$n" "$bad"
  [ "$bad" -eq 0 ]
}
