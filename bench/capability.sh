#!/usr/bin/env bash
# Capability verification throughput vs raw ed25519 (same run). BENCH_MS sets time per case.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -p nunet-capability --bench verify "$@"
