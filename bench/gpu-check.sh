#!/usr/bin/env bash
# GPU device check (issue 21), for a machine with a real GPU. Builds nothing: give it a
# `nunet` binary (NUNET=path; default target/release/nunet, then target/debug/nunet).
#
#   1. `nunet gpu list` and `nunet gpu test --no-run`: what the machine has and what a job
#      would get;
#   2. a 2-node devnet on loopback: node-2 onboards half the VRAM of the first GPU;
#   3. where Docker and the NVIDIA container runtime exist (node-2's onboarding says the GPU
#      is usable by docker) and the host has nvidia-smi: a GPU ensemble is deployed from
#      node-1, placed on node-2, and its container runs `nvidia-smi -L`, which must name the
#      onboarded GPU's UUID and nothing else. The image is made locally from nvidia-smi's
#      libraries (`docker import`): the machine needs no registry;
#   4. otherwise the accounting and bid path with the real inventory: the GPU ensemble is
#      declined with the reason (no runtime), and a manual commitment of the GPU shows it
#      held and then free again.
#
# Prints each step with its time; exits 0 when the path it could run passed, 2 when the
# machine has no GPU that NVML or sysfs reports.
# Settings: NUNET, KEEP=1 (leave the devnet running), DIR (devnet dir).
set -uo pipefail
cd "$(dirname "$0")/.."

nunet="${NUNET:-}"
if [ -z "$nunet" ]; then
  for p in target/release/nunet target/debug/nunet "${CARGO_TARGET_DIR:-/nonexistent}/release/nunet"; do
    if [ -x "$p" ]; then nunet="$p"; break; fi
  done
fi
[ -x "${nunet:-}" ] || { echo "gpu-check: no nunet binary (set NUNET=path)"; exit 1; }
nunet="$(realpath "$nunet")"
command -v python3 >/dev/null || { echo "gpu-check: needs python3 (reads JSON)"; exit 1; }

t0=$SECONDS
step() { echo "== [$((SECONDS - t0)) s] $*"; }
fail() { echo "gpu-check: FAILED: $*"; exit 1; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

step "nunet gpu list"
"$nunet" gpu list
list="$("$nunet" gpu list --json)" || fail "gpu list --json"
count="$(echo "$list" | field 'len(d["gpus"])')" || fail "gpu list --json is not JSON"
if [ "$count" = 0 ]; then
  echo "gpu-check: this machine has no GPU that NVML or sysfs reports"
  exit 2
fi
# The first GPU with a VRAM figure: its index, half its VRAM in GiB (at least 1), vendor.
read -r idx share vendor key < <(echo "$list" | field '" ".join(next(([str(g["index"]), str(max(1, g["vram_bytes"] // 2 // 2**30)), g["vendor"], (g["uuid"] or "pci:" + g["pci_address"])] for g in d["gpus"] if g["vram_bytes"] > 0), ["-", "-", "-", "-"]))')
[ -n "${idx:-}" ] && [ "$idx" != "-" ] || fail "no GPU with a VRAM figure (see the notes above)"
echo "first GPU with VRAM: index $idx ($vendor, $key); onboarding $share GiB of it"

step "nunet gpu test --no-run"
"$nunet" gpu test --no-run || true

if [ -n "${DIR:-}" ]; then dir="$DIR"; tmp=""; else tmp="$(mktemp -d)"; dir="$tmp/devnet"; fi
step "devnet: 2 nodes in $dir"
# Set before `devnet up`, so a half-started devnet is stopped too.
if [ "${KEEP:-0}" != 1 ]; then
  trap '"$nunet" devnet down --dir "$dir" >/dev/null 2>&1; [ -n "$tmp" ] && rm -rf "$tmp"' EXIT
fi
"$nunet" devnet up --nodes 2 --dir "$dir" --base-port 0 || fail "devnet up"
export DMS_PASSPHRASE_FILE="$dir/passphrase"
n1() { NUNET_HOME="$dir/node-1" "$nunet" "$@"; }
n2() { NUNET_HOME="$dir/node-2" "$nunet" "$@"; }

step "node-2 onboards 1 core, 1 GiB RAM, 2 GiB disk and GPU $idx:$share"
on="$(n2 actor cmd --json /dms/node/onboarding/onboard --cpu 1 --ram 1 --disk 2 --gpus "$idx:$share")" \
  || fail "onboarding: $on"
echo "$on" | field 'json.dumps(d["gpu_units"], indent=1)'
usable="$(echo "$on" | field '"docker" in d["gpu_units"][0]["usable_by"]')" || fail "onboarding reports no GPU unit"
unit="$(echo "$on" | field 'd["gpu_units"][0]["device"]')" || fail "onboarding reports no GPU unit"
mig="$(echo "$on" | field 'd["gpu_units"][0]["mig_parent"] is not None')"

case "$vendor" in NVIDIA) want=NVIDIA ;; AMD/ATI) want=AMD ;; *) want=Intel ;; esac
yaml="$dir/gpu.yaml"
write_ensemble() { # $1 image, $2 entrypoint (YAML list)
  cat >"$yaml" <<EOF
version: V1
allocations:
  check:
    executor: docker
    type: task
    resources:
      cpu: {cores: 0.5}
      ram: {size: 256MiB}
      disk: {size: 100MiB}
      gpus: [{vendor: $want, vram: 1}]
    execution:
      type: docker
      image: $1
      entrypoint: $2
nodes:
  n1:
    allocations: [check]
EOF
}

if [ "$usable" = True ] && { [ "$vendor" != NVIDIA ] || ! command -v nvidia-smi >/dev/null || ! command -v docker >/dev/null; }; then
  # Docker can use the GPU, but this script has no container test for it (a non-NVIDIA GPU,
  # or no nvidia-smi/docker CLI on the host, and no registry to pull a vendor image from).
  echo "docker can use GPU $unit here, but the container test needs an NVIDIA GPU, nvidia-smi and the docker CLI on the host; checking the bid only"
  write_ensemble nunet-test/busybox:latest "[true]"
  step "deploy the GPU ensemble from node-1: node-2 must bid"
  out="$(n1 deploy -f "$yaml" -t 30s 2>&1)"
  echo "$out" | tail -5
  echo "$out" | grep -q "bid from" || fail "node-2 did not bid for the GPU ensemble"
  step "passed: node-2 bid for the GPU ensemble (no container run)"
elif [ "$usable" = True ]; then
  step "image nunet-gpu-check:local from nvidia-smi's libraries (no registry)"
  smi="$(command -v nvidia-smi)"
  files=("$smi")
  while read -r f; do [ -n "$f" ] && files+=("$f"); done < <(ldd "$smi" | grep -o '/[^ ]*' | sort -u)
  tar -ch "${files[@]}" 2>/dev/null | docker import - nunet-gpu-check:local >/dev/null || fail "docker import"
  write_ensemble nunet-gpu-check:local "[$smi, -L]"
  step "deploy the GPU ensemble from node-1"
  out="$(n1 deploy -f "$yaml" -t 180s --json)" || fail "deploy: $out"
  id="$(echo "$out" | field 'd["id"]')"
  echo "$out" | field 'json.dumps(d["manifest"]["allocations"], indent=1)'
  got="$(echo "$out" | field '",".join(d["manifest"]["allocations"]["n1.check"].get("gpus", []))')"
  [ "$got" = "$unit" ] || fail "the allocation holds GPU(s) '$got', expected $unit"
  step "the container's nvidia-smi -L"
  logs="$(n1 deployment logs "$id")"
  echo "$logs"
  echo "$logs" | grep -q "$unit" || fail "nvidia-smi in the container does not list $unit"
  lines="$(echo "$logs" | grep -c '^GPU ')"
  [ "$lines" = 1 ] || fail "the container sees $lines GPUs, expected exactly 1"
  step "passed: the deployed container saw exactly GPU $unit"
else
  echo "a container test needs Docker, the NVIDIA container runtime and nvidia-smi on the host, and an NVIDIA GPU usable by docker (usable: $usable); running the accounting and bid path"
  write_ensemble nunet-test/busybox:latest "[true]"
  step "deploy the GPU ensemble from node-1: node-2 must decline with the reason"
  out="$(n1 deploy -f "$yaml" -t 20s 2>&1)"
  echo "$out" | tail -5
  id="$(n1 get deployments --json | field 'd["deployments"][-1]["id"]')"
  events="$(n1 deployment status "$id" --json)"
  echo "$events" | field '"\n".join(e["message"] for e in d["events"] if "declin" in e["message"])'
  echo "$events" | grep -q "declined to bid" || fail "no decline with a reason from node-2"
  if [ "$mig" = True ]; then
    step "passed: bid path with the real inventory (a MIG GPU: the manual commitment takes whole devices by index, skipped)"
    exit 0
  fi
  step "a manual commitment of GPU $idx holds it; its release frees it"
  n2 actor cmd --json /dms/node/resources/commit --id gpu-check --cpu 0.1 --ram 0.1 --disk 0.1 --gpus "$idx:$share" --ttl 60 || fail "commit"
  held="$(n2 actor cmd --json /dms/node/resources/free | field '[g["vram"] for g in d["gpus"] if g["device"] == "'"$unit"'"][0]')"
  [ "$held" = 0 ] || fail "GPU $unit still shows $held bytes free while committed"
  n2 actor cmd --json /dms/node/resources/release --id gpu-check >/dev/null || fail "release"
  free="$(n2 actor cmd --json /dms/node/resources/free | field '[g["vram"] for g in d["gpus"] if g["device"] == "'"$unit"'"][0]')"
  [ "$free" -gt 0 ] || fail "GPU $unit not free after the release"
  step "passed: bid path and accounting with the real inventory (no container run)"
fi
