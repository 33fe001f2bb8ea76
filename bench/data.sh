#!/usr/bin/env bash
# Volume I/O through the storage layers a provider mounts for allocations (issue 17), against
# the host disk under them, in one run (root):
#   host        a directory on the disk that holds the provider's data dir
#   named       an ext4 image on a loop device (a named volume: size-limited)
#   encrypted   gocryptfs over such an image (an `encrypted: true` named volume)
#   glusterfs   a one-brick GlusterFS volume (brick on the same disk) through the FUSE client,
#               server in its own network namespace, reached over a veth pair
# Each: sequential write of SIZE_MIB with dd (conv=fsync, so the data is on the image/brick),
# then a sequential read after dropping the page cache. Prints
# `name: value MiB/s (baseline: value, ratio: x)` with the host disk as the baseline.
# Then S3 inputs/outputs (nunet-objectstore against the test Garage of scripts/s3-test-server.sh,
# storing on the same disk): publishing a SIZE_MIB file and staging it back, against the host
# disk's write and read and against curl's SigV4 PUT and GET of the same object on the same
# store. `nunet cp` between nodes: bench/cp.sh.
set -euo pipefail

SIZE_MIB="${SIZE_MIB:-256}"
WORK="$(mktemp -d "${BENCH_DIR:-/var/tmp}/nunet-data-bench.XXXXXX")"
NS="nbdata-$$"
VOL="nbdata$$"
GLUSTERD_PID=""

cleanup() {
  set +e
  # gocryptfs lets go of its backing image a moment after its own unmount: retry, then
  # detach lazily; never delete through a mount.
  for m in "$WORK/mnt/glusterfs" "$WORK/mnt/encrypted" "$WORK/mnt/enc-backing" "$WORK/mnt/named"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      mountpoint -q "$m" || break
      umount "$m" 2>/dev/null || sleep 0.2
    done
    mountpoint -q "$m" && umount -l "$m"
  done
  pkill -f -- "--volfile-id ${VOL}\\." 2>/dev/null
  [ -n "$GLUSTERD_PID" ] && kill "$GLUSTERD_PID" 2>/dev/null && wait "$GLUSTERD_PID" 2>/dev/null
  ip link del "vd$$a" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  grep -q " $WORK/" /proc/self/mountinfo || rm -rf "$WORK"
}
trap cleanup EXIT

for tool in dd mkfs.ext4 gocryptfs glusterd mount.glusterfs ip nsenter; do
  command -v "$tool" >/dev/null || { echo "data.sh: needs $tool (.ci/install-runtimes.sh installs it)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "data.sh: run as root (loop devices, FUSE, namespaces)" >&2; exit 1; }

mkdir -p "$WORK"/{host,mnt/named,mnt/enc-backing,mnt/encrypted,mnt/glusterfs,brick}
image_mib=$((SIZE_MIB * 2 + 64))

# named: an ext4 image on a loop device, as the provider makes one.
truncate -s "${image_mib}M" "$WORK/named.img"
mkfs.ext4 -q -F -m 0 "$WORK/named.img"
mount -o loop,nosuid,nodev "$WORK/named.img" "$WORK/mnt/named"

# encrypted: gocryptfs ciphertext inside another such image.
truncate -s "${image_mib}M" "$WORK/enc.img"
mkfs.ext4 -q -F -m 0 "$WORK/enc.img"
mount -o loop,nosuid,nodev "$WORK/enc.img" "$WORK/mnt/enc-backing"
mkdir "$WORK/mnt/enc-backing/cipher"
key="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "$key" | gocryptfs -init -q -nosyslog -scryptn 10 "$WORK/mnt/enc-backing/cipher" >/dev/null 2>&1
echo "$key" | gocryptfs -q -nosyslog -allow_other "$WORK/mnt/enc-backing/cipher" "$WORK/mnt/encrypted" >/dev/null 2>"$WORK/gocryptfs.err"

# glusterfs: glusterd in a namespace with private state (tmpfs), a veth to the host.
ip netns add "$NS"
ip link add "vd$$a" type veth peer name "vd$$b"
ip link set "vd$$b" netns "$NS"
ip addr add 10.98.0.1/24 dev "vd$$a" && ip link set "vd$$a" up
ip -n "$NS" addr add 10.98.0.2/24 dev "vd$$b" && ip -n "$NS" link set "vd$$b" up && ip -n "$NS" link set lo up
ip netns exec "$NS" sh -c 'mount -t tmpfs tmpfs /var/lib/glusterd && mount -t tmpfs tmpfs /var/log/glusterfs && mount -t tmpfs tmpfs /run && exec glusterd -N' &
GLUSTERD_PID=$!
gl() { nsenter --target "$GLUSTERD_PID" --mount --net gluster --mode=script "$@"; }
for _ in $(seq 50); do gl volume list >/dev/null 2>&1 && break; sleep 0.2; done
gl volume create "$VOL" "10.98.0.2:$WORK/brick/b" force >/dev/null
gl volume start "$VOL" >/dev/null
mount -t glusterfs -o "log-file=$WORK/glusterfs.log" "10.98.0.2:/$VOL" "$WORK/mnt/glusterfs"

# MiB/s from dd's summary line ("… copied, 1.23 s, 456 MB/s"): bytes / seconds.
rate() { awk -v mib="$SIZE_MIB" '/copied/ { for (i = 1; i <= NF; i++) if ($i == "s,") s = $(i-1); printf "%.1f", mib / s }'; }
write_rate() { dd if=/dev/zero of="$1/bench.bin" bs=1M count="$SIZE_MIB" conv=fsync 2>&1 | rate; }
read_rate() { sync; echo 3 >/proc/sys/vm/drop_caches; dd if="$1/bench.bin" of=/dev/null bs=1M 2>&1 | rate; }

declare -A W R
for layer in host named encrypted glusterfs; do
  dir="$WORK/$layer"; [ "$layer" != host ] && dir="$WORK/mnt/$layer"
  W[$layer]="$(write_rate "$dir")"
  R[$layer]="$(read_rate "$dir")"
  rm -f "$dir/bench.bin"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "volume I/O, ${SIZE_MIB} MiB sequential (dd), baseline: the host disk under them"
for layer in named encrypted glusterfs; do
  echo "volume_write_${layer}: ${W[$layer]} MiB/s (baseline: ${W[host]}, ratio: $(ratio "${W[$layer]}" "${W[host]}"))"
  echo "volume_read_${layer}: ${R[$layer]} MiB/s (baseline: ${R[host]}, ratio: $(ratio "${R[$layer]}" "${R[host]}"))"
done

# S3 inputs/outputs through the same client the provider uses.
S3_DIR="${NUNET_TEST_S3_DIR:-/var/lib/nunet-test/garage}"
if [ ! -s "$S3_DIR/credentials" ]; then
  echo "s3: no test store ($S3_DIR/credentials); run scripts/s3-test-server.sh" >&2
  exit 1
fi
cd "$(dirname "$0")/.."
s3="$(cargo run --release -q -p nunet-objectstore --example s3_throughput -- \
  "$(cat "$S3_DIR/endpoint")" garage "$S3_DIR/credentials" "$SIZE_MIB")"
up="$(awk '/^publish/ {print $2}' <<<"$s3")"
down="$(awk '/^stage/ {print $2}' <<<"$s3")"
bucket="$(awk '/^bucket/ {print $2}' <<<"$s3")"
echo "S3 outputs/inputs, ${SIZE_MIB} MiB object, Garage on loopback on the same disk, baseline: the host disk"
echo "s3_publish: ${up} MiB/s (baseline: ${W[host]}, ratio: $(ratio "$up" "${W[host]}"))"
echo "s3_stage: ${down} MiB/s (baseline: ${R[host]}, ratio: $(ratio "$down" "${R[host]}"))"

# A plain client of the same store on the same object: curl's own SigV4 (unsigned payload,
# as the provider's client sends), the download synced to disk as staging does.
key_id="$(awk -F' *= *' 'tolower($1) ~ /access_key_id/ {print $2}' "$S3_DIR/credentials")"
secret="$(awk -F' *= *' 'tolower($1) ~ /secret_access_key/ {print $2}' "$S3_DIR/credentials")"
endpoint="$(cat "$S3_DIR/endpoint")"
curl_s3() {
  curl -sf --aws-sigv4 "aws:amz:garage:s3" --user "$key_id:$secret" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
t0=$(date +%s%N)
curl_s3 -o "$WORK/curl-get.bin" "$endpoint/$bucket/bench/data.bin"
sync "$WORK/curl-get.bin"
t1=$(date +%s%N)
curl_s3 -T "$WORK/curl-get.bin" "$endpoint/$bucket/curl/data.bin" >/dev/null
t2=$(date +%s%N)
get="$(awk -v m="$SIZE_MIB" -v s="$(secs "$t0" "$t1")" 'BEGIN { printf "%.0f", m / s }')"
put="$(awk -v m="$SIZE_MIB" -v s="$(secs "$t1" "$t2")" 'BEGIN { printf "%.0f", m / s }')"
echo "S3 against a plain client (curl --aws-sigv4) on the same store and object; target (issue 17): staging >= 0.8x"
echo "s3_publish_vs_curl: ${up} MiB/s (baseline: curl PUT ${put}, ratio: $(ratio "$up" "$put"))"
echo "s3_stage_vs_curl: ${down} MiB/s (baseline: curl GET ${get}, ratio: $(ratio "$down" "$get"))"
