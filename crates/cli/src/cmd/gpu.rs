//! `nunet gpu list [--json]` and `nunet gpu test`.

use std::process::Command;

use anyhow::Result;
use clap::Subcommand;
use nunet_resources::gpu::{GpuDetection, GpuVendor};
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
    /// Run a CUDA (NVIDIA) or ROCm (AMD) check container through Docker.
    Test {
        /// Image to run instead of the vendor default.
        #[arg(long)]
        image: Option<String>,
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
        GpuCmd::Test { image } => test(&det, image),
    }
}

fn print_list(det: &GpuDetection) {
    if det.gpus.is_empty() {
        println!("{}", det.none_found_message());
        return;
    }
    println!("INDEX  VENDOR   MODEL                          VRAM       PCI           ID");
    for g in &det.gpus {
        let vendor = serde_json::to_value(g.vendor)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
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

fn test(det: &GpuDetection, image: Option<String>) -> Result<i32> {
    let vendor = det
        .gpus
        .iter()
        .map(|g| g.vendor)
        .find(|v| matches!(v, GpuVendor::Nvidia | GpuVendor::Amd));
    let Some(vendor) = vendor else {
        let why = if det.gpus.is_empty() {
            det.none_found_message()
        } else {
            "only GPUs without a CUDA or ROCm stack were found (Intel or unknown vendor)".into()
        };
        eprintln!("cannot test GPU deployment: {why}");
        return Ok(1);
    };
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Err(e) => {
            eprintln!("cannot test GPU deployment: docker is not installed or not in PATH ({e})");
            return Ok(1);
        }
        Ok(o) if !o.status.success() => {
            eprintln!(
                "cannot test GPU deployment: the Docker daemon is not reachable: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return Ok(1);
        }
        Ok(_) => {}
    }
    let mut cmd = Command::new("docker");
    cmd.args(["run", "--rm"]);
    let (default_image, check) = match vendor {
        GpuVendor::Nvidia => {
            cmd.args(["--gpus", "all"]);
            ("nvidia/cuda:12.4.1-base-ubuntu22.04", "nvidia-smi")
        }
        _ => {
            cmd.args([
                "--device=/dev/kfd",
                "--device=/dev/dri",
                "--group-add",
                "video",
            ]);
            ("rocm/rocm-terminal:latest", "rocm-smi")
        }
    };
    let image = image.unwrap_or_else(|| default_image.to_string());
    cmd.args([image.as_str(), check]);
    println!("running {check} in {image} …");
    let o = cmd.output()?;
    print!("{}", String::from_utf8_lossy(&o.stdout));
    if o.status.success() {
        println!("GPU test passed: containers can use the GPU");
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
