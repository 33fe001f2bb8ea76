//! WASM hello start→exit through the executor, cold (compile included) and cached, against
//! the same module run directly on wasmtime in the same process. Prints
//! `name: value unit (baseline: value, ratio: x)`. `BENCH_RUNS` sets the repetitions.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use nunet_executor::{ExecutionSpec, Executor, ModuleSource, Workload};
use nunet_executor_wasm::{WasmConfig, WasmExecutor};
use wasmtime_wasi::p1::WasiP1Ctx;

const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wasm\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn report(name: &str, value: Duration, baseline: Duration, target: &str) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: {:.3} ms (baseline: {:.3} ms, ratio: {:.2}x) [target: {target}]",
        ms(value),
        ms(baseline),
        ms(value) / ms(baseline)
    );
}

/// The module run straight on wasmtime: compile (when `pre` is None) + instantiate + `_start`.
fn direct(
    engine: &wasmtime::Engine,
    bytes: &[u8],
    pre: Option<&wasmtime::InstancePre<WasiP1Ctx>>,
) -> Duration {
    let t = Instant::now();
    let owned;
    let pre = match pre {
        Some(p) => p,
        None => {
            owned = prepare(engine, bytes);
            &owned
        }
    };
    let out = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(1024);
    let wasi = wasmtime_wasi::WasiCtxBuilder::new()
        .stdout(out.clone())
        .build_p1();
    let mut store = wasmtime::Store::new(engine, wasi);
    let instance = pre.instantiate(&mut store).unwrap();
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .unwrap();
    start.call(&mut store, ()).unwrap();
    let d = t.elapsed();
    assert_eq!(&out.contents()[..], b"hello from wasm\n");
    d
}

fn prepare(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::InstancePre<WasiP1Ctx> {
    let module = wasmtime::Module::new(engine, bytes).unwrap();
    let mut linker = wasmtime::Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| s).unwrap();
    linker.instantiate_pre(&module).unwrap()
}

/// The executor's calls run on a runtime; the direct baseline runs outside it (wasmtime-wasi's
/// sync API starts its own).
fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let bytes = wat::parse_str(HELLO).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = |id: String| {
        ExecutionSpec::new(
            id,
            Workload::Wasm {
                module: ModuleSource::Inline(bytes.clone()),
                sha256: None,
            },
        )
    };

    let engine = wasmtime::Engine::default();
    let mut cold = Vec::new();
    let mut cold_base = Vec::new();
    for i in 0..runs.min(10) {
        let ex = WasmExecutor::new(WasmConfig::new(
            "bench",
            dir.path().join(format!("cold-{i}")),
        ));
        let t = Instant::now();
        assert!(
            rt.block_on(ex.run(&spec(format!("cold-{i}"))))
                .unwrap()
                .success()
        );
        cold.push(t.elapsed());
        cold_base.push(direct(&engine, &bytes, None));
    }
    report(
        "wasm_hello_cold_start_to_exit",
        median(cold),
        median(cold_base),
        "compile included",
    );

    let ex = WasmExecutor::new(WasmConfig::new("bench", dir.path().join("cached")));
    rt.block_on(ex.prepare(&spec("warm".into()))).unwrap();
    let pre = prepare(&engine, &bytes);
    let mut cached = Vec::new();
    let mut cached_base = Vec::new();
    for i in 0..runs {
        let id = format!("cached-{i}");
        let t = Instant::now();
        assert!(rt.block_on(ex.run(&spec(id.clone()))).unwrap().success());
        cached.push(t.elapsed());
        rt.block_on(ex.remove(&id)).unwrap();
        cached_base.push(direct(&engine, &bytes, Some(&pre)));
    }
    report(
        "wasm_hello_cached_start_to_exit",
        median(cached),
        median(cached_base),
        "<= 5 ms",
    );
}
