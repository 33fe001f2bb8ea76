#!/usr/bin/env bash
# Network size (issue 18, item 5), one run: for each size in SIZES (default "10 25 50 100"), a
# loopback devnet of that many daemons (separate processes, one home each, ports the kernel
# picks); nodes 1..N-1 onboard a share, node N is the orchestrator (not the bootstrap peer,
# which every node connects to: node N is connected to a part of the network only, as an
# orchestrator in the wild would be). Printed per size:
#   up:        `nunet devnet up` wall time (daemons start one after the other);
#   roster:    seconds after onboarding until node N knows every other node's deployment-topic
#              subscription (connected or from the roster gossip), i.e. who a bid round
#              waits for; the rounds start only then;
#   memory:    per idle daemon, PSS (the shared binary split between the daemons) and private
#              anonymous memory, averaged;
#   idle CPU:  per idle daemon, % of one core over 20 s;
#   bid round: ROUNDS (default 10) deployments of a one-task WASM ensemble from node 1; from
#              the orchestrator's events, the time from "requesting bids" to the round closing,
#              p50/max, and how many of the N-1 eligible providers answered (bid or decline),
#              the fewest in any round;
#   peers:     how many peers node N is connected to (the rest it reaches through gossip);
#   1st/last answer: p50 of when the first and the last answer arrived, from the publish;
#   CPU ms/prov: CPU time of all daemons per deployment, less their idle share, per provider
#              (constant when a round's work per provider does not grow with the network);
#   deploy:    submit → Completed (the orchestrator's "deployment created" → "every task
#              completed"), p50/max.
# Ratios are against the smallest size (the baseline, measured in the same run).
# PROFILE=debug|release (default release); NUNET_BIN=<path> skips the build.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes="${SIZES:-10 25 50 100}"
rounds="${ROUNDS:-10}"
. bench/lib.sh
work="$(mktemp -d)"
trap 'for d in "$work"/dn-*; do "$nunet" devnet down --dir "$d" >/dev/null 2>&1 || true; done; rm -rf "$work"' EXIT

hello_wasm "$work"

python3 - "$nunet" "$work" "$rounds" $sizes <<'PY'
import json, os, re, shutil, statistics, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
nunet, work, rounds, sizes = sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(s) for s in sys.argv[4:]]
def sh(*a, env=None):
    r = subprocess.run(a, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"{' '.join(a)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r.stdout
def p50(v): return statistics.median(v) if v else float("nan")
def node_env(dn, i):
    return dict(os.environ, NUNET_HOME=f"{dn}/node-{i}", DMS_PASSPHRASE_FILE=f"{dn}/passphrase")
def pids(dn, n):
    return [int(open(f"{dn}/node-{i}/nunet.pid").read()) for i in range(1, n + 1)]
def cpu_ticks(ps):
    t = 0
    for p in ps:
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        t += int(f[11]) + int(f[12])
    return t
def memory(ps):
    pss, anon = [], []
    for p in ps:
        for line in open(f"/proc/{p}/smaps_rollup"):
            k, v = line.split(":", 1)
            if k == "Pss": pss.append(int(v.split()[0]) / 1024)
            if k == "Anonymous": anon.append(int(v.split()[0]) / 1024)
    return statistics.mean(pss), statistics.mean(anon)
EVENT = re.compile(r"bid round closed(?::| with) (?:all )?(\d+)")
TIMES = re.compile(r"first answer after (\d+) ms, last after (\d+) ms")
def round_of(events):
    ask = [e["at_ms"] for e in events if "requesting bids" in e["message"]]
    done = [(e["at_ms"], e["message"]) for e in events if e["message"].startswith("bid round closed")]
    created = [e["at_ms"] for e in events if "deployment created" in e["message"]]
    completed = [e["at_ms"] for e in events if "every task completed" in e["message"]]
    if not (ask and done and created and completed): return None
    m = EVENT.search(done[0][1])
    t = TIMES.search(done[0][1])
    first, last = (int(t.group(1)), int(t.group(2))) if t else (None, None)
    return (done[0][0] - ask[0], int(m.group(1)) if m else 0, completed[-1] - created[0], done[0][1],
            first, last)

rows = []
for n in sizes:
    dn = f"{work}/dn-{n}"
    env = dict(os.environ, NUNET_INSECURE_FAST_KDF="1")
    t = time.monotonic()
    subprocess.run([nunet, "devnet", "up", "--nodes", str(n), "--dir", dn, "--base-port", "0"],
                   check=True, capture_output=True, env=env)
    up = time.monotonic() - t
    # Providers serve modules only from under the devnet directory (job.image_roots).
    shutil.copy(f"{work}/hello.wasm", f"{dn}/hello.wasm")
    yaml = open(f"{work}/wasm.yaml").read().replace(f"{work}/hello.wasm", f"{dn}/hello.wasm")
    open(f"{dn}/wasm.yaml", "w").write(yaml)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: sh(nunet, "actor", "cmd", "/dms/node/onboarding/onboard", "--cpu", "0.5",
                                   "--ram", "0.5", "--disk", "1", env=node_env(dn, i)), range(1, n)))
    t = time.monotonic(); roster = None
    while time.monotonic() - t < 180:
        me = json.loads(sh(nunet, "actor", "cmd", "/dms/node/peers/self", env=node_env(dn, n)))
        known = me["roster"]["topics"].get("/nunet/deployment", 0)
        if known >= n - 1:
            roster = time.monotonic() - t; break
        time.sleep(0.5)
    connected = len(json.loads(sh(nunet, "actor", "cmd", "/dms/node/peers/list", env=node_env(dn, n)))["peers"])
    ps = pids(dn, n)
    time.sleep(10)
    pss, anon = memory(ps)
    a = cpu_ticks(ps); time.sleep(20); b = cpu_ticks(ps)
    idle_cpu = (b - a) / os.sysconf("SC_CLK_TCK") / 20 / n * 100
    bid_ms, answers, deploy_ms, short, first_ms, last_ms = [], [], [], [], [], []
    cpu0 = None
    for r in range(rounds + 1):
        if r == 1: cpu0, t_rounds = cpu_ticks(ps), time.monotonic()
        d = json.loads(sh(nunet, "deploy", "-f", f"{dn}/wasm.yaml", "-t", "120s", "--json", env=node_env(dn, n)))
        assert d["status"] == "Completed", d
        st = json.loads(sh(nunet, "deployment", "status", d["id"], "--json", env=node_env(dn, n)))
        got = round_of(st.get("events") or [])
        if got is None or r == 0: continue   # the first deployment warms caches, not counted
        bid_ms.append(got[0]); answers.append(got[1]); deploy_ms.append(got[2])
        if got[4] is not None: first_ms.append(got[4]); last_ms.append(got[5])
        if got[1] < n - 1: short.append(got[3])
    # CPU of every daemon per deployment, per provider (idle work included, subtracted below).
    elapsed = time.monotonic() - t_rounds
    busy = (cpu_ticks(ps) - cpu0) / os.sysconf("SC_CLK_TCK") - idle_cpu / 100 * n * elapsed
    per_provider = max(0.0, busy) * 1000 / rounds / (n - 1)
    rows.append(dict(n=n, up=up, roster=roster, connected=connected, first=first_ms, last=last_ms,
                     cpu_round=per_provider, pss=pss, anon=anon, cpu=idle_cpu, bid=bid_ms,
                     answers=answers, deploy=deploy_ms, short=short))
    subprocess.run([nunet, "devnet", "down", "--dir", dn], capture_output=True)
    print(f"size {n}: done", file=sys.stderr, flush=True)

base = rows[0]
print(f"{'nodes':>5} {'up s':>6} {'roster s':>8} {'peers':>5} {'PSS MiB':>8} {'anon MiB':>8} {'idle CPU%':>9}"
      f" {'bid p50 ms':>10} {'max':>6} {'x base':>6} {'1st ans':>7} {'last ans':>8} {'answers (min/N-1)':>17}"
      f" {'CPU ms/prov':>11} {'deploy p50 ms':>13} {'max':>6} {'x base':>6}")
for r in rows:
    roster = "-" if r["roster"] is None else f"{r['roster']:.1f}"
    print(f"{r['n']:>5} {r['up']:>6.1f} {roster:>8} {r['connected']:>5} {r['pss']:>8.1f} {r['anon']:>8.1f} {r['cpu']:>9.2f}"
          f" {p50(r['bid']):>10.0f} {max(r['bid']):>6.0f} {p50(r['bid'])/p50(base['bid']):>6.2f}"
          f" {p50(r['first']):>7.0f} {p50(r['last']):>8.0f}"
          f" {str(min(r['answers'])) + '/' + str(r['n'] - 1):>17} {r['cpu_round']:>11.1f}"
          f" {p50(r['deploy']):>13.0f} {max(r['deploy']):>6.0f} {p50(r['deploy'])/p50(base['deploy']):>6.2f}")
for r in rows:
    for s in r["short"]:
        print(f"{r['n']} nodes, a round short of answers: {s}")
PY
