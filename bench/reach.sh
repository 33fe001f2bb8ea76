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
# PROFILE=debug|release (default release); NUNET_BIN=<path> skips the build. Needs root,
# iproute2 and iptables.
set -euo pipefail
cd "$(dirname "$0")/.."
attempts="${ATTEMPTS:-20}"
wait_s="${WAIT:-5}"
. bench/lib.sh
work="$(mktemp -d)"
dir="$work/dn"
trap '"$nunet" devnet down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
NUNET_INSECURE_FAST_KDF=1 "$nunet" devnet up --netns --nodes 6 --dir "$dir" \
  --nat 3=cone,4=cone,5=symmetric,6=firewall >/dev/null

python3 - "$nunet" "$dir" "$attempts" "$wait_s" <<'PY'
import json, os, statistics, subprocess, sys, time
nunet, dn, attempts, wait_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
m = json.load(open(f"{dn}/devnet.json"))
nodes = m["nodes"]

def cli(n, *args):
    env = dict(os.environ, NUNET_HOME=nodes[n - 1]["home"], DMS_PASSPHRASE_FILE=f"{dn}/passphrase")
    out = subprocess.run(["ip", "netns", "exec", nodes[n - 1]["netns"], nunet, "actor", "cmd",
                          "--json", *args], capture_output=True, text=True, env=env)
    return out.returncode, out.stdout

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
PY
