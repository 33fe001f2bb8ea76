#!/usr/bin/env bash
# Placement solver vs NuNet's random sampling (p50/p99 per ensemble size and bid count).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -p nunet-placement --bench solver "$@"
