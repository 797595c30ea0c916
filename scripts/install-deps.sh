#!/usr/bin/env bash
# Installs what margay's build, tests and demo need on a fresh Debian machine:
# etcd (server + etcdctl), protoc and protobuf's .proto includes (for
# etcd-client), nftables, iptables, ipset,
# iproute2, conntrack, ping, nc, promtool, systemd-analyze, openssl (TLS test
# certificates), a C and C++ toolchain (crates that build C, libFuzzer), the
# rustfmt and clippy components, and for `make fuzz` a nightly toolchain and
# cargo-fuzz, and cargo-deny for the license and duplicate-version check in
# `make lint`. Skips apt when everything is already there.
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
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
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
