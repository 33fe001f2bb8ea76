#!/usr/bin/env bash
# Lost-provider healing (issue 16), one run, root: the namespace testbed (`nunet devnet up
# --netns --nodes 5`, real daemons in their own network namespaces, subnet on) runs an
# ensemble of `web` (node `front`, `failure_recovery: redeploy`; with MODE=standby
# `redundancy: 1` instead, so a standby is promoted without a bid round) and `client` (node
# `back`).
# FAULTS (default 10) times the provider of `front` dies with its machine: its daemon is
# SIGKILLed and its containers removed. Measured from the kill on the orchestrator's event
# clock: detection (the event that decides to redeploy or promote) and healed (the event "node
# front redeployed on …" or "… standby on … promoted": the new provider runs `web`), p50/p99, against `docker run -d` of the same
# image in the same run. After each fault: the deployment is Running, `web` keeps its subnet
# address, `client` its container, `web.internal` answers from `client`; the dead daemon is
# started again and must release everything it held before the next fault.
# NUNET_BIN (default target/release/nunet, built when missing); needs iproute2, iptables,
# dockerd and the image nunet-test/busybox:latest.
set -euo pipefail
cd "$(dirname "$0")/.."
faults="${FAULTS:-10}"
mode="${MODE:-redeploy}"
case "$mode" in redeploy|standby) ;; *) echo "MODE must be redeploy or standby" >&2; exit 2;; esac
if [ -n "${NUNET_BIN:-}" ]; then
  nunet="$(realpath "$NUNET_BIN")"
else
  cargo build -q --release -p nunet-cli; nunet="$PWD/target/release/nunet"
fi
work="$(mktemp -d)"
dir="$work/dn"
export NUNET_INSECURE_FAST_KDF=1 DMS_PASSPHRASE_FILE="$dir/passphrase"
trap '"$nunet" devnet down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
"$nunet" devnet up --netns --nodes 5 --dir "$dir" >/dev/null

python3 - "$nunet" "$faults" "$work" "$dir" "$mode" <<'PY'
import json, os, statistics, subprocess, sys, time
nunet, faults, work, dn, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
recovery = "failure_recovery: redeploy" if mode == "redeploy" else "redundancy: 1"
IMAGE = "nunet-test/busybox:latest"
nodes = json.load(open(f"{dn}/devnet.json"))["nodes"]

def run(i, *args, check=True):
    env = dict(os.environ, NUNET_HOME=f"{dn}/node-{i}")
    return subprocess.run(["ip", "netns", "exec", nodes[i - 1]["netns"], nunet, *args],
                          check=check, capture_output=True, text=True, env=env).stdout

def js(i, *args):
    return json.loads(run(i, *args))

def sh(*a):
    return subprocess.run(a, check=True, capture_output=True, text=True).stdout

for i in range(1, 6):
    js(i, "actor", "cmd", "--json", "/dms/node/onboarding/onboard", "--ram", "1", "--cpu", "1", "--disk", "2")
yaml = f"""version: V1
allocations:
  web:
    executor: docker
    type: service
    resources: {{cpu: {{cores: 0.2}}, ram: {{size: 64MiB}}, disk: {{size: 50MiB}}}}
    execution:
      type: docker
      image: {IMAGE}
      cmd: [sh, -c, "mkdir -p /www && echo hello-subnet > /www/index.html && exec httpd -f -p 8080 -h /www"]
  client:
    executor: docker
    type: service
    resources: {{cpu: {{cores: 0.2}}, ram: {{size: 64MiB}}, disk: {{size: 50MiB}}}}
    execution: {{type: docker, image: {IMAGE}, cmd: [sleep, "100000"]}}
nodes:
  front:
    allocations: [web]
    {recovery}
  back:
    allocations: [client]
"""
open(f"{dn}/heal.yaml", "w").write(yaml)
d = js(1, "deploy", "-f", f"{dn}/heal.yaml", "-t", "90s", "--json")
assert d["status"] == "Running", d
dep = d["id"]

def manifest():
    m = js(1, "deployment", "manifest", dep, "--json")
    return m.get("manifest", m)

def running(alloc):
    return sh("docker", "ps", "-q", "--filter", f"label=nunet.ensemble={dep}",
              "--filter", f"label=nunet.allocation={alloc}").split()

def node_of(peer):
    return next(i + 1 for i, n in enumerate(nodes) if n["peer_id"] == peer)

client = running("client")
assert len(client) == 1, client
ip = manifest()["allocations"]["front.web"]["ip"]
detect, heal = [], []
last_seq = max(e["seq"] for e in js(1, "deployment", "status", dep, "--json")["events"])
def standby_ready(f):
    for _ in range(300):
        if len(manifest().get("standbys", {}).get("front", [])) == 1:
            return
        time.sleep(0.2)
    events = js(1, "deployment", "status", dep, "--json")["events"][-30:]
    for e in events:
        print(e["at_ms"], e["message"], file=sys.stderr)
    raise SystemExit(f"before fault {f + 1}: no standby of front within 60 s")

for f in range(faults):
    if mode == "standby":
        standby_ready(f)
    m = manifest()
    lost = node_of(m["nodes"]["front"]["peer"])
    did = m["nodes"]["front"]["did"]
    pid = open(f"{dn}/node-{lost}/nunet.pid").read().strip()
    onboarded = js(lost, "actor", "cmd", "--json", "/dms/node/resources/onboarded")
    t0 = time.time() * 1000
    subprocess.run(["kill", "-KILL", pid], check=True)
    ids = sh("docker", "ps", "-aq", "--filter", f"label=nunet.ensemble={dep}",
             "--filter", f"label=nunet.node={did}").split()
    if ids:
        sh("docker", "rm", "-f", *ids)
    deadline, seen = time.monotonic() + 90, None
    while time.monotonic() < deadline:
        s = js(1, "deployment", "status", dep, "--json")
        assert s["status"] == "Running", s
        ev = [e for e in s["events"] if e["seq"] > last_seq]
        if mode == "redeploy":
            det = next((e for e in ev if "redeploying it" in e["message"]), None)
            done = next((e for e in ev if e["message"].startswith("node front redeployed on")), None)
        else:
            det = next((e for e in ev if "promoting its standby" in e["message"]), None)
            done = next((e for e in ev if e["message"].startswith("node front: standby on")), None)
            assert not any("redeploying" in e["message"] for e in ev), ev
        if det and done:
            seen = (det["at_ms"] - t0, done["at_ms"] - t0)
            last_seq = max(e["seq"] for e in ev)
            break
        time.sleep(0.1)
    assert seen, f"fault {f + 1}: front not redeployed within 90 s"
    detect.append(seen[0]); heal.append(seen[1])
    m = manifest()
    assert m["allocations"]["front.web"]["ip"] == ip, m
    assert running("client") == client, "client was restarted"
    assert len(running("web")) == 1, running("web")
    req = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 web.internal 8080"
    for _ in range(50):
        out = subprocess.run(["docker", "exec", client[0], "sh", "-c", req], capture_output=True, text=True).stdout
        if "hello-subnet" in out:
            break
        time.sleep(0.2)
    else:
        raise SystemExit(f"fault {f + 1}: web.internal does not answer: {out!r}")
    # The dead machine comes back and must hold nothing of the ensemble.
    env = dict(os.environ, NUNET_HOME=f"{dn}/node-{lost}")
    log = open(f"{dn}/node-{lost}/nunet-restarted.log", "w")
    p = subprocess.Popen(["ip", "netns", "exec", nodes[lost - 1]["netns"], nunet, "run", "-c", "dms"],
                         env=env, stdout=log, stderr=log, start_new_session=True)
    open(f"{dn}/node-{lost}/nunet.pid", "w").write(str(p.pid))
    for _ in range(300):
        try:
            if js(lost, "actor", "cmd", "--json", "/dms/node/resources/free") == onboarded:
                break
        except (subprocess.CalledProcessError, json.JSONDecodeError):
            pass
        time.sleep(0.2)
    else:
        raise SystemExit(f"fault {f + 1}: node-{lost} did not release what it held")

base = []
for _ in range(5):
    t = time.monotonic()
    cid = sh("docker", "run", "-d", "--rm", IMAGE, "sleep", "30").strip()
    base.append((time.monotonic() - t) * 1000)
    sh("docker", "rm", "-f", cid)
b50 = statistics.median(base)

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

print(f"faults: {faults} provider SIGKILLs (machine lost), every invariant held after each")
what = "redeploy on another provider" if mode == "redeploy" else "standby promoted"
print(f"detection (kill → {mode} decided): p50 {pct(detect, 50):.0f} ms, p99 {pct(detect, 99):.0f} ms")
print(f"{what} (kill → web runs there): p50 {pct(heal, 50):.0f} ms, "
      f"p99 {pct(heal, 99):.0f} ms; after detection: p50 "
      f"{pct([h - d for h, d in zip(heal, detect)], 50):.0f} ms (baseline: docker run -d {b50:.0f} ms, ratio: {pct(heal, 50) / b50:.2f})")
run(1, "deployment", "shutdown", dep, "--json", check=False)
PY
