#!/usr/bin/env bash
# A real S3-compatible store for the inputs/outputs tests: Garage (a production object store
# from the Rust package registry), single node, SQLite metadata, S3 API on 127.0.0.1:3900,
# region "garage". Writes the credentials of a key that may create buckets (tests make their
# own) to $DIR/credentials (aws_access_key_id / aws_secret_access_key, mode 0600) and the
# endpoint to $DIR/endpoint. Idempotent: a running server is left alone, a stopped one is
# started again on its data.
#
# The binary is built once per machine with `cargo install --locked` (~8 min on 2 cores) into
# ~/.cache/nunet/garage-$VERSION, outside any clone.
set -euo pipefail

VERSION=2.5.0
DIR="${NUNET_TEST_S3_DIR:-/var/lib/nunet-test/garage}"
ROOT="$HOME/.cache/nunet/garage-$VERSION"
G="$ROOT/bin/garage"
t0=$SECONDS

if [ ! -x "$G" ]; then
  echo "s3-test-server: building garage $VERSION (cached in $ROOT)"
  CARGO_TARGET_DIR="$HOME/.cache/nunet/garage-build" \
    cargo install --quiet --locked garage --version "$VERSION" --root "$ROOT"
  rm -rf "$HOME/.cache/nunet/garage-build"
fi

answers() { (exec 3<>/dev/tcp/127.0.0.1/3900) 2>/dev/null; }

mkdir -p "$DIR"
chmod 0700 "$DIR"
cfg="$DIR/garage.toml"
if [ ! -f "$cfg" ]; then
  cat >"$cfg" <<TOML
metadata_dir = "$DIR/meta"
data_dir = "$DIR/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:3901"
rpc_public_addr = "127.0.0.1:3901"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:3900"
root_domain = ".s3.garage.localhost"
TOML
fi

if ! answers; then
  echo "s3-test-server: starting garage"
  nohup "$G" -c "$cfg" server >>"$DIR/server.log" 2>&1 &
  for _ in $(seq 1 100); do
    answers && "$G" -c "$cfg" status >/dev/null 2>&1 && break
    sleep 0.2
  done
  if ! answers; then
    echo "s3-test-server: garage did not come up; its log:" >&2
    tail -n 40 "$DIR/server.log" >&2
    exit 1
  fi
fi

if [ ! -s "$DIR/credentials" ]; then
  if "$G" -c "$cfg" status 2>/dev/null | grep -q "NO ROLE ASSIGNED"; then
    id="$("$G" -c "$cfg" node id -q | cut -d@ -f1)"
    "$G" -c "$cfg" layout assign -z dc1 -c 1G "$id" >/dev/null
    "$G" -c "$cfg" layout apply --version 1 >/dev/null
  fi
  out="$("$G" -c "$cfg" key create nunet-test)"
  key="$(sed -n 's/^Key ID: *//p' <<<"$out")"
  secret="$(sed -n 's/^Secret key: *//p' <<<"$out")"
  [ -n "$key" ] && [ -n "$secret" ] || { echo "s3-test-server: no key in: $out" >&2; exit 1; }
  "$G" -c "$cfg" key allow --create-bucket "$key" >/dev/null
  umask 077
  printf 'aws_access_key_id = %s\naws_secret_access_key = %s\n' "$key" "$secret" >"$DIR/credentials.new"
  mv "$DIR/credentials.new" "$DIR/credentials"
fi
echo "http://127.0.0.1:3900" >"$DIR/endpoint"
echo "s3-test-server: ok (garage $VERSION on http://127.0.0.1:3900, region garage, $((SECONDS - t0)) s)"
