# shellcheck shell=bash disable=SC2034 # MP_* are results read by the sourcing script
# Path measurement library, sourced after netns.sh.
#
# What it is for: `measure_path` measures one path between two sides of the testbed (default A
# and B): ping RTT (average of 20 pings at 50 ms intervals, after a short warm-up that also lets
# tunnels handshake) and iperf3 TCP throughput from client to server side (one 5 s stream, server
# as a one-off process). Any address pair plugs in: the raw LAN, a WireGuard tunnel, the DMS
# subnet between two containers.
# What it must not do: leave processes behind (the server is tracked by the testbed) or change
# the namespaces' configuration.
#
# Tunables (environment): IPERF_TIME (seconds, default 5), PING_COUNT (default 20).

# measure_path ADDR_IN_SERVER [CLIENT_SIDE SERVER_SIDE]: sets MP_GBPS (receiver-side Gbit/s) and
# MP_RTT_MS (avg ms), or returns 1 with a message on stderr. Sides default to A and B.
measure_path() {
	local addr="$1" A="${2:-A}" B="${3:-B}" out json rtt port
	MP_GBPS=""
	MP_RTT_MS=""
	# Warm-up: also triggers tunnel handshakes so they are not part of the RTT average.
	if ! tb_wait_for 10 tb_exec "$A" ping -c 1 -W 1 "$addr"; then
		echo "measure_path: $addr is not reachable from side $A" >&2
		return 1
	fi
	tb_exec "$A" ping -c 3 -i 0.1 -q "$addr" >/dev/null 2>&1 || true

	if ! tb_run "$A" "$TB_DIR/ping.$addr.out" ping -c "${PING_COUNT:-20}" -i 0.05 -q "$addr"; then
		echo "measure_path: ping $addr failed: $(cat "$TB_DIR/ping.$addr.out")" >&2
		return 1
	fi
	out="$(cat "$TB_DIR/ping.$addr.out")"
	# "rtt min/avg/max/mdev = 0.031/0.045/0.090/0.012 ms"
	rtt="$(sed -n 's|^.*= *[0-9.]*/\([0-9.]*\)/.*$|\1|p' <<<"$out")"
	[ -n "$rtt" ] || {
		echo "measure_path: cannot parse ping output: $out" >&2
		return 1
	}

	port=$((5201 + RANDOM % 1000))
	json="$TB_DIR/iperf.$addr.json"
	tb_spawn "$B" "$TB_DIR/iperf-server.$addr.log" iperf3 -s -1 -B "$addr" -p "$port"
	local server=$TB_LAST_PID
	if ! tb_wait_for 5 tb_exec "$B" bash -c "ss -ltnH 'sport = :$port' | grep -q ."; then
		echo "measure_path: iperf3 server did not listen on $addr:$port" >&2
		return 1
	fi
	if ! tb_run "$A" "$json" iperf3 -c "$addr" -p "$port" -t "${IPERF_TIME:-5}" -J; then
		echo "measure_path: iperf3 client to $addr failed: $(head -c 400 "$json")" >&2
		return 1
	fi
	wait "$server" 2>/dev/null || true
	MP_GBPS="$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print("%.3f" % (d["end"]["sum_received"]["bits_per_second"] / 1e9))
' "$json")" || {
		echo "measure_path: cannot parse iperf3 result in $json" >&2
		return 1
	}
	MP_RTT_MS="$rtt"
}
