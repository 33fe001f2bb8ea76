#!/usr/bin/env bash
# Actor invoke round trip and throughput over libp2p (verified vs unverified, same run), and
# the idle RSS of a real `nunet run` daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p nunet-node --bench invoke
cargo build --release -p nunet-cli -q
dir=$(mktemp -d)
trap 'target/release/nunet devnet down --dir "$dir/dn" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
NUNET_INSECURE_FAST_KDF=1 target/release/nunet devnet up --nodes 1 --dir "$dir/dn" --base-port 0 >/dev/null
sleep 5
pid=$(cat "$dir/dn/node-1/nunet.pid")
rss_kb=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
echo "idle daemon RSS: $((rss_kb / 1024)) MB (baseline: 30 MB target, ratio: $(awk "BEGIN {printf \"%.2f\", $rss_kb/1024/30}"))"
