# shellcheck shell=bash
# The DMS subnet path (b) of the subnet benchmark, sourced after netns.sh.
#
# What it is for: the ONE place where the DMS subnet is brought up in the testbed. Contract for
# callers: `dms_up` either returns 0 with both ends reachable (addresses from `dms_addr_a` /
# `dms_addr_b`, processes tracked by the testbed), or prints
# "DMS subnet path not available: <reason>" and returns 1 so that the caller skips path (b).
# Today it runs the `subnet_pair` example of crate nunet-subnet (one libp2p host + the subnet TUN
# per namespace); when the real daemons are used, only this file changes.
# What it must not do: build anything, or leave its processes running after a failed start.
#
# Environment: DMS_PAIR_BIN (default target/release/examples/subnet_pair under the repo root),
# DMS_PAIR_ARGS_A / DMS_PAIR_ARGS_B (override the argument lists below, whitespace-separated),
# DMS_UP_TIMEOUT (seconds to wait for the subnet to pass a ping, default 20).

DMS_ADDR_A=10.98.0.1
DMS_ADDR_B=10.98.0.2
DMS_UDP_PORT=4100

# dms_addr_a / dms_addr_b: subnet addresses of the two ends.
dms_addr_a() { echo "$DMS_ADDR_A"; }
dms_addr_b() { echo "$DMS_ADDR_B"; }

# dms_unavailable REASON: the skip message of the contract; returns 1.
dms_unavailable() {
	echo "DMS subnet path not available: $*"
	return 1
}

# dms_up: start the subnet pair in the testbed (see the contract at the top of this file).
dms_up() {
	local root bin args_a args_b pid_a pid_b
	root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
	bin="${DMS_PAIR_BIN:-$root/target/release/examples/subnet_pair}"
	if [ ! -x "$bin" ]; then
		dms_unavailable "$bin not built (cargo build --release -p nunet-subnet --example subnet_pair)"
		return 1
	fi
	# Proposed command line of subnet_pair (see bench/README.md): side index (deterministic
	# keys, so each side knows the other's peer ID), own and peer underlay address, QUIC port,
	# and the TUN address with its prefix.
	args_a="${DMS_PAIR_ARGS_A:---index 0 --listen $TB_ADDR_A:$DMS_UDP_PORT --peer $TB_ADDR_B:$DMS_UDP_PORT --tun-addr $DMS_ADDR_A/24}"
	args_b="${DMS_PAIR_ARGS_B:---index 1 --listen $TB_ADDR_B:$DMS_UDP_PORT --peer $TB_ADDR_A:$DMS_UDP_PORT --tun-addr $DMS_ADDR_B/24}"
	# shellcheck disable=SC2086 # the argument lists are meant to be split on whitespace
	tb_spawn A "$TB_DIR/subnet_pair-A.log" "$bin" $args_a
	pid_a=$TB_LAST_PID
	# shellcheck disable=SC2086
	tb_spawn B "$TB_DIR/subnet_pair-B.log" "$bin" $args_b
	pid_b=$TB_LAST_PID
	if tb_wait_for "${DMS_UP_TIMEOUT:-20}" tb_exec A ping -c 1 -W 1 "$DMS_ADDR_B"; then
		return 0
	fi
	local reason
	reason="no ping from $DMS_ADDR_A to $DMS_ADDR_B within ${DMS_UP_TIMEOUT:-20}s; log A: $(tail -n 3 "$TB_DIR/subnet_pair-A.log" 2>/dev/null | tr '\n' ' ')"
	kill "$pid_a" "$pid_b" 2>/dev/null || true
	wait "$pid_a" "$pid_b" 2>/dev/null || true
	dms_unavailable "$reason"
}
