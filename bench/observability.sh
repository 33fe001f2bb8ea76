#!/usr/bin/env bash
# What recording traces costs, off vs on, in one run (target: at most 3 %):
#   (a) actor invoke round trip and throughput between two in-process nodes over libp2p
#       (cargo bench -p nunet-node --bench traces, one process per mode: a process has one
#       subscriber), for invokes outside any deployment (as bench/actor.sh makes them) and
#       for the worst case, every invoke inside a deployment (each exports a span);
#   (b) deployments: two 3-node devnets, one exporting traces to a local OTLP sink and one not,
#       RUNS Docker task deployments on each, interleaved (off, on, off, on, …); p50 of
#       submit → Completed from the orchestrator's events.
# Metrics have no off switch (the registry is always there), so they are in both columns.
# RUNS (default 7), REPS (default 3), PROFILE=debug|release (default release), NUNET_BIN=<path>.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-7}"
echo "== invoke (cargo bench -p nunet-node --bench traces; one process per mode, modes alternated, REPS times)"
reps="${REPS:-3}"
lines=()
for _ in $(seq "$reps"); do
  for scope in none deployment; do
    for t in off on; do
      l=$(BENCH_TRACES=$t BENCH_SCOPE=$scope cargo bench -q -p nunet-node --bench traces 2>/dev/null | grep '^traces=')
      echo "$l"; lines+=("$l")
    done
  done
done
python3 - "${lines[@]}" <<'PY'
import statistics, sys
def kv(line): return dict(p.split("=") for p in line.split())
rows = [kv(a) for a in sys.argv[1:]]
def med(scope, t, k): return statistics.median(float(r[k]) for r in rows if r["scope"] == scope and r["traces"] == t)
for scope, what in (("none", "invokes outside a deployment (no context, no span)"),
                    ("deployment", "every invoke inside a deployment (a context and an exported span each)")):
    print(f"{what}, medians of {len(rows) // 4} runs:")
    for k, better in (("p50_us", "lower"), ("p99_us", "lower"), ("ops_per_s", "higher")):
        a, b = med(scope, "off", k), med(scope, "on", k)
        cost = (b / a - 1) if better == "lower" else (a / b - 1)
        print(f"  {k}: off {a:.0f}, on {b:.0f} (ratio on/off {b / a:.3f}; cost {100 * cost:+.1f} %)")
    print(f"  spans the collector accepted while on (median): {med(scope, 'on', 'spans'):.0f}")
PY

echo "== deployments"
. bench/lib.sh
work="$(mktemp -d)"
sink_pid=""
trap '"$nunet" devnet down --dir "$work/off" >/dev/null 2>&1 || true; "$nunet" devnet down --dir "$work/on" >/dev/null 2>&1 || true; [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null; rm -rf "$work"' EXIT
# A local OTLP/HTTP sink that counts spans (port 0; the bound port is written to a file).
python3 - "$work/sink.port" "$work/sink.count" <<'PY' &
import http.server, json, sys
port_file, count_file = sys.argv[1], sys.argv[2]
n = 0
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        global n
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        n += body.count(b'"spanId"')
        open(count_file, "w").write(str(n))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(port_file, "w").write(str(s.server_address[1]))
s.serve_forever()
PY
sink_pid=$!
for _ in $(seq 50); do [ -s "$work/sink.port" ] && break; sleep 0.1; done
export NUNET_INSECURE_FAST_KDF=1
"$nunet" devnet up --nodes 3 --dir "$work/off" --base-port 0 >/dev/null
DMS_OBSERVABILITY_TRACING_ENDPOINT="http://127.0.0.1:$(cat "$work/sink.port")" \
  "$nunet" devnet up --nodes 3 --dir "$work/on" --base-port 0 >/dev/null
for d in off on; do
  for i in 1 2 3; do
    DMS_PASSPHRASE_FILE="$work/$d/passphrase" NUNET_HOME="$work/$d/node-$i" \
      "$nunet" actor cmd /dms/node/onboarding/onboard --cpu 1 --ram 1 --disk 2 >/dev/null
  done
done
python3 - "$nunet" "$runs" "$work" <<'PY'
import json, os, statistics, subprocess, sys
nunet, runs, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def deploy(d):
    env = dict(os.environ, NUNET_HOME=f"{work}/{d}/node-1", DMS_PASSPHRASE_FILE=f"{work}/{d}/passphrase")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, text=True, env=env).stdout
    v = json.loads(run(nunet, "deploy", "-f", "examples/hello.yaml", "-t", "60s", "--json"))
    assert v["status"] == "Completed", v
    ev = json.loads(run(nunet, "deployment", "status", v["id"], "--json"))["events"]
    t = lambda needle, pick: pick(e["at_ms"] for e in ev if needle in e["message"])
    return t("every task completed", max) - t("deployment created", min)
for d in ("off", "on"): deploy(d)  # warm-up, not counted
res = {"off": [], "on": []}
for _ in range(runs):
    for d in ("off", "on"): res[d].append(deploy(d))
off, on = statistics.median(res["off"]), statistics.median(res["on"])
print(f"deployment submit -> Completed p50 of {runs}: off {off:.0f} ms, on {on:.0f} ms (ratio on/off {on / off:.3f}; cost {100 * (on / off - 1):+.1f} %)")
print(f"  off: {sorted(res['off'])}")
print(f"  on:  {sorted(res['on'])}")
PY
echo "spans the sink received from the traced devnet: $(cat "$work/sink.count" 2>/dev/null || echo 0)"
