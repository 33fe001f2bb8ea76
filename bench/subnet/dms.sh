# shellcheck shell=bash disable=SC2034,SC2016 # DMS_* are read by the sourcing script; bash -c scripts
# The DMS subnet path (b) of the subnet benchmark, sourced after netns.sh and devnet.sh.
#
# What it is for: the ONE place where the DMS subnet is brought up in the testbed. Contract for
# callers: `dms_up` either returns 0 with both ends reachable — ping/iperf3 client on side
# $DMS_CLIENT_SIDE, server on side $DMS_SERVER_SIDE at address $DMS_ADDR_B, everything tracked
# by the testbed — or prints "DMS subnet path not available: <reason>" and returns 1.
# Two modes (DMS_MODE):
#   devnet (default) — the product path: on the devnet testbed (devnet.sh) it onboards node-1 and
#     node-2 and deploys from node-3 a 2-allocation ensemble of `nunet-test/busybox:latest`
#     `sleep` services pinned one to node-1 (side A), one to node-2 (side B); the ends are the two containers' network namespaces (named with `ip netns attach`),
#     so the packets go container veth -> ensemble TUN -> libp2p -> TUN -> container veth;
#   pair — data path only: the `subnet_pair` example of crate nunet-subnet (one libp2p host + the
#     subnet TUN per namespace) on the plain veth testbed (netns.sh `testbed_up`).
# What it must not do: build anything, or leave a deployment or process running after the run.
#
# Environment: DMS_MODE, DMS_UP_TIMEOUT (seconds to wait for a ping across, default 30),
# DMS_DEPLOY_TIMEOUT (default 120s), DMS_PAIR_DATAGRAMS (on|off, pair mode), DMS_PAIR_BIN (default
# target/release/examples/subnet_pair), DMS_PAIR_TRANSPORT (tcp|quic, default tcp).

DMS_CLIENT_SIDE=""
DMS_SERVER_SIDE=""
DMS_ADDR_A=""
DMS_ADDR_B=""
DMS_DEPLOYMENT=""
DMS_NOTE=""

# dms_unavailable REASON: the skip message of the contract; returns 1.
dms_unavailable() {
	echo "DMS subnet path not available: $*"
	return 1
}

# dms_wait_ping: wait until the server end answers pings from the client end.
dms_wait_ping() {
	tb_wait_for "${DMS_UP_TIMEOUT:-30}" tb_exec "$DMS_CLIENT_SIDE" ping -c 1 -W 1 "$DMS_ADDR_B"
}

# dms_up: bring up path (b) in the mode DMS_MODE (see the contract at the top of this file).
dms_up() {
	case "${DMS_MODE:-devnet}" in
	devnet) dms_deploy_up ;;
	pair) dms_pair_up ;;
	*) tb_die "unknown DMS_MODE '${DMS_MODE}' (devnet or pair)" ;;
	esac
}

# dms_ensemble_yaml: the benchmark ensemble, two sleeping busybox services, bench-a pinned to
# node-1 (side A) and bench-b to node-2 (side B).
dms_ensemble_yaml() {
	local a
	echo "version: V1"
	echo "allocations:"
	for a in bench-a bench-b; do
		cat <<EOF
  $a:
    executor: docker
    type: service
    resources: {cpu: {cores: 0.2}, ram: {size: 64MiB}, disk: {size: 50MiB}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [sleep, "86400"]
EOF
	done
	printf 'nodes:\n  node-a:\n    allocations: [bench-a]\n    peer: %s\n' "$DN_PEER_1"
	printf '  node-b:\n    allocations: [bench-b]\n    peer: %s\n' "$DN_PEER_2"
}

# dms_container ALLOC: the running container of ALLOC in the deployment; prints "ID NODE PID".
dms_container() {
	local id
	id="$(docker ps -q --filter "label=nunet.ensemble=$DMS_DEPLOYMENT" \
		--filter "label=nunet.allocation=$1")"
	[ -n "$id" ] && [ "$(wc -w <<<"$id")" -eq 1 ] || return 1
	docker inspect -f "$id {{index .Config.Labels \"nunet.node\"}} {{.State.Pid}}" "$id"
}

# dms_shutdown: shut the deployment down (exit hook).
dms_shutdown() {
	[ -n "$DMS_DEPLOYMENT" ] || return 0
	devnet_node 3 deployment shutdown "$DMS_DEPLOYMENT" >/dev/null ||
		echo "warning: deployment shutdown $DMS_DEPLOYMENT failed" >&2
	local c
	for c in $(docker ps -aq --filter "label=nunet.ensemble=$DMS_DEPLOYMENT" 2>/dev/null); do
		echo "warning: removing leftover container $c of $DMS_DEPLOYMENT" >&2
		docker rm -f "$c" >/dev/null 2>&1 || true
	done
}

# dms_deploy_up: the product path (devnet mode).
dms_deploy_up() {
	local i out a b
	tb_require docker
	for i in 1 2; do
		devnet_node "$i" actor cmd --json /dms/node/onboarding/onboard \
			--ram 1 --cpu 1 --disk 2 >"$TB_DIR/onboard-$i.log" 2>&1 ||
			tb_die "onboarding node-$i failed: $(cat "$TB_DIR/onboard-$i.log")"
	done
	dms_ensemble_yaml >"$TB_DIR/bench-ensemble.yaml"
	tb_on_exit dms_shutdown
	echo "deploying a 2-allocation ensemble on the devnet" >&2
	out="$(devnet_node 3 deploy -f "$TB_DIR/bench-ensemble.yaml" -t "${DMS_DEPLOY_TIMEOUT:-120s}" \
		--json 2>&1)" || {
		dms_unavailable "deploy failed: $(tail -c 600 <<<"$out")"
		return 1
	}
	DMS_DEPLOYMENT="$(python3 -c '
import json, sys
v = json.loads(sys.argv[1])
print(v["id"] if v.get("status") == "Running" else "")
' "$out" 2>/dev/null)" || true
	if [ -z "$DMS_DEPLOYMENT" ]; then
		dms_unavailable "deployment is not Running: $(tail -c 600 <<<"$out")"
		return 1
	fi
	# shellcheck disable=SC2046 # "ID NODE PID" into $1..$3
	set -- $(dms_container bench-a) || true
	a=("$@")
	# shellcheck disable=SC2046
	set -- $(dms_container bench-b) || true
	b=("$@")
	if [ "${#a[@]}" -ne 3 ] || [ "${#b[@]}" -ne 3 ]; then
		dms_unavailable "no single running container per allocation of $DMS_DEPLOYMENT"
		return 1
	fi
	if ! dms_is_one_of "${a[1]}" "$DN_DID_1" "$DN_PEER_1" ||
		! dms_is_one_of "${b[1]}" "$DN_DID_2" "$DN_PEER_2"; then
		tb_die "bench-a/bench-b run on nodes ${a[1]} / ${b[1]}, not on node-1 / node-2"
	fi
	tb_attach_pid CA "${a[2]}"
	tb_attach_pid CB "${b[2]}"
	DMS_CLIENT_SIDE=CA DMS_SERVER_SIDE=CB
	DMS_ADDR_A="$(dms_eth0_addr CA)" DMS_ADDR_B="$(dms_eth0_addr CB)"
	if [ -z "$DMS_ADDR_A" ] || [ -z "$DMS_ADDR_B" ]; then
		tb_die "a container has no IPv4 address on eth0: $(tb_exec CB ip -4 -o addr 2>&1)"
	fi
	DMS_NOTE="containers ${a[0]:0:12} ($DMS_ADDR_A) -> ${b[0]:0:12} ($DMS_ADDR_B) of deployment $DMS_DEPLOYMENT"
	dms_wait_ping && return 0
	dms_unavailable "no ping from $DMS_ADDR_A to $DMS_ADDR_B within ${DMS_UP_TIMEOUT:-30}s"
}

# dms_is_one_of VALUE X Y: VALUE is X or Y.
dms_is_one_of() {
	[ "$1" = "$2" ] || [ "$1" = "$3" ]
}

# dms_eth0_addr SIDE: the IPv4 address of eth0 in a side's namespace.
dms_eth0_addr() {
	tb_exec "$1" ip -4 -o addr show dev eth0 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}'
}

# dms_pair_up: the data path only (pair mode), subnet_pair on sides A and B of the veth testbed.
dms_pair_up() {
	local root bin proto port=4100 pid_a pid_b fifo
	root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
	bin="${DMS_PAIR_BIN:-$root/target/release/examples/subnet_pair}"
	if [ ! -x "$bin" ]; then
		dms_unavailable "$bin not built (cargo build --release -p nunet-subnet --example subnet_pair)"
		return 1
	fi
	case "${DMS_PAIR_TRANSPORT:-tcp}" in
	tcp) proto=tcp ;;
	quic) proto=udp port="4100/quic-v1" ;;
	*) tb_die "DMS_PAIR_TRANSPORT must be tcp or quic" ;;
	esac
	DMS_ADDR_A=10.77.0.1 DMS_ADDR_B=10.77.0.2
	# subnet_pair runs until its stdin closes: give it a FIFO this shell keeps open.
	fifo="$TB_DIR/subnet_pair.stdin"
	mkfifo "$fifo"
	exec {DMS_PAIR_FD}<>"$fifo"
	tb_spawn A "$TB_DIR/subnet_pair-A.log" bash -c 'exec "$@" <"$0"' "$fifo" "$bin" --seed 1 \
		--listen "/ip4/$TB_ADDR_A/$proto/$port" --tun "nnbA$TB_SUFFIX" --addr "$DMS_ADDR_A" \
		--route "$DMS_ADDR_A=1" --route "$DMS_ADDR_B=2" --datagrams "${DMS_PAIR_DATAGRAMS:-on}"
	pid_a=$TB_LAST_PID
	tb_spawn B "$TB_DIR/subnet_pair-B.log" bash -c 'exec "$@" <"$0"' "$fifo" "$bin" --seed 2 \
		--listen "/ip4/$TB_ADDR_B/$proto/$port" --peer "/ip4/$TB_ADDR_A/$proto/$port" \
		--tun "nnbB$TB_SUFFIX" --addr "$DMS_ADDR_B" --route "$DMS_ADDR_A=1" --route "$DMS_ADDR_B=2" \
		--datagrams "${DMS_PAIR_DATAGRAMS:-on}"
	pid_b=$TB_LAST_PID
	DMS_CLIENT_SIDE=A DMS_SERVER_SIDE=B
	DMS_NOTE="subnet_pair over $proto, $DMS_ADDR_A -> $DMS_ADDR_B"
	dms_wait_ping && return 0
	local reason
	reason="no ping from $DMS_ADDR_A to $DMS_ADDR_B within ${DMS_UP_TIMEOUT:-30}s; log A: $(tail -n 3 "$TB_DIR/subnet_pair-A.log" 2>/dev/null | tr '\n' ' '); log B: $(tail -n 3 "$TB_DIR/subnet_pair-B.log" 2>/dev/null | tr '\n' ' ')"
	kill "$pid_a" "$pid_b" 2>/dev/null || true
	wait "$pid_a" "$pid_b" 2>/dev/null || true
	dms_unavailable "$reason"
}
