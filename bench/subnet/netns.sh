# shellcheck shell=bash
# Namespace testbed library, sourced by bench/subnet.sh.
#
# What it is for: two "hosts" A and B, each a network namespace, and the teardown of everything a
# run creates. `testbed_up` makes them itself: one veth pair, 192.168.77.1/24 in A and
# 192.168.77.2/24 in B, `lo` up in both (the `--pair` mode). devnet.sh instead adopts the node
# namespaces of `nunet devnet up --netns` (`tb_adopt`). More sides (e.g. a container's network
# namespace, `tb_attach_pid`) can be added under any name and used with `tb_exec`/`tb_spawn`.
# Every name carries a per-run suffix so that parallel runs never clash. Processes started with
# `tb_spawn`, hooks registered with `tb_on_exit` (run last-in first-out), namespaces and files
# registered with `tb_track_file` are removed by `testbed_down`, which `testbed_trap` runs on
# EXIT/INT/TERM.
# What it must not do: touch anything outside the namespaces and files it created itself (no
# global `pkill`, no flushing of host routes or firewall rules); kill processes in a namespace it
# only attached (a container's), rather than created.
#
# Globals (read-only for callers):
#   TB_SUFFIX TB_NS_A TB_NS_B TB_ADDR_A TB_ADDR_B TB_DIR (private temp dir);
#   TB_VETH_A TB_VETH_B (testbed_up only)

TB_PIDS=()
TB_FILES=()
TB_HOOKS=()
TB_OWN_NS=()
TB_ATTACHED_NS=()
declare -A TB_SIDE_NS=()
TB_NS_A=""
TB_NS_B=""
TB_DIR=""

# tb_die MESSAGE: print to stderr and exit 1 (the trap then tears the testbed down).
tb_die() {
	echo "error: $*" >&2
	exit 1
}

# tb_require TOOL...: fail with a clear message when a tool is missing.
tb_require() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 || tb_die "required tool '$t' not found (install it, e.g. apt-get install iproute2 iperf3 wireguard-tools)"
	done
}

# testbed_up [SUFFIX]: create the namespaces, the veth pair and the private temp dir.
testbed_up() {
	tb_prepare "${1:-}"
	TB_NS_A="nbA-$TB_SUFFIX"
	TB_NS_B="nbB-$TB_SUFFIX"
	TB_VETH_A="vA-$TB_SUFFIX"
	TB_VETH_B="vB-$TB_SUFFIX"
	TB_ADDR_A=192.168.77.1
	TB_ADDR_B=192.168.77.2
	TB_OWN_NS+=("$TB_NS_A" "$TB_NS_B")
	TB_SIDE_NS[A]=$TB_NS_A
	TB_SIDE_NS[B]=$TB_NS_B
	ip netns add "$TB_NS_A" || tb_die "cannot create namespace $TB_NS_A"
	ip netns add "$TB_NS_B" || tb_die "cannot create namespace $TB_NS_B"
	ip link add "$TB_VETH_A" netns "$TB_NS_A" type veth peer name "$TB_VETH_B" netns "$TB_NS_B" ||
		tb_die "cannot create veth pair $TB_VETH_A/$TB_VETH_B"
	tb_exec A ip link set lo up
	tb_exec B ip link set lo up
	tb_exec A ip addr add "$TB_ADDR_A/24" dev "$TB_VETH_A"
	tb_exec B ip addr add "$TB_ADDR_B/24" dev "$TB_VETH_B"
	tb_exec A ip link set "$TB_VETH_A" up
	tb_exec B ip link set "$TB_VETH_B" up
}

# tb_prepare [SUFFIX]: root check, the run's suffix and private temp dir (for any testbed kind).
tb_prepare() {
	[ "$(id -u)" -eq 0 ] || tb_die "the namespace testbed needs root (ip netns, veth)"
	tb_require ip
	TB_SUFFIX="${1:-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')}"
	TB_DIR="$(mktemp -d "${TMPDIR:-/tmp}/nbtestbed.$TB_SUFFIX.XXXXXX")"
}

# tb_adopt NS_A ADDR_A NS_B ADDR_B: use two existing namespaces (created by someone else, who
# also deletes them, e.g. from a `tb_on_exit` hook) as sides A and B.
tb_adopt() {
	TB_NS_A=$1 TB_ADDR_A=$2 TB_NS_B=$3 TB_ADDR_B=$4
	TB_SIDE_NS[A]=$TB_NS_A
	TB_SIDE_NS[B]=$TB_NS_B
}

# tb_attach_pid SIDE PID: name the network namespace of process PID (e.g. a container's init)
# "nb<SIDE>-<suffix>" and make it side SIDE. Teardown deletes only the name (the namespace
# lives as long as the process), and kills only the tracked processes started in it.
tb_attach_pid() {
	local ns="nb$1-$TB_SUFFIX"
	ip netns attach "$ns" "$2" || tb_die "cannot attach the network namespace of pid $2 as $ns"
	TB_ATTACHED_NS+=("$ns")
	TB_SIDE_NS[$1]=$ns
}

# tb_on_exit CMD...: run CMD (one string, eval'ed) at teardown, after the tracked processes are
# stopped and before the namespaces are deleted; hooks run last-in first-out.
tb_on_exit() {
	TB_HOOKS+=("$*")
}

# testbed_down: kill what was spawned, run the exit hooks, kill anything else left in the
# namespaces this testbed created and delete them (which deletes the veth pair and any TUN
# inside), drop the attached names, remove tracked files. Idempotent.
testbed_down() {
	local pid ns f i
	for pid in "${TB_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${TB_PIDS[@]}"; do
		for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	for ns in "${TB_ATTACHED_NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
	for ((i = ${#TB_HOOKS[@]} - 1; i >= 0; i--)); do
		eval "${TB_HOOKS[$i]}" || echo "warning: cleanup step failed: ${TB_HOOKS[$i]}" >&2
	done
	for ns in "${TB_OWN_NS[@]}"; do
		if [ -z "$ns" ] || [ ! -e "/run/netns/$ns" ]; then continue; fi
		for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
	done
	sleep 0.2
	for ns in "${TB_OWN_NS[@]}"; do
		if [ -z "$ns" ] || [ ! -e "/run/netns/$ns" ]; then continue; fi
		for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
		ip netns del "$ns" 2>/dev/null || echo "warning: could not delete namespace $ns" >&2
	done
	for f in "${TB_FILES[@]}"; do rm -f "$f"; done
	[ -n "$TB_DIR" ] && rm -rf "$TB_DIR"
	TB_PIDS=()
	TB_FILES=()
	TB_HOOKS=()
	TB_OWN_NS=()
	TB_ATTACHED_NS=()
	TB_NS_A=""
	TB_NS_B=""
	TB_DIR=""
}

# testbed_trap: tear down on normal exit, failure, Ctrl-C and TERM.
testbed_trap() {
	trap 'testbed_down' EXIT
	trap 'echo "interrupted" >&2; exit 130' INT
	trap 'exit 143' TERM
}

# tb_ns SIDE: print the namespace name of a side (A, B, or one added with tb_attach_pid).
tb_ns() {
	[ -n "${TB_SIDE_NS[$1]:-}" ] || tb_die "unknown testbed side '$1'"
	echo "${TB_SIDE_NS[$1]}"
}

# tb_exec SIDE CMD...: run CMD inside the namespace of a side.
tb_exec() {
	local ns
	ns="$(tb_ns "$1")"
	shift
	ip netns exec "$ns" "$@"
}

# tb_spawn SIDE LOGFILE CMD...: start CMD in the background inside the namespace; its pid is
# tracked for teardown and stored in TB_LAST_PID.
tb_spawn() {
	local ns log
	ns="$(tb_ns "$1")"
	log="$2"
	shift 2
	ip netns exec "$ns" "$@" >"$log" 2>&1 &
	TB_LAST_PID=$!
	TB_PIDS+=("$TB_LAST_PID")
}

# tb_run SIDE OUTFILE CMD...: run CMD inside the namespace and wait for it, with its output in
# OUTFILE. Unlike a plain foreground command, the wait is cut short by INT/TERM, so the teardown
# runs at once (and kills CMD, which is tracked).
tb_run() {
	tb_spawn "$@"
	wait "$TB_LAST_PID"
}

# tb_track_file PATH: remove PATH at teardown (e.g. a UAPI socket outside TB_DIR).
tb_track_file() {
	TB_FILES+=("$1")
}

# tb_wait_for SECONDS CMD...: retry CMD every 0.1 s until it succeeds; fail after SECONDS.
tb_wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.1
	done
}
