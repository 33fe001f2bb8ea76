#!/usr/bin/env bash
# Installs and starts the runtimes the executor tests use, on a fresh Debian machine, as root.
# Idempotent: running it again only checks that everything is in place.
#   - dockerd (docker.io) started in the background and waited for
#   - a local busybox image `nunet-test/busybox:latest` made with `docker import`
#     (no container registry is reachable)
#   - qemu-system-x86 and Debian's cloud kernel for the QEMU microvm backend
#   - busybox-static (initramfs for VM tests, rootfs for the image), iproute2, iptables, ping
#   - GlusterFS server and FUSE client (volume tests), e2fsprogs (named volumes are ext4 images),
#     gocryptfs and fuse3 (encrypted named volumes)
#   - Prometheus and promtool (the metrics test scrapes a devnet with a real Prometheus)
#   - Chromium (Debian's) and the dashboard's npm modules, playwright-core among them (the
#     dashboard test drives the page in headless Chromium), from a cache under ~/.cache/nunet
#   - Garage, an S3-compatible store, on 127.0.0.1:3900 (inputs/outputs tests), built once per
#     machine and cached under ~/.cache/nunet (scripts/s3-test-server.sh)
set -euo pipefail

IMAGE="${NUNET_TEST_IMAGE:-nunet-test/busybox:latest}"
export DEBIAN_FRONTEND=noninteractive

pkgs=()
command -v dockerd >/dev/null || pkgs+=(docker.io)
command -v qemu-system-x86_64 >/dev/null || pkgs+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || pkgs+=(busybox-static)   # replaces a dynamic busybox
command -v ip >/dev/null || pkgs+=(iproute2)
command -v iptables >/dev/null || pkgs+=(iptables)
command -v ping >/dev/null || pkgs+=(iputils-ping)   # subnet data-path tests
command -v nsenter >/dev/null || pkgs+=(util-linux)
ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || pkgs+=(linux-image-cloud-amd64)
command -v glusterd >/dev/null || pkgs+=(glusterfs-server)
command -v mount.glusterfs >/dev/null || pkgs+=(glusterfs-client)
command -v mkfs.ext4 >/dev/null || pkgs+=(e2fsprogs)
command -v gocryptfs >/dev/null || pkgs+=(gocryptfs)          # encrypted named volumes
command -v fusermount >/dev/null || pkgs+=(fuse3)             # gocryptfs mounts with it
command -v prometheus >/dev/null || pkgs+=(prometheus)        # metrics test (+ promtool)
command -v chromium >/dev/null || pkgs+=(chromium)            # dashboard test
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "install-runtimes: apt-get install ${pkgs[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

# dockerd: start in the background when no daemon answers.
if ! docker info >/dev/null 2>&1; then
  echo "install-runtimes: starting dockerd"
  mkdir -p /var/log
  # Prefer iptables-legacy when nftables is unusable in this kernel.
  if ! iptables -L >/dev/null 2>&1 && command -v iptables-legacy >/dev/null; then
    update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null 2>&1 || true
  fi
  nohup dockerd >/var/log/nunet-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    echo "install-runtimes: dockerd did not come up; its log:" >&2
    tail -n 40 /var/log/nunet-dockerd.log >&2 || true
    exit 1
  fi
fi

# Local busybox image from a rootfs of busybox-static.
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "install-runtimes: building $IMAGE with docker import"
  root="$(mktemp -d)"
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,root}
  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  echo 'root:x:0:' >"$root/etc/group"
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/bin:/sbin' -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
fi

bash "$(dirname "$0")/../scripts/s3-test-server.sh"

# The dashboard's npm modules (Vite, TypeScript, playwright-core), as package-lock.json pins them.
command -v node >/dev/null || { echo "install-runtimes: no Node.js (node) for the dashboard" >&2; exit 1; }
bash "$(dirname "$0")/../scripts/dashboard-build" --deps

echo "install-runtimes: ok (docker $(docker version --format '{{.Server.Version}}'), image $IMAGE," \
  "$(qemu-system-x86_64 --version | head -n1), kernel $(ls /boot/vmlinuz-*-cloud-amd64 | tail -n1)," \
  "$(glusterd --version | head -n1), $(chromium --version 2>/dev/null | head -n1), node $(node --version))"
