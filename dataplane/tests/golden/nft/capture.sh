#!/bin/sh
# Captures what nft makes of batch.nft (the golden ops as the text transport
# renders them) into batch.netlink, in a throwaway network namespace.
# Needs root and nft; run from anywhere. See dataplane/tests/nft_golden.rs.
set -eu
dir=$(cd "$(dirname "$0")" && pwd)
ns="margay-golden-$$"
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
{
    echo "# nft --debug=netlink -f batch.nft ($(nft --version))"
    ip netns exec "$ns" nft --debug=netlink -f "$dir/batch.nft"
} >"$dir/batch.netlink"
