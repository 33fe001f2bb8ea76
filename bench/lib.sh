# Shared by the bench scripts (sourced from the repository root): sets `nunet` to the binary
# under test — NUNET_BIN when given, else a fresh `cargo build` of PROFILE (release|debug,
# default release); hello_wasm (below) writes a WASI hello module and its ensemble.
if [ -n "${NUNET_BIN:-}" ]; then
  nunet="$(realpath "$NUNET_BIN")"
elif [ "${PROFILE:-release}" = release ]; then
  cargo build -q --release -p nunet-cli; nunet="$PWD/target/release/nunet"
else
  cargo build -q -p nunet-cli; nunet="$PWD/target/debug/nunet"
fi

# hello_wasm DIR: writes DIR/hello.wasm (a WASI module printing "hello from wasm") and
# DIR/wasm.yaml, examples/wasm-hello.yaml running it.
hello_wasm() {
  cat >"$1/hello.wat" <<'WAT'
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wasm\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 16))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
WAT
  cargo run -q -p nunet-executor-wasm --example wat2wasm -- "$1/hello.wat" "$1/hello.wasm"
  sed -e "s|module: ./greet.wasm.*|module: $1/hello.wasm|" -e '/args:/d' -e '/environment:/d' \
    examples/wasm-hello.yaml >"$1/wasm.yaml"
}
