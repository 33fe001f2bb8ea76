#!/usr/bin/env bash
# Reach across NAT (issue 18), one run on the namespace testbed `nunet devnet up --netns --nat`:
# nodes 1-2 public (bootstrap peers and relays), 3 and 4 behind cone-like NAT routers, 5 behind
# a symmetric NAT, 6 behind a firewall that drops inbound connections.
#
# Hole punching: for each pair of nodes, ATTEMPTS times (default 20): both sides disconnect,
# then A pings B (A dials B's circuit address through a relay, or directly when B is public);
# the time from the ping to a direct connection (`path: direct` in /dms/node/peers/list) is
# recorded, up to WAIT seconds (default 5). An attempt without a direct connection by then
# counts as relayed, and the ping having succeeded says the relayed fallback carried it.
# Printed per pair: direct %, time to direct p50/max, relayed fallback %. Baseline, in the
# same run: the same cycle between the two public nodes (a plain direct dial).
#
# Subnet over those paths (SUBNET=0 skips it): node 1 deploys three sleeping busybox services,
# pinned to node 3 (cone), node 4 (cone) and node 5 (symmetric); from the container on node 3,
# iperf3 TCP (IPERF_TIME seconds, default 3, receiver side) and ping (20 pings, 50 ms apart) to
# the container on node 4 over the subnet once the nodes' path is direct (after the hole
# punch), and to the one on node 5 (relayed: through a relay on node 1 or 2). Baseline in the
# same run: the same measurements between the hosts of nodes 1 and 2 on the public segment
# (raw). Printed: Gbit/s, ping avg, and ratios against raw.
#
# PROFILE=debug|release (default release); NUNET_BIN=<path> skips the build. Needs root,
# iproute2 and iptables; the subnet part also dockerd with nunet-test/busybox:latest, iperf3
# and nsenter.
set -euo pipefail
cd "$(dirname "$0")/.."
attempts="${ATTEMPTS:-20}"
wait_s="${WAIT:-5}"
. bench/lib.sh
work="$(mktemp -d)"
dir="$work/dn"
cleanup() {
  "$nunet" devnet down --dir "$dir" >/dev/null 2>&1 || true
  # Containers of a deployment the subnet part could not shut down.
  if [ -s "$work/deployment" ]; then
    for c in $(docker ps -aq --filter "label=nunet.ensemble=$(cat "$work/deployment")" 2>/dev/null); do
      docker rm -f "$c" >/dev/null 2>&1 || true
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
NUNET_INSECURE_FAST_KDF=1 "$nunet" devnet up --netns --nodes 6 --dir "$dir" \
  --nat 3=cone,4=cone,5=symmetric,6=firewall >/dev/null

python3 - "$nunet" "$dir" "$attempts" "$wait_s" "${SUBNET:-1}" "${IPERF_TIME:-3}" <<'PY'
import json, os, statistics, subprocess, sys, time
nunet, dn, attempts, wait_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
subnet, iperf_time = sys.argv[5] == "1", int(sys.argv[6])
m = json.load(open(f"{dn}/devnet.json"))
nodes = m["nodes"]

def nun(n, *args):
    env = dict(os.environ, NUNET_HOME=nodes[n - 1]["home"], DMS_PASSPHRASE_FILE=f"{dn}/passphrase")
    out = subprocess.run(["ip", "netns", "exec", nodes[n - 1]["netns"], nunet, *args],
                         capture_output=True, text=True, env=env)
    return out.returncode, out.stdout

def cli(n, *args):
    return nun(n, "actor", "cmd", "--json", *args)

def js(n, *args):
    code, out = cli(n, *args)
    assert code == 0, (n, args, out)
    return json.loads(out)

def peer(n):
    return nodes[n - 1]["peer_id"]

def path(a, b):
    for p in js(a, "/dms/node/peers/list")["peers"]:
        if p["peer_id"] == peer(b):
            return p["path"]
    return None

t0 = time.time()
while True:
    nat = [js(n, "/dms/node/peers/self")["reachability"] for n in range(1, 7)]
    if all(r["nat"] == "public" for r in nat[:2]) and all(
            r["nat"] == "private" and any(x["reserved"] for x in r["relays"]) for r in nat[2:]):
        break
    assert time.time() - t0 < 90, [r["summary"] for r in nat]
    time.sleep(0.5)
print(f"testbed ready: AutoNAT verdicts and relay reservations in {time.time() - t0:.1f} s")

def cycle(a, b):
    """Disconnect a and b, ping b from a; seconds to a direct connection (None: none) and
    whether the ping got through."""
    for x, y in ((a, b), (b, a)):
        js(x, "/dms/node/peers/disconnect", "--host", peer(y))
    t = time.time()
    while path(a, b) is not None or path(b, a) is not None:
        if time.time() - t > 5:
            break
        for x, y in ((a, b), (b, a)):
            js(x, "/dms/node/peers/disconnect", "--host", peer(y))
        time.sleep(0.1)
    start = time.time()
    code, _ = cli(a, "/dms/node/peers/ping", "--host", peer(b))
    while time.time() - start < wait_s:
        if path(a, b) == "direct":
            return time.time() - start, code == 0
        time.sleep(0.05)
    return None, code == 0

# No public → NATed pair: a NATed node redials its bootstrap peers (all public nodes here) as
# soon as it is disconnected, so such a pair measures that redial, not a hole punch.
pairs = [("public ↔ public (baseline)", 1, 2), ("cone ↔ cone", 3, 4),
         ("cone ↔ symmetric", 3, 5),
         ("cone ↔ firewall", 3, 6), ("symmetric ↔ firewall", 5, 6)]
print(f"\n{attempts} attempts per pair; direct = a direct connection within {wait_s:g} s of the ping\n")
print(f"| pair | direct | time to direct p50 / max | relayed fallback (ping ok) |")
print(f"|---|---|---|---|")
base = None
for name, a, b in pairs:
    times, ok = [], 0
    for _ in range(attempts):
        t, pinged = cycle(a, b)
        ok += pinged
        if t is not None:
            times.append(t)
    direct = len(times)
    p50 = statistics.median(times) if times else None
    if base is None:
        base = p50
    timing = f"{p50:.2f} s / {max(times):.2f} s" if times else "-"
    ratio = f" ({p50 / base:.1f}× baseline)" if times and base else ""
    print(f"| {name} | {direct}/{attempts} ({100 * direct / attempts:.0f} %) | {timing}{ratio} | {ok}/{attempts} |")
punch = {n: js(n, "/dms/node/peers/self")["reachability"]["hole_punches"] for n in range(3, 7)}
print(f"\nhole punches counted by the NATed nodes (DCUtR events): {json.dumps(punch)}")
if not subnet:
    sys.exit(0)

def sh(*a):
    r = subprocess.run(a, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(a)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r.stdout

def measure(run, addr):
    """iperf3 TCP (receiver Gbit/s) and ping avg (ms) to addr, `run` prefixing the commands
    with the namespace of each end (client, server)."""
    client, server = run
    srv = subprocess.Popen([*server, "iperf3", "-s", "-1"], stdout=subprocess.DEVNULL)
    for _ in range(50):   # until the server listens (a refused connection fails at once)
        r = subprocess.run([*client, "iperf3", "-c", addr, "-t", str(iperf_time), "-J"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            break
        time.sleep(0.1)
    else:
        sys.exit(f"iperf3 to {addr}: {r.stdout[-500:]}{r.stderr[-500:]}")
    srv.wait(timeout=10)
    j = json.loads(r.stdout)
    gbps = j["end"]["sum_received"]["bits_per_second"] / 1e9
    out = sh(*client, "ping", "-q", "-n", "-c", "20", "-i", "0.05", addr)
    rtt = float(out.split(" = ")[1].split("/")[1])
    return gbps, rtt

for n in (3, 4, 5):
    code, out = cli(n, "/dms/node/onboarding/onboard", "--cpu", "1", "--ram", "1", "--disk", "2")
    assert code == 0, out
svc = lambda name, n: (f"  {name}:\n    executor: docker\n    type: service\n"
    f"    resources: {{cpu: {{cores: 0.2}}, ram: {{size: 64MiB}}, disk: {{size: 50MiB}}}}\n"
    f"    execution: {{type: docker, image: nunet-test/busybox:latest, cmd: [sleep, '86400']}}\n")
yaml = "version: V1\nallocations:\n" + svc("a", 3) + svc("b", 4) + svc("c", 5) + "nodes:\n" + "".join(
    f"  n{x}:\n    allocations: [{x}]\n    peer: {peer(n)}\n" for x, n in (("a", 3), ("b", 4), ("c", 5)))
open(f"{dn}/subnet-bench.yaml", "w").write(yaml)
code, out = nun(1, "deploy", "-f", f"{dn}/subnet-bench.yaml", "-t", "120s", "--json")
dep = json.loads(out) if out.strip() else {}
if dep.get("id"):
    open(f"{os.path.dirname(dn)}/deployment", "w").write(dep["id"])
assert code == 0 and dep.get("status") == "Running", out[-2000:]
def pid(alloc):
    cid = sh("docker", "ps", "-q", "--filter", f"label=nunet.ensemble={dep['id']}",
             "--filter", f"label=nunet.allocation={alloc}").split()
    assert len(cid) == 1, (alloc, cid)
    return sh("docker", "inspect", "-f", "{{.State.Pid}}", cid[0]).strip()
ns = {x: ["nsenter", "-t", pid(x), "-n"] for x in "abc"}
addr = {x: sh(*ns[x], "ip", "-4", "-o", "addr", "show", "dev", "eth0").split()[3].split("/")[0] for x in "abc"}
for x in "bc":   # the subnet carries pings before anything is measured
    t = time.time()
    while subprocess.run([*ns["a"], "ping", "-c", "1", "-W", "1", addr[x]], capture_output=True).returncode:
        assert time.time() - t < 60, f"no ping from a to {x} over the subnet"
t = time.time()
while path(3, 4) != "direct":
    subprocess.run([*ns["a"], "ping", "-c", "1", "-W", "1", addr["b"]], capture_output=True)
    assert time.time() - t < 90, "no direct path between nodes 3 and 4"
    time.sleep(0.5)
lan = lambda n: nodes[n - 1]["p2p"].split("/")[2]
host = lambda n: ["ip", "netns", "exec", nodes[n - 1]["netns"]]
rows = [("raw LAN, public ↔ public hosts (baseline)", measure((host(1), host(2)), lan(2)), None),
        ("subnet, cone ↔ cone (direct after the punch)", measure((ns["a"], ns["b"]), addr["b"]), path(3, 4)),
        ("subnet, cone ↔ symmetric (through a relay)", measure((ns["a"], ns["c"]), addr["c"]), path(3, 5))]
print(f"\nsubnet over the NAT paths (iperf3 TCP {iperf_time} s, receiver side; 20 pings)\n")
print("| path | peers' path | iperf3 TCP | vs raw | ping avg | added RTT |")
print("|---|---|---|---|---|---|")
raw_gbps, raw_rtt = rows[0][1]
for name, (gbps, rtt), p in rows:
    print(f"| {name} | {p or '-'} | {gbps:.3f} Gbit/s | {gbps / raw_gbps:.3f} | {rtt:.3f} ms | {rtt - raw_rtt:+.3f} ms |")
code, out = nun(1, "deployment", "shutdown", dep["id"])
assert code == 0, out
PY
