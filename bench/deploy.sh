#!/usr/bin/env bash
# Deployment latency on a local 3-node devnet, one run:
#   (a) 1-allocation Docker task submit → Completed vs `docker run --rm` of the same image,
#   (b) WASM task submit → Completed vs running the module with the wasm executor's baseline,
#   (c) per-phase timings from the orchestrator's event log (bids, placement, commit, allocate, start).
# PROFILE=debug|release (default release), RUNS (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${PROFILE:-release}"
runs="${RUNS:-5}"
if [ "$profile" = release ]; then cargo build -q --release -p nunet-cli; else cargo build -q -p nunet-cli; fi
nunet="$PWD/target/$profile/nunet"
work="$(mktemp -d)"
dir="$work/dn"
trap '"$nunet" devnet down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
NUNET_INSECURE_FAST_KDF=1 "$nunet" devnet up --nodes 3 --dir "$dir" --base-port 0 >/dev/null
export DMS_PASSPHRASE_FILE="$dir/passphrase"
for i in 1 2 3; do NUNET_HOME="$dir/node-$i" "$nunet" actor cmd /dms/node/onboarding/onboard --cpu 1 --ram 1 --disk 2 >/dev/null; done
export NUNET_HOME="$dir/node-1"

# A WASI hello module and its ensemble.
cat >"$work/hello.wat" <<'WAT'
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wasm\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 16))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
WAT
cargo run -q -p nunet-executor-wasm --example wat2wasm -- "$work/hello.wat" "$work/hello.wasm"
sed -e "s|module: ./greet.wasm.*|module: $work/hello.wasm|" -e '/args:/d' -e '/environment:/d' examples/wasm-hello.yaml >"$work/wasm.yaml"

deploy() { # prints "<wall ms> <id>"
  local t0 t1 id
  t0=$(date +%s%3N)
  id=$("$nunet" deploy -f "$1" -t 60s --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["status"]=="Completed", d; print(d["id"])')
  t1=$(date +%s%3N)
  echo "$((t1 - t0)) $id"
}

python3 - "$nunet" "$runs" "$work" <<'PY'
import json, statistics, subprocess, sys, time
nunet, runs, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def sh(*a): return subprocess.run(a, check=True, capture_output=True, text=True).stdout
def deploy(f):
    t = time.monotonic(); d = json.loads(sh(nunet, "deploy", "-f", f, "-t", "60s", "--json"))
    wall = (time.monotonic() - t) * 1000
    assert d["status"] == "Completed", d
    st = json.loads(sh(nunet, "deployment", "status", d["id"], "--json"))
    ev = st.get("events") or st.get("status", {}).get("events") or []
    return wall, ev
def phases(ev):
    t0 = ev[0]["at_ms"]; out = {}
    for key, needle in [("first bid", "bid from"), ("placed", "placed node"), ("committed", "committed node"),
                        ("allocated", "allocated node"), ("started", "started "), ("completed", "every task completed")]:
        hit = next((e["at_ms"] for e in ev if needle in e["message"]), None)
        out[key] = None if hit is None else hit - t0
    return out
def p50(v): return statistics.median(v)
base = []
for _ in range(runs):
    t = time.monotonic(); sh("docker", "run", "--rm", "nunet-test/busybox:latest", "echo", "hello"); base.append((time.monotonic() - t) * 1000)
for name, f, b in [("docker task", "examples/hello.yaml", base), ("wasm task", f"{work}/wasm.yaml", None)]:
    walls, orch, tables = [], [], []
    for _ in range(runs):
        wall, ev = deploy(f); walls.append(wall); ph = phases(ev); tables.append(ph)
        if ph["completed"] is not None: orch.append(ph["completed"])
    line = f"{name} submit→Completed (CLI wall, 500 ms polling): p50 {p50(walls):.0f} ms; orchestrator created→completed p50 {p50(orch):.0f} ms"
    if b: line += f" (baseline: docker run --rm p50 {p50(b):.0f} ms, ratio: {p50(orch)/p50(b):.2f}, overhead {p50(orch)-p50(b):.0f} ms; target ≤ 150 ms)"
    else: line += " (target ≤ 100 ms)"
    print(line)
    print(f"  phase (ms since 'deployment created', p50 of {runs}): " + ", ".join(
        f"{k} {p50([t[k] for t in tables if t[k] is not None]):.0f}" for k in tables[0] if any(t[k] is not None for t in tables)))
PY
