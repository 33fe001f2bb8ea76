# shellcheck shell=bash
# boringtun (userspace WireGuard) baseline, sourced after netns.sh.
#
# What it is for: install `boringtun-cli` from crates.io into bench/subnet/.tools (release build,
# pinned version) and bring up a WireGuard tunnel 10.99.0.1/24 (A) <-> 10.99.0.2/24 (B), MTU 1420,
# over the testbed's veth. `wg` (wireguard-tools) configures each device through its UAPI socket in
# /var/run/wireguard; no kernel module is needed.
# What it must not do: use the kernel WireGuard module, or reuse interface names across runs (the
# UAPI socket directory is shared by all namespaces, so names carry the testbed suffix).
#
# Tunables (environment): BORINGTUN_VERSION (default 0.7.1), BORINGTUN_THREADS (default 4,
# boringtun's own default), BORINGTUN_BIN (use this binary instead of installing).

BT_TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/.tools"
BT_WG_ADDR_A=10.99.0.1
BT_WG_ADDR_B=10.99.0.2
BT_PORT=51820

# boringtun_install: make sure the boringtun-cli binary exists; sets BT_BIN.
boringtun_install() {
	BT_BIN="${BORINGTUN_BIN:-$BT_TOOLS/bin/boringtun-cli}"
	[ -x "$BT_BIN" ] && return 0
	[ -z "${BORINGTUN_BIN:-}" ] || tb_die "BORINGTUN_BIN=$BORINGTUN_BIN is not executable"
	tb_require cargo
	echo "installing boringtun-cli ${BORINGTUN_VERSION:-0.7.1} into $BT_TOOLS (release build, once)" >&2
	cargo install --locked --quiet boringtun-cli --version "${BORINGTUN_VERSION:-0.7.1}" \
		--root "$BT_TOOLS" --target-dir "$BT_TOOLS/build" || tb_die "cargo install boringtun-cli failed"
	rm -rf "$BT_TOOLS/build"
	[ -x "$BT_BIN" ] || tb_die "boringtun-cli was not installed at $BT_BIN"
}

# bt_side A|B: start boringtun in side A or B and configure it with `wg`.
bt_side() {
	local side="$1" self_addr peer_addr peer_underlay ifname sock key peer_pub
	if [ "$side" = A ]; then
		self_addr=$BT_WG_ADDR_A peer_addr=$BT_WG_ADDR_B peer_underlay=$TB_ADDR_B
	else
		self_addr=$BT_WG_ADDR_B peer_addr=$BT_WG_ADDR_A peer_underlay=$TB_ADDR_A
	fi
	ifname="wg$side-$TB_SUFFIX"
	sock="/var/run/wireguard/$ifname.sock"
	key="$TB_DIR/wg$side.key"
	peer_pub="$(cat "$TB_DIR/wg$([ "$side" = A ] && echo B || echo A).pub")"
	[ -e "$sock" ] && tb_die "UAPI socket $sock already exists (another run with the same suffix?)"
	tb_track_file "$sock"
	tb_spawn "$side" "$TB_DIR/boringtun-$side.out" "$BT_BIN" --foreground --disable-drop-privileges \
		--threads "${BORINGTUN_THREADS:-4}" --log "$TB_DIR/boringtun-$side.log" "$ifname"
	tb_wait_for 10 test -S "$sock" ||
		tb_die "boringtun did not create $sock: $(cat "$TB_DIR/boringtun-$side.out" 2>/dev/null)"
	tb_exec "$side" wg set "$ifname" private-key "$key" listen-port "$BT_PORT" \
		peer "$peer_pub" allowed-ips "$peer_addr/32" endpoint "$peer_underlay:$BT_PORT"
	tb_exec "$side" ip addr add "$self_addr/24" dev "$ifname"
	tb_exec "$side" ip link set "$ifname" mtu 1420 up
}

# boringtun_up: keys, both devices, both configured. Sets BT_WG_ADDR_A/B (already constant).
boringtun_up() {
	tb_require wg
	boringtun_install
	local s
	for s in A B; do
		(umask 077 && wg genkey >"$TB_DIR/wg$s.key")
		wg pubkey <"$TB_DIR/wg$s.key" >"$TB_DIR/wg$s.pub"
	done
	bt_side A
	bt_side B
}
