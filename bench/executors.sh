#!/usr/bin/env bash
# Executor start-up benchmarks (one run each, baselines measured in the same run):
#   Docker `echo` start→exit via the executor vs `docker run --rm` (target ≤ 1.0×),
#   WASM hello start→exit cold and cached vs wasmtime called directly (target: cached ≤ 5 ms),
#   QEMU microvm boot→marker via the executor vs the same qemu command by hand (target ≤ 1.1×).
# Needs the runtimes from .ci/install-runtimes.sh. BENCH_RUNS sets repetitions.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p nunet-executor-wasm --bench wasm "$@"
cargo bench -p nunet-executor --bench executors "$@"
