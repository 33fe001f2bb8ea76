#!/usr/bin/env bash
# Allocation output on a local 3-node devnet (node 1 orchestrates, node 2 runs), one run:
#   (a) live: a task waits, then prints SIZE_MIB MiB as fast as it can; `nunet deployment logs
#       -f` and `docker logs -f` of the same container are started before it prints, and each
#       is timed until it has every byte;
#   (b) replay: once everything is printed, the whole output is read again from its start by
#       both, timed.
# Ratios are nunet / docker (the baseline, measured in the same run; docker reads its own
# json-file log on this host, nunet goes provider spool → libp2p → orchestrator → local API).
# SIZE_MIB (default 200), PROFILE=debug|release (default release), NUNET_BIN=<path>.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib="${SIZE_MIB:-200}"
. bench/lib.sh
work="$(mktemp -d)"
dir="$work/dn"
trap '"$nunet" devnet down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
NUNET_INSECURE_FAST_KDF=1 "$nunet" devnet up --nodes 3 --dir "$dir" --base-port 0 >/dev/null
export DMS_PASSPHRASE_FILE="$dir/passphrase"
NUNET_HOME="$dir/node-2" "$nunet" actor cmd /dms/node/onboarding/onboard --cpu 1 --ram 1 --disk 2 >/dev/null
export NUNET_HOME="$dir/node-1"
lines=$((size_mib * 1024))
cat >"$work/talker.yaml" <<EOF
version: V1
allocations:
  talker:
    executor: docker
    type: task
    resources: {cpu: {cores: 1}, ram: {size: 256MiB}, disk: {size: 100MiB}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd:
        - sh
        - -c
        - |
          sleep 6
          awk 'BEGIN { p = ""; for (k = 0; k < 1014; k++) p = p "x"; for (j = 0; j < $lines; j++) printf "%08d %s\n", j, p }'
          sleep 60
nodes:
  node-a:
    allocations: [talker]
EOF

python3 - "$nunet" "$work" "$size_mib" <<'PY'
import subprocess, sys, time, threading
nunet, work, size_mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
want = size_mib << 20
deploy = subprocess.Popen([nunet, "deploy", "-f", f"{work}/talker.yaml", "-t", "90s"],
                          stdout=subprocess.PIPE, text=True)
dep = deploy.stdout.readline().split()[1]
def container():
    for _ in range(100):
        out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=nunet.ensemble={dep}"],
                             capture_output=True, text=True).stdout.split()
        if out: return out[0]
        time.sleep(0.1)
    raise SystemExit("no container")
cid = container()
def timed(cmd, out):
    """Starts cmd; records the time it has `want` bytes of stdout."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    got = 0
    while got < want:
        b = p.stdout.read1(1 << 20)
        if not b: break
        got += len(b)
    out["t"], out["bytes"] = time.monotonic(), got
    p.kill(); p.wait()
live = {"nunet": {}, "docker": {}}
t0 = time.monotonic()
th = [threading.Thread(target=timed, args=([nunet, "deployment", "logs", "-f", dep], live["nunet"])),
      threading.Thread(target=timed, args=(["docker", "logs", "-f", cid], live["docker"]))]
for t in th: t.start()
for t in th: t.join()
# Printing starts 6 s after the container did; both clocks count from the same instant, so
# the difference of their end times is what the extra path costs.
print(f"output: {size_mib} MiB in 1 KiB lines, one allocation, release build")
for k in ("docker", "nunet"):
    assert live[k]["bytes"] >= want, (k, live[k])
end_d, end_n = live["docker"]["t"] - t0, live["nunet"]["t"] - t0
print(f"live   docker logs -f: all bytes {end_d:6.2f} s after start   nunet logs -f: {end_n:6.2f} s   (nunet - docker: {end_n - end_d:+.2f} s)")
replay = {}
for k, cmd in (("docker", ["docker", "logs", cid]), ("nunet", [nunet, "deployment", "logs", "-f", dep])):
    o = {}; t = time.monotonic(); timed(cmd, o); replay[k] = (o["t"] - t, o["bytes"])
    assert o["bytes"] >= want, (k, o)
rd, rn = replay["docker"][0], replay["nunet"][0]
print(f"replay docker logs:    {rd:6.2f} s ({size_mib / rd:6.1f} MiB/s)   nunet logs -f: {rn:6.2f} s ({size_mib / rn:6.1f} MiB/s)   ratio nunet/docker: {rn / rd:.2f}x time")
subprocess.run([nunet, "deployment", "shutdown", dep], capture_output=True)
deploy.kill()
PY
