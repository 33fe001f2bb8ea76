# Shared by the bench scripts (sourced from the repository root): sets `nunet` to the binary
# under test — NUNET_BIN when given, else a fresh `cargo build` of PROFILE (release|debug,
# default release).
if [ -n "${NUNET_BIN:-}" ]; then
  nunet="$(realpath "$NUNET_BIN")"
elif [ "${PROFILE:-release}" = release ]; then
  cargo build -q --release -p nunet-cli; nunet="$PWD/target/release/nunet"
else
  cargo build -q -p nunet-cli; nunet="$PWD/target/debug/nunet"
fi
