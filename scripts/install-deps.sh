#!/usr/bin/env bash
# Installs what margay's build, tests and demo need on a fresh Debian machine:
# etcd (server + etcdctl), protoc and protobuf's .proto includes (for
# etcd-client), nftables, iptables, ipset,
# iproute2, conntrack, ping, nc, promtool, systemd-analyze, openssl (TLS test
# certificates), a C and C++ toolchain (crates that build C, libFuzzer), the
# rustfmt and clippy components, BIRD 2 (Debian `bird2`: the BGP speaker the
# tests and the sandbox run inside network namespaces), and for `make fuzz` a
# nightly toolchain and cargo-fuzz, and cargo-deny for the license and
# duplicate-version check in `make lint`. Skips apt when everything is already
# there.
set -euo pipefail

need=()
check() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
check etcd etcd-server
check etcdctl etcd-client
check protoc protobuf-compiler
# etcd-client's protos import protobuf's well-known types (descriptor.proto).
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
check nft nftables
check iptables iptables
check ipset ipset
check ip iproute2
check conntrack conntrack
check ping iputils-ping
check nc netcat-openbsd
check promtool prometheus
check systemd-analyze systemd
check sysctl procps
check make make
check curl curl
check openssl openssl
check cc gcc
# libFuzzer (built by the fuzz crate) is C++.
check c++ g++
check ld binutils
# BIRD lives in /usr/sbin, which a non-root PATH may lack.
[ -x /usr/sbin/bird ] && [ -x /usr/sbin/birdc ] || need+=(bird2)
# The metrics end-to-end test parses /metrics with the reference OpenMetrics parser.
/usr/bin/python3 -c 'import prometheus_client.openmetrics.parser' >/dev/null 2>&1 \
  || need+=(python3-prometheus-client)

# The lint step needs rustfmt and clippy; rustup adds them when missing.
for component in rustfmt clippy; do
  tool=$([ "$component" = rustfmt ] && echo fmt || echo clippy)
  if ! cargo "$tool" --version >/dev/null 2>&1; then
    command -v rustup >/dev/null 2>&1 || { echo "cargo $tool missing and no rustup to add it" >&2; exit 1; }
    rustup component add "$component"
  fi
done

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # bird2's postinst starts BIRD (invoke-rc.d / deb-systemd-invoke) in the
  # machine's own network namespace, where it would run Debian's sample config
  # (kernel protocol with `export all`). margay's tests and sandbox only ever
  # run BIRD inside namespaces they create, so: forbid service starts during
  # the install with a temporary policy-rc.d (both helpers honour it; an
  # existing one, e.g. Docker's, is left alone) and afterwards switch off the
  # start at boot of the BIRD this script installed.
  temp_policy=""
  if printf '%s\n' "${need[@]}" | grep -qx bird2 && [ ! -e /usr/sbin/policy-rc.d ]; then
    temp_policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\n# temporary, by margay scripts/install-deps.sh\nexit 101\n' >"$temp_policy"
    chmod 755 "$temp_policy"
    trap 'rm -f "$temp_policy"' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if [ -n "$temp_policy" ]; then
    rm -f "$temp_policy"
    trap - EXIT
  fi
  if printf '%s\n' "${need[@]}" | grep -qx bird2; then
    deb-systemd-helper disable bird.service >/dev/null 2>&1 || true
    update-rc.d bird disable >/dev/null 2>&1 || true
    echo "bird2 installed; its service is not started and not enabled at boot" \
      "(margay's tests run BIRD in network namespaces; deploy/bird/README.md for hosts)"
  fi
  # gcc without recommends lacks the C library headers.
  if printf '%s\n' "${need[@]}" | grep -qx gcc; then
    apt-get install -y -qq --no-install-recommends libc6-dev >/dev/null
  fi
fi

# `make fuzz` runs cargo-fuzz on a nightly toolchain (the fuzz crate is not
# part of the stable build). Pinned so CI fuzzes with a known version.
CARGO_FUZZ_VERSION=0.13.1
if ! cargo +nightly --version >/dev/null 2>&1; then
  command -v rustup >/dev/null 2>&1 || { echo "no nightly toolchain and no rustup to add it" >&2; exit 1; }
  rustup toolchain install nightly --profile minimal
fi
if [ "$(cargo +nightly fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

# `make lint` runs `cargo deny check licenses bans` (deny.toml). Installed only
# when missing: a build from source takes about 20 minutes on 2 cores.
CARGO_DENY_VERSION=0.20.2
if ! cargo deny --version >/dev/null 2>&1; then
  cargo install cargo-deny --locked --version "$CARGO_DENY_VERSION"
fi
