#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Subnet data-path benchmark in a two-namespace testbed (veth 192.168.77.1 <-> .2), one run:
# iperf3 TCP throughput (A -> B, 5 s, one stream) and ping RTT (20 pings, 50 ms apart) over
#   (a) the raw veth,
#   (b) the DMS subnet (bench/subnet/dms.sh; skipped with a message when not available),
#   (c) boringtun, userspace WireGuard from crates.io, on the same veth (MTU 1420).
# Prints the ratios b/a and b/c and the added RTTs (path RTT - raw veth RTT).
# Target (issue 9): b >= 1.5 x c in the same run, b's added RTT <= c's.
# Needs root, iproute2, iperf3, wireguard-tools (wg), python3, cargo (first run installs
# boringtun-cli into bench/subnet/.tools). Everything is removed on exit, failure or Ctrl-C.
# Environment: IPERF_TIME, PING_COUNT, BORINGTUN_THREADS, BORINGTUN_VERSION, DMS_PAIR_BIN.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/subnet/netns.sh"
. "$here/subnet/iperf_pair.sh"
. "$here/subnet/boringtun.sh"
. "$here/subnet/dms.sh"

tb_require ip iperf3 ping ss wg python3
boringtun_install # before the testbed exists: the first run compiles for a minute

testbed_trap
testbed_up "${SUBNET_BENCH_SUFFIX:-}"

declare -A GBPS RTT
# run_path KEY ADDR: measure one path into GBPS[KEY] / RTT[KEY].
run_path() {
	measure_path "$2" || tb_die "measuring path $1 ($2) failed"
	GBPS[$1]=$MP_GBPS
	RTT[$1]=$MP_RTT_MS
}
calc() { python3 -c "print(format($1, '$2'))"; }

run_path a "$TB_ADDR_B"
if dms_up; then
	run_path b "$(dms_addr_b)"
fi
boringtun_up
run_path c "$BT_WG_ADDR_B"

row() { # row LABEL KEY
	if [ -n "${GBPS[$2]:-}" ]; then
		printf '%-22s %10s Gbit/s %9s ms\n' "$1" "${GBPS[$2]}" "${RTT[$2]}"
	else
		printf '%-22s %17s %12s\n' "$1" "skipped" "-"
	fi
}
echo
printf '%-22s %17s %12s\n' "path" "iperf3 TCP" "ping avg"
row "(a) raw veth" a
row "(b) DMS subnet" b
row "(c) boringtun x${BORINGTUN_THREADS:-4}" c
echo

add_c=$(calc "${RTT[c]} - ${RTT[a]}" .3f)
echo "boringtun throughput (c/a): ${GBPS[c]} Gbit/s (baseline: ${GBPS[a]} Gbit/s raw veth, ratio: $(calc "${GBPS[c]} / ${GBPS[a]}" .4f))"
echo "boringtun added RTT (c): $add_c ms (baseline: ${RTT[a]} ms raw veth RTT)"
if [ -n "${GBPS[b]:-}" ]; then
	add_b=$(calc "${RTT[b]} - ${RTT[a]}" .3f)
	ratio_bc=$(calc "${GBPS[b]} / ${GBPS[c]}" .2f)
	echo "subnet throughput (b/a): ${GBPS[b]} Gbit/s (baseline: ${GBPS[a]} Gbit/s raw veth, ratio: $(calc "${GBPS[b]} / ${GBPS[a]}" .4f))"
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
