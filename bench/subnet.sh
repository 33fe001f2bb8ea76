#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Subnet benchmark (issue 9), one run on one testbed: iperf3 TCP throughput (A -> B, 5 s, one
# stream) and ping RTT (20 pings, 50 ms apart) over
#   (a) the raw LAN between two hosts (network namespaces),
#   (b) the DMS subnet,
#   (c) boringtun, userspace WireGuard from crates.io, between the same two hosts (MTU 1420).
# Default (product path): the hosts are node-1 and node-2 of `nunet devnet up --netns --nodes 3`
# (real daemons, RELEASE `nunet` binary, LAN = veth + bridge; node-3 orchestrates); (b) runs
# between two containers of one deployed ensemble, one on each host (bench/subnet/dms.sh).
# `--pair` (or DMS_MODE=pair): the hosts are two namespaces joined by one veth pair, and (b) is
# the `subnet_pair` example (data path only, no daemon, no container).
# Prints the table, the ratios b/a and b/c and the added RTTs (path RTT - raw RTT) and whether
# the target holds: b >= 1.5 x c in the same run, b's added RTT <= c's.
# Needs root, iproute2, iperf3, wireguard-tools (wg), python3, docker (default mode), cargo (first
# run installs boringtun-cli into bench/subnet/.tools). Everything is removed on exit, failure or
# Ctrl-C. Environment: IPERF_TIME, PING_COUNT, BORINGTUN_THREADS, BORINGTUN_VERSION, NUNET_BIN,
# DMS_MODE, DMS_PAIR_BIN, DMS_PAIR_DATAGRAMS (on|off), DMS_PAIR_TRANSPORT, DMS_UP_TIMEOUT, SUBNET_BENCH_SUFFIX.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/subnet/netns.sh"
. "$here/subnet/iperf_pair.sh"
. "$here/subnet/boringtun.sh"
. "$here/subnet/devnet.sh"
. "$here/subnet/dms.sh"

for arg in "$@"; do
	case "$arg" in
	--pair) DMS_MODE=pair ;;
	-h | --help)
		sed -n '3,18p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*) tb_die "unknown argument '$arg' (usage: bench/subnet.sh [--pair])" ;;
	esac
done
DMS_MODE="${DMS_MODE:-devnet}"

tb_require ip iperf3 ping ss wg python3
boringtun_install # before the testbed exists: the first run compiles for a minute

testbed_trap
if [ "$DMS_MODE" = pair ]; then
	testbed_up "${SUBNET_BENCH_SUFFIX:-}"
	raw_label="(a) raw veth"
else
	tb_require docker
	devnet_testbed_up "${SUBNET_BENCH_SUFFIX:-}"
	raw_label="(a) raw LAN"
fi
echo "testbed: $TB_NS_A ($TB_ADDR_A) <-> $TB_NS_B ($TB_ADDR_B), mode $DMS_MODE" >&2

declare -A GBPS RTT
# run_path KEY ADDR: measure one path into GBPS[KEY] / RTT[KEY].
run_path() {
	measure_path "$2" "${3:-A}" "${4:-B}" || tb_die "measuring path $1 ($2) failed"
	GBPS[$1]=$MP_GBPS
	RTT[$1]=$MP_RTT_MS
}
calc() { python3 -c "print(format($1, '$2'))"; }

run_path a "$TB_ADDR_B"
if dms_up; then
	echo "DMS subnet path: $DMS_NOTE" >&2
	run_path b "$DMS_ADDR_B" "$DMS_CLIENT_SIDE" "$DMS_SERVER_SIDE"
fi
boringtun_up
run_path c "$BT_WG_ADDR_B"

row() { # row LABEL KEY
	if [ -n "${GBPS[$2]:-}" ]; then
		printf '%-26s %10s Gbit/s %9s ms\n' "$1" "${GBPS[$2]}" "${RTT[$2]}"
	else
		printf '%-26s %17s %12s\n' "$1" "skipped" "-"
	fi
}
echo
printf '%-26s %17s %12s\n' "path" "iperf3 TCP" "ping avg"
row "$raw_label" a
row "(b) DMS subnet ($DMS_MODE)" b
row "(c) boringtun x${BORINGTUN_THREADS:-4}" c
echo

add_c=$(calc "${RTT[c]} - ${RTT[a]}" .3f)
echo "boringtun throughput (c/a): ${GBPS[c]} Gbit/s (baseline: ${GBPS[a]} Gbit/s raw, ratio: $(calc "${GBPS[c]} / ${GBPS[a]}" .4f))"
echo "boringtun added RTT (c): $add_c ms (baseline: ${RTT[a]} ms raw RTT)"
if [ -n "${GBPS[b]:-}" ]; then
	add_b=$(calc "${RTT[b]} - ${RTT[a]}" .3f)
	ratio_bc=$(calc "${GBPS[b]} / ${GBPS[c]}" .2f)
	echo "subnet throughput (b/a): ${GBPS[b]} Gbit/s (baseline: ${GBPS[a]} Gbit/s raw, ratio: $(calc "${GBPS[b]} / ${GBPS[a]}" .4f))"
	echo "subnet throughput (b/c): ${GBPS[b]} Gbit/s (baseline: ${GBPS[c]} Gbit/s boringtun, ratio: $ratio_bc; target >= 1.5)"
	echo "subnet added RTT (b): $add_b ms (baseline: $add_c ms boringtun added RTT, ratio: $(calc "($add_b) / max($add_c, 1e-9)" .2f); target <= 1.0)"
	if python3 -c "import sys; sys.exit(0 if $ratio_bc >= 1.5 and $add_b <= $add_c else 1)"; then
		echo "subnet target: met"
	else
		echo "subnet target: NOT met"
	fi
else
	echo "subnet (b): skipped, no ratios b/a, b/c"
fi
