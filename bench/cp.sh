#!/usr/bin/env bash
# `nunet cp` throughput between two namespace hosts (issue 17, item 3), one run on
# `nunet devnet up --netns --nodes 2` (both hosts on one bridge, one veth each):
#   iperf3      TCP, one stream, IPERF_TIME seconds (default 5), node 1 → node 2: the link
#   scp         the file node 1 → node 2 with OpenSSH (sshd started in node 2's namespace,
#               a throwaway key; the cipher OpenSSH picks by default)
#   scp + sync  the same, and then the copy synced to disk (what nunet cp does for every file
#               before it reports it copied)
#   nunet cp    the same file node 1 → node 2 (send) and node 2 → node 1 (fetch)
# The file (SIZE_MIB, default 1024, random) is read once before, so every copy reads it from
# the page cache and writes to the same disk. Each copy is timed by its wall clock (nunet cp
# includes listing and hashing the source, and the receiver's check). Printed: MiB/s and
# ratios against iperf3 and scp. Targets (issue 17): ≥ 0.5× iperf3, ≥ 1× scp.
#
# PROFILE=debug|release (default release); NUNET_BIN=<path> skips the build. Needs root,
# iproute2, iperf3 and OpenSSH (client and server).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib="${SIZE_MIB:-1024}"
iperf_time="${IPERF_TIME:-5}"
for tool in ip iperf3 scp sshd ssh-keygen; do
  command -v "$tool" >/dev/null || { echo "cp.sh: needs $tool" >&2; exit 1; }
done
. bench/lib.sh
work="$(mktemp -d "${BENCH_DIR:-/var/tmp}/nunet-cp-bench.XXXXXX")"
dir="$work/dn"
cleanup() {
  set +e
  [ -s "$work/sshd.pid" ] && kill "$(cat "$work/sshd.pid")" 2>/dev/null
  [ -s "$work/iperf.pid" ] && kill "$(cat "$work/iperf.pid")" 2>/dev/null
  "$nunet" devnet down --dir "$dir" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
NUNET_INSECURE_FAST_KDF=1 "$nunet" devnet up --netns --nodes 2 --dir "$dir" >/dev/null

python3 - "$nunet" "$dir" "$work" "$size_mib" "$iperf_time" <<'PY'
import json, os, subprocess, sys, time
nunet, dn, work, size_mib, iperf_time = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
m = json.load(open(f"{dn}/devnet.json"))
nodes = m["nodes"]
ns = [n["netns"] for n in nodes]
inns = lambda i: ["ip", "netns", "exec", ns[i - 1]]

def addr(i):
    out = subprocess.run(inns(i) + ["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[3].split("/")[0]

def timed(cmd, env=None):
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0

src = f"{work}/src.bin"
with open(src, "wb") as f, open("/dev/urandom", "rb") as r:
    for _ in range(size_mib):
        f.write(r.read(1 << 20))
subprocess.run(["cat", src], stdout=subprocess.DEVNULL, check=True)  # into the page cache
a2 = addr(2)

# iperf3: the link.
srv = subprocess.Popen(inns(2) + ["iperf3", "-s", "-1", "-B", a2], stdout=subprocess.DEVNULL)
open(f"{work}/iperf.pid", "w").write(str(srv.pid))
for _ in range(50):
    if ":5201" in subprocess.run(inns(2) + ["ss", "-ltn"], capture_output=True, text=True).stdout:
        break
    time.sleep(0.1)
out = subprocess.run(inns(1) + ["iperf3", "-c", a2, "-t", str(iperf_time), "-J"],
                     capture_output=True, text=True, check=True).stdout
iperf = json.loads(out)["end"]["sum_received"]["bits_per_second"] / 8 / (1 << 20)
srv.wait(timeout=10)

# scp through sshd in node 2's namespace.
os.makedirs(f"{work}/ssh", exist_ok=True)
for k in ["host", "user"]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{work}/ssh/{k}"], check=True)
os.makedirs(f"{work}/scp-dst", exist_ok=True)
sshd_cfg = f"{work}/ssh/sshd_config"
open(sshd_cfg, "w").write(f"""Port 2222
ListenAddress {a2}
HostKey {work}/ssh/host
AuthorizedKeysFile {work}/ssh/user.pub
PermitRootLogin yes
PasswordAuthentication no
StrictModes no
PidFile {work}/sshd.pid
Subsystem sftp /usr/lib/openssh/sftp-server
""")
os.makedirs("/run/sshd", exist_ok=True)
subprocess.run(inns(2) + ["/usr/sbin/sshd", "-f", sshd_cfg], check=True)
for _ in range(50):
    if os.path.exists(f"{work}/sshd.pid"):
        break
    time.sleep(0.1)
scp_cmd = inns(1) + ["scp", "-q", "-P", "2222", "-i", f"{work}/ssh/user",
                     "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                     src, f"root@{a2}:{work}/scp-dst/src.bin"]
scp = size_mib / timed(scp_cmd)
# scp leaves the copy in the page cache; nunet cp syncs each file before it says it is there.
os.remove(f"{work}/scp-dst/src.bin")
scp_sync = size_mib / timed(["bash", "-c", " ".join(f"'{a}'" for a in scp_cmd) + f" && sync '{work}/scp-dst/src.bin'"])

env = dict(os.environ, NUNET_HOME=nodes[0]["home"], DMS_PASSPHRASE_FILE=f"{dn}/passphrase")
peer = nodes[1]["did"]
send = size_mib / timed(inns(1) + [nunet, "cp", "-q", src, f"{peer}:src.bin"], env)
back = f"{work}/back.bin"
fetch = size_mib / timed(inns(1) + [nunet, "cp", "-q", f"{peer}:src.bin", back], env)
assert subprocess.run(["cmp", src, back]).returncode == 0, "the fetched copy differs"

print(f"file: {size_mib} MiB, two namespace hosts on one bridge")
print(f"iperf3 TCP:      {iperf:8.1f} MiB/s")
print(f"scp:             {scp:8.1f} MiB/s")
print(f"scp + sync:      {scp_sync:8.1f} MiB/s")
for name, v in [("nunet cp send", send), ("nunet cp fetch", fetch)]:
    print(f"{name + ':':16} {v:8.1f} MiB/s  ({v / iperf:.2f}x iperf3, {v / scp:.2f}x scp, {v / scp_sync:.2f}x scp + sync)")
PY
