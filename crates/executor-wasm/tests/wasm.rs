//! WASM executor with modules built from WAT here: output, args/env, limits, stop, sources.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use nunet_executor::{
    CpuBudget, ExecutionSpec, ExecutionState, Executor, ExecutorError, ExitReason, LogOptions,
    ModuleSource, Mount, Workload, logs,
};
use nunet_executor_wasm::{WasmConfig, WasmExecutor};

const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wasm\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// Prints its argv and environment (NUL-separated) on stdout, writes a file into the preopened
/// dir `/data` (fd 3) if there is one, and exits with 7.
const ARGS_ENV: &str = r#"(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $asz (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $aget (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $esz (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $eget (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 512) "out.txt")
  (data (i32.const 600) "written")
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (drop (call $asz (i32.const 16) (i32.const 20)))
    (drop (call $aget (i32.const 1024) (i32.const 4096)))
    (call $write (i32.const 1) (i32.const 4096) (i32.load (i32.const 20)))
    (drop (call $esz (i32.const 24) (i32.const 28)))
    (drop (call $eget (i32.const 2048) (i32.const 8192)))
    (call $write (i32.const 1) (i32.const 8192) (i32.load (i32.const 28)))
    ;; path_open(dirfd 3, lookup 0, "out.txt", O_CREAT, rights: fd_write, 0, 0, -> 32)
    (if (i32.eqz (call $open (i32.const 3) (i32.const 0) (i32.const 512) (i32.const 7)
                   (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 32)))
      (then (call $write (i32.load (i32.const 32)) (i32.const 600) (i32.const 7))))
    (call $exit (i32.const 7))))"#;

const MEMORY_BOMB: &str = r#"(module
  (memory 1)
  (func (export "_start")
    (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable))"#;

const SPIN: &str = r#"(module (func (export "_start") (loop $l (br $l))))"#;

fn executor(dir: &std::path::Path) -> WasmExecutor {
    let mut cfg = WasmConfig::new("wasm-test-node", dir.join("state"));
    cfg.public_urls_only = false; // modules are served on loopback here
    let ex = WasmExecutor::new(cfg);
    assert!(ex.status().available, "{:?}", ex.status());
    ex
}

fn spec(id: &str, wat_text: &str) -> ExecutionSpec {
    ExecutionSpec::new(
        id,
        Workload::Wasm {
            module: ModuleSource::Inline(wat::parse_str(wat_text).unwrap()),
            sha256: None,
        },
    )
}

async fn stdout_of(ex: &WasmExecutor, id: &str) -> String {
    let bytes = logs::collect(ex.logs(id, LogOptions::default()).await.unwrap())
        .await
        .unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn hello_writes_stdout_as_logs() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path());
    let s = spec("hello", HELLO);
    let exit = ex.run(&s).await.unwrap();
    assert!(exit.success(), "{exit:?}");
    assert_eq!(stdout_of(&ex, "hello").await, "hello from wasm\n");
    assert_eq!(
        ex.list().await.unwrap()[0].labels["nunet.execution"],
        "hello"
    );
    ex.remove("hello").await.unwrap();
    assert!(matches!(
        ex.inspect("hello").await,
        Err(ExecutorError::NotFound(_))
    ));
}

#[tokio::test]
async fn args_env_preopens_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let ex = executor(dir.path());
    let mut s = spec("args", ARGS_ENV);
    s.command = vec!["prog".into()];
    s.args = vec!["first".into(), "second arg".into()];
    s.env.insert("GREETING".into(), "hi".into());
    s.mounts = vec![Mount {
        source: data.clone(),
        target: "/data".into(),
        read_only: false,
    }];
    let exit = ex.run(&s).await.unwrap();
    assert_eq!(exit.code, Some(7), "{exit:?}");
    assert_eq!(exit.reason, ExitReason::Exited);
    let out = stdout_of(&ex, "args").await;
    assert!(out.starts_with("prog\0first\0second arg\0"), "{out:?}");
    assert!(
        out.ends_with("GREETING=hi\0"),
        "only the given env: {out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("out.txt")).unwrap(),
        "written"
    );
}

#[tokio::test]
async fn memory_bomb_is_stopped_by_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path());
    let mut s = spec("bomb", MEMORY_BOMB);
    s.resources.memory_bytes = 8 << 20;
    let exit = ex.run(&s).await.unwrap();
    assert_eq!(exit.reason, ExitReason::OutOfMemory, "{exit:?}");
}

#[tokio::test]
async fn infinite_loop_is_stopped_by_fuel_and_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path());
    let mut s = spec("spin-fuel", SPIN);
    s.resources.cpu_time = Some(CpuBudget::Fuel(20_000_000));
    let exit = tokio::time::timeout(Duration::from_secs(30), ex.run(&s))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.reason, ExitReason::CpuLimit, "{exit:?}");

    let mut s = spec("spin-time", SPIN);
    s.resources.cpu_time = Some(CpuBudget::Time(Duration::from_millis(300)));
    let t = Instant::now();
    let exit = tokio::time::timeout(Duration::from_secs(30), ex.run(&s))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.reason, ExitReason::CpuLimit, "{exit:?}");
    assert!(t.elapsed() >= Duration::from_millis(300) && t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn stop_interrupts_a_running_instance() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path());
    let s = spec("spin", SPIN);
    ex.start(&s).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        ex.inspect("spin").await.unwrap().state,
        ExecutionState::Running
    );
    let t = Instant::now();
    ex.stop("spin", Duration::from_secs(1)).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(ex.wait("spin").await.unwrap().reason, ExitReason::Stopped);
    assert!(matches!(
        ex.start(&s).await,
        Err(ExecutorError::AlreadyExists(_))
    ));
}

#[tokio::test]
async fn modules_come_from_path_and_url_checked_and_cached_by_hash() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path());
    let bytes = wat::parse_str(HELLO).unwrap();
    let path = dir.path().join("hello.wasm");
    std::fs::write(&path, &bytes).unwrap();
    let sha = {
        use std::fmt::Write as _;
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
        digest.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    };

    // A one-shot HTTP server on loopback.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hello.wasm", listener.local_addr().unwrap());
    let body = bytes.clone();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut req = [0u8; 1024];
        let _ = conn.read(&mut req).unwrap();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/wasm\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).unwrap();
        conn.write_all(&body).unwrap();
    });

    for (id, module) in [
        ("from-path", ModuleSource::Path(path.clone())),
        ("from-url", ModuleSource::Url(url)),
    ] {
        let s = ExecutionSpec::new(
            id,
            Workload::Wasm {
                module,
                sha256: Some(sha.clone()),
            },
        );
        assert!(ex.run(&s).await.unwrap().success());
        assert_eq!(stdout_of(&ex, id).await, "hello from wasm\n");
    }
    server.join().unwrap();
    assert_eq!(ex.cached_modules(), 1, "same bytes, one compiled module");

    let wrong = ExecutionSpec::new(
        "wrong-hash",
        Workload::Wasm {
            module: ModuleSource::Path(path),
            sha256: Some("00".repeat(32)),
        },
    );
    let err = ex.start(&wrong).await.unwrap_err();
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    let missing = ExecutionSpec::new(
        "missing",
        Workload::Wasm {
            module: ModuleSource::Path(dir.path().join("nope.wasm")),
            sha256: None,
        },
    );
    assert!(matches!(
        ex.start(&missing).await,
        Err(ExecutorError::File { .. })
    ));
}

#[tokio::test]
async fn a_wasi_p2_component_runs() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path());
    let component = r#"(component
      (core module $m (func (export "run") (result i32) i32.const 1))
      (core instance $i (instantiate $m))
      (func $run (result (result)) (canon lift (core func $i "run")))
      (instance $runner (export "run" (func $run)))
      (export "wasi:cli/run@0.2.0" (instance $runner)))"#;
    let exit = ex.run(&spec("component", component)).await.unwrap();
    assert_eq!(
        exit.code,
        Some(1),
        "run returned err => exit code 1: {exit:?}"
    );
}

#[tokio::test]
async fn an_unusable_engine_says_so() {
    let ex = WasmExecutor::new(WasmConfig::new("n", "/proc/nunet-cannot-create"));
    assert!(!ex.status().available);
    let err = ex.start(&spec("x", SPIN)).await.unwrap_err();
    assert!(matches!(err, ExecutorError::Unavailable { .. }), "{err}");
    assert!(
        err.to_string().contains("/proc/nunet-cannot-create"),
        "{err}"
    );
}

#[tokio::test]
async fn compiled_modules_survive_a_restart_on_disk() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let bytes = wat::parse_str(HELLO).unwrap();
    let name = {
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let artifact = dir
        .path()
        .join("state/modules")
        .join(format!("{name}.cwasm"));
    {
        let ex = executor(dir.path());
        assert!(ex.run(&spec("first", HELLO)).await.unwrap().success());
    }
    let inode = std::fs::metadata(&artifact).unwrap().ino();
    {
        let ex = executor(dir.path()); // a restarted daemon: empty memory cache
        assert!(ex.run(&spec("second", HELLO)).await.unwrap().success());
        assert_eq!(stdout_of(&ex, "second").await, "hello from wasm\n");
    }
    assert_eq!(
        std::fs::metadata(&artifact).unwrap().ino(),
        inode,
        "loaded, not recompiled"
    );
    // A damaged artifact fails its checksum and is compiled again, not loaded.
    std::fs::write(&artifact, b"garbage").unwrap();
    let ex = executor(dir.path());
    assert!(ex.run(&spec("third", HELLO)).await.unwrap().success());
    assert_ne!(std::fs::read(&artifact).unwrap(), b"garbage");
}
