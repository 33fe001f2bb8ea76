//! `nunet gpu list [--json]` and `nunet gpu test`.

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use clap::Subcommand;
use nunet_resources::gpu::{GpuDetection, GpuInfo, GpuVendor};
use nunet_resources::hardware::detect_local_gpus;
use nunet_resources::units::fmt_bytes;

#[derive(Subcommand, Debug)]
pub enum GpuCmd {
    /// List the GPUs of this machine (NVIDIA through NVML, AMD/Intel from sysfs).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Say what a GPU job on this node would get (driver, runtime, devices) and why not,
    /// per GPU and executor; then run the vendor's check tool (nvidia-smi, rocm-smi,
    /// intel_gpu_top) in a container given exactly the first usable GPU. Exit 0 when a GPU
    /// can be handed to a Docker job (and the check passed).
    Test {
        /// Image to run instead of the vendor default.
        #[arg(long)]
        image: Option<String>,
        /// Only report; run no container.
        #[arg(long)]
        no_run: bool,
    },
}

pub fn run(cmd: GpuCmd) -> Result<i32> {
    let det = detect_local_gpus();
    match cmd {
        GpuCmd::List { json } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&det)?);
            } else {
                print_list(&det);
            }
            Ok(0)
        }
        GpuCmd::Test { image, no_run } => test(&det, image, no_run),
    }
}

fn print_list(det: &GpuDetection) {
    if det.gpus.is_empty() {
        println!("{}", det.none_found_message());
        return;
    }
    println!("INDEX  VENDOR   MODEL                          VRAM       PCI           ID");
    for g in &det.gpus {
        let vendor = g.vendor.as_str();
        println!(
            "{:<6} {:<8} {:<30} {:<10} {:<13} {}",
            g.index,
            vendor,
            g.model,
            if g.vram_bytes == 0 {
                "unknown".into()
            } else {
                fmt_bytes(g.vram_bytes)
            },
            g.pci_address,
            g.device_key()
        );
        for m in &g.mig {
            println!(
                "         MIG {}  {}  {}",
                m.index,
                fmt_bytes(m.vram_bytes),
                m.uuid
            );
        }
    }
    for n in &det.notes {
        println!("note: {n}");
    }
}

/// What a GPU job on this machine would get, per GPU and executor, and why not; then, unless
/// `no_run`, a vendor check container on the first GPU Docker can hand over, given exactly
/// that GPU.
fn test(det: &GpuDetection, image: Option<String>, no_run: bool) -> Result<i32> {
    if det.gpus.is_empty() {
        eprintln!("cannot test GPU deployment: {}", det.none_found_message());
        return Ok(1);
    }
    let (docker_status, docker) = docker_support()?;
    println!("docker: {docker_status}");
    let mut usable: Option<&GpuInfo> = None;
    for g in &det.gpus {
        println!(
            "GPU {} {} {} ({}), driver {}",
            g.index,
            g.vendor.as_str(),
            g.model,
            g.device_key(),
            if g.driver.is_empty() {
                "unknown"
            } else {
                &g.driver
            }
        );
        let gets = match g.vendor {
            GpuVendor::Nvidia => match &g.uuid {
                Some(u) if g.mig.is_empty() => {
                    Ok(format!("{u} through the NVIDIA container runtime"))
                }
                Some(_) => Ok(format!(
                    "one MIG instance of {} through the NVIDIA container runtime",
                    g.mig.len()
                )),
                None => Err("no UUID: NVML does not report this GPU".to_string()),
            },
            GpuVendor::Amd | GpuVendor::Intel if g.device_nodes.is_empty() => {
                Err("no device nodes found for it in sysfs".to_string())
            }
            GpuVendor::Amd | GpuVendor::Intel => {
                let missing: Vec<&str> = g
                    .device_nodes
                    .iter()
                    .filter(|n| !Path::new(&n.host).exists())
                    .map(|n| n.host.as_str())
                    .collect();
                if missing.is_empty() {
                    Ok(g.device_nodes
                        .iter()
                        .map(|n| n.container.as_str())
                        .collect::<Vec<_>>()
                        .join(", "))
                } else {
                    Err(format!("device node(s) missing: {}", missing.join(", ")))
                }
            }
            GpuVendor::Unknown => Err("unknown vendor: no runtime hands it over".into()),
        };
        let runtime = match (
            nunet_executor::GpuVendor::from_name(g.vendor.as_str()),
            &docker,
        ) {
            (_, None) => Err(docker_status.clone()),
            (Some(v), Some(s)) if s.supports(v) => Ok(()),
            (_, Some(s)) => Err(s.notes.join("; ")),
        };
        match (gets, runtime) {
            (Ok(what), Ok(())) => {
                println!("  docker job: gets {what}");
                usable = usable.or(Some(g));
            }
            (Err(why), _) | (Ok(_), Err(why)) => println!("  docker job: none ({why})"),
        }
        println!("  microVM job: none ({})", nunet_executor::vm::GPU_NOTE);
        println!("  wasm job: none ({})", nunet_executor_wasm::GPU_NOTE);
    }
    for n in &det.notes {
        println!("note: {n}");
    }
    let Some(g) = usable else {
        eprintln!("no GPU of this machine can be handed to a Docker job");
        return Ok(1);
    };
    if no_run {
        return Ok(0);
    }
    run_check(g, image)
}

/// dockerd's status line and GPU support (`None` when it is not reachable), probed as the
/// daemon's Docker executor probes it.
fn docker_support() -> Result<(String, Option<nunet_executor::GpuSupport>)> {
    use nunet_executor::Executor;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ex = rt.block_on(nunet_executor::DockerExecutor::connect(
        nunet_executor::DockerConfig::new("gpu-test"),
    ));
    let st = ex.status();
    if st.available {
        Ok((st.detail, Some(ex.gpu_support())))
    } else {
        Ok((format!("not reachable: {}", st.detail), None))
    }
}

/// Runs the vendor's check tool in a container given exactly GPU `g`.
fn run_check(g: &GpuInfo, image: Option<String>) -> Result<i32> {
    let mut cmd = Command::new("docker");
    cmd.args(["run", "--rm"]);
    let (default_image, check) = match g.vendor {
        GpuVendor::Nvidia => {
            let id = g
                .mig
                .first()
                .map(|m| m.uuid.clone())
                .or_else(|| g.uuid.clone())
                .unwrap_or_default();
            cmd.args(["--gpus", &format!("device={id}")]);
            ("nvidia/cuda:12.4.1-base-ubuntu22.04", "nvidia-smi")
        }
        GpuVendor::Amd => {
            for n in &g.device_nodes {
                cmd.arg(format!("--device={}:{}", n.host, n.container));
            }
            ("rocm/rocm-terminal:latest", "rocm-smi")
        }
        _ => {
            for n in &g.device_nodes {
                cmd.arg(format!("--device={}:{}", n.host, n.container));
            }
            ("intel/intel-gpu-tools:latest", "intel_gpu_top -L")
        }
    };
    let image = image.unwrap_or_else(|| default_image.to_string());
    cmd.arg(&image);
    cmd.args(check.split_whitespace());
    println!("running {check} in {image} with GPU {} …", g.index);
    let o = cmd.output()?;
    print!("{}", String::from_utf8_lossy(&o.stdout));
    if o.status.success() {
        println!(
            "GPU test passed: a container given GPU {} can use it",
            g.index
        );
        Ok(0)
    } else {
        eprintln!(
            "GPU test failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
        Ok(1)
    }
}
