# shellcheck shell=bash disable=SC2034 # DN_* are read by dms.sh
# The product testbed of the subnet benchmark, sourced after netns.sh: real daemons.
#
# What it is for: `devnet_testbed_up` starts `nunet devnet up --netns --nodes 3` (three daemons,
# each in its own network namespace, on a bridged LAN 172.31.x.0/24, subnet enabled) and adopts
# the namespaces of node-1 and node-2 as testbed sides A and B, with their LAN addresses; node-3
# (side N3) is the orchestrator that deploys onto them (a node does not bid on the bid requests
# it broadcasts itself, so a 2-node devnet has only one bidder). The `devnet_*` helpers run the
# CLI as the devnet's user inside a node's namespace. Sets DN_PEER_1 / DN_PEER_2 (peer IDs) and
# DN_DID_1 / DN_DID_2.
# What it must not do: build anything, or leave daemons, namespaces or containers behind; it stops
# the devnet from a testbed exit hook, and force-removes only containers labelled with its own
# nodes' ids.
#
# Environment: NUNET_BIN (default target/release/nunet under the repo root).

DN_DIR=""
DN_NODE_IDS=()

# devnet_cli ARGS...: the nunet CLI with the devnet's passphrase (outside any namespace).
devnet_cli() {
	env -u DMS_PASSPHRASE -u NUNET_CONFIG -u NUNET_HOME NUNET_INSECURE_FAST_KDF=1 \
		DMS_PASSPHRASE_FILE="$DN_DIR/passphrase" "$NUNET_BIN" "$@"
}

# devnet_node I ARGS...: the nunet CLI as node-I's user, inside node-I's namespace.
devnet_node() {
	local i="$1"
	shift
	tb_exec "N$i" env -u DMS_PASSPHRASE -u NUNET_CONFIG NUNET_INSECURE_FAST_KDF=1 \
		NUNET_HOME="$DN_DIR/node-$i" DMS_PASSPHRASE_FILE="$DN_DIR/passphrase" "$NUNET_BIN" "$@"
}

# devnet_down: stop the daemons and delete the namespaces (exit hook), then remove any container
# still labelled with one of this devnet's node ids (a deployment that was not shut down).
devnet_down() {
	[ -n "$DN_DIR" ] && [ -e "$DN_DIR/devnet.json" ] || return 0
	devnet_cli devnet down --dir "$DN_DIR" >/dev/null || echo "warning: nunet devnet down failed" >&2
	local id c
	for id in "${DN_NODE_IDS[@]}"; do
		for c in $(docker ps -aq --filter "label=nunet.node=$id" 2>/dev/null); do
			echo "warning: removing leftover container $c of node $id" >&2
			docker rm -f "$c" >/dev/null 2>&1 || true
		done
	done
}

# devnet_testbed_up [SUFFIX]: the devnet, node-1/2 as testbed sides A and B (sets TB_NS_*,
# TB_ADDR_*), node-3 as side N3.
devnet_testbed_up() {
	local root fields
	root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
	NUNET_BIN="${NUNET_BIN:-$root/target/release/nunet}"
	[ -x "$NUNET_BIN" ] || tb_die "$NUNET_BIN not built (cargo build --release -p nunet-cli, or set NUNET_BIN)"
	tb_prepare "${1:-}"
	DN_DIR="$TB_DIR/devnet"
	tb_on_exit devnet_down
	echo "starting nunet devnet up --netns --nodes 3 ($NUNET_BIN)" >&2
	devnet_cli devnet up --netns --nodes 3 --dir "$DN_DIR" >"$TB_DIR/devnet-up.log" 2>&1 ||
		tb_die "nunet devnet up failed: $(tail -n 20 "$TB_DIR/devnet-up.log")"
	# per node: netns, LAN address (the /ip4/ part of `p2p`), did, peer id; then the switch
	fields="$(python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
out = []
for x in m["nodes"][:3]:
    out += [x["netns"], x["p2p"].split("/")[2], x["did"], x["peer_id"]]
out.append(m["switch_netns"])
print(" ".join(out))
' "$DN_DIR/devnet.json")" || tb_die "cannot read $DN_DIR/devnet.json"
	local f
	read -r -a f <<<"$fields"
	[ "${#f[@]}" -eq 13 ] || tb_die "unexpected devnet.json: $fields"
	TB_OWN_NS+=("${f[0]}" "${f[4]}" "${f[8]}" "${f[12]}") # swept after `devnet down` if left
	DN_NODE_IDS=("${f[2]}" "${f[3]}" "${f[6]}" "${f[7]}" "${f[10]}" "${f[11]}")
	DN_DID_1=${f[2]} DN_PEER_1=${f[3]} DN_DID_2=${f[6]} DN_PEER_2=${f[7]}
	tb_adopt "${f[0]}" "${f[1]}" "${f[4]}" "${f[5]}"
	TB_SIDE_NS[N1]=${f[0]} TB_SIDE_NS[N2]=${f[4]} TB_SIDE_NS[N3]=${f[8]}
}
