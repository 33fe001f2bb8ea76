#!/usr/bin/env bash
# Deployment latency on a local 3-node devnet, one run:
#   (a) 1-allocation Docker task submit → Completed vs `docker run --rm` of the same image,
#   (b) WASM task submit → Completed,
#   (c) per-phase timings from the orchestrator's event log (bids, placement, commit, allocate,
#       start, run+exit), printed as a table of p50s, with the CLI's wall time beside it.
# "submit → Completed" is the orchestrator's "deployment created" → "every task completed";
# one warm-up deployment per workload is not counted.
# PROFILE=debug|release (default release; a release build of nunet-cli takes minutes the
# first time), RUNS (default 5). NUNET_BIN=<path> skips the build and uses that binary.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-5}"
. bench/lib.sh
work="$(mktemp -d)"
dir="$work/dn"
trap '"$nunet" devnet down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
NUNET_INSECURE_FAST_KDF=1 "$nunet" devnet up --nodes 3 --dir "$dir" --base-port 0 >/dev/null
export DMS_PASSPHRASE_FILE="$dir/passphrase"
for i in 1 2 3; do NUNET_HOME="$dir/node-$i" "$nunet" actor cmd /dms/node/onboarding/onboard --cpu 1 --ram 1 --disk 2 >/dev/null; done
export NUNET_HOME="$dir/node-1"

# A WASI hello module and its ensemble.
# Under the devnet directory: providers serve modules only from there (job.image_roots).
hello_wasm "$dir"

python3 - "$nunet" "$runs" "$work" <<'PY'
import json, statistics, subprocess, sys, time
nunet, runs, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def sh(*a): return subprocess.run(a, check=True, capture_output=True, text=True).stdout
def deploy(f):
    t = time.monotonic(); d = json.loads(sh(nunet, "deploy", "-f", f, "-t", "60s", "--json"))
    wall = (time.monotonic() - t) * 1000
    assert d["status"] == "Completed", d
    st = json.loads(sh(nunet, "deployment", "status", d["id"], "--json"))
    return wall, st.get("events") or []
# Phase boundaries from the orchestrator's events (first / last event whose message contains
# the needle); a phase lasts from the previous boundary to its own.
MARKS = [("created", "deployment created", min), ("asked", "requesting bids", min),
         ("bids", "bid from", max), ("placement", "placed node", max),
         ("commit", "committed node", max), ("allocate", "allocated node", max),
         ("start", "started ", max), ("run+exit", "every task completed", max)]
def phases(ev):
    at = {}
    for key, needle, pick in MARKS:
        hits = [e["at_ms"] for e in ev if needle in e["message"]]
        at[key] = pick(hits) if hits else None
    out, prev = {}, at["created"]
    for key, _, _ in MARKS[1:]:
        if at[key] is None or prev is None: out[key] = None; continue
        out[key] = at[key] - prev; prev = at[key]
    out["total"] = None if at["run+exit"] is None else at["run+exit"] - at["created"]
    return out
def p50(v): v = [x for x in v if x is not None]; return statistics.median(v) if v else float("nan")
sh("docker", "run", "--rm", "nunet-test/busybox:latest", "echo", "warm")
base = []
for _ in range(runs):
    t = time.monotonic(); sh("docker", "run", "--rm", "nunet-test/busybox:latest", "echo", "hello"); base.append((time.monotonic() - t) * 1000)
print(f"baseline: docker run --rm nunet-test/busybox echo, p50 of {runs}: {p50(base):.0f} ms")
results = {}
for name, f in [("docker task", "examples/hello.yaml"), ("wasm task", f"{work}/dn/wasm.yaml")]:
    deploy(f)  # warm-up (image inspect, module cache), not counted
    walls, tables = [], []
    for _ in range(runs):
        wall, ev = deploy(f); walls.append(wall); tables.append(phases(ev))
    results[name] = (walls, tables)
cols = ["asked", "bids", "placement", "commit", "allocate", "start", "run+exit", "total"]
print(f"\nper-phase p50 (ms, from the orchestrator's events, {runs} runs each):")
print(f"{'workload':<12}" + "".join(f"{c:>10}" for c in cols) + f"{'CLI wall':>10}")
for name, (walls, tables) in results.items():
    print(f"{name:<12}" + "".join(f"{p50([t[c] for t in tables]):>10.0f}" for c in cols) + f"{p50(walls):>10.0f}")
d = p50([t["total"] for t in results["docker task"][1]]); w = p50([t["total"] for t in results["wasm task"][1]])
b = p50(base)
print(f"\n(a) docker task submit→Completed p50 {d:.0f} ms vs docker run --rm {b:.0f} ms: "
      f"ratio {d/b:.2f}, overhead {d-b:.0f} ms (target ≤ 150 ms)")
print(f"(b) wasm task submit→Completed p50 {w:.0f} ms (target ≤ 100 ms)")
PY
