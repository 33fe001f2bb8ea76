#!/usr/bin/env bash
# Resource accounting: commit+allocate+release cycles/s with durable writes vs plain SQLite
# writing the same rows (same run, same disk). BENCH_MS sets time per case.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR="${BENCH_DIR:-$PWD/target}" exec cargo bench -p nunet-resources --bench accounting "$@"
