//! Onboarding: turning `--cpu/--ram/--disk/--gpus` into onboarded amounts within what the
//! machine has minus a host reserve, with refusals that name the exact limit; and the
//! [`ResourceManager`] the node's behaviors call.

use std::path::PathBuf;
use std::sync::Arc;

use nunet_store::{BenchmarkRecord, OnboardingRecord, Resources};
use serde::Serialize;
use serde_json::{Value, json};

use crate::accounting::{Accounting, AccountingError, AllocationStopper, OffboardReport};
use crate::benchmark::{self, BenchBudget, BenchError};
use crate::gpu::{GpuInfo, GpuUnit, parse_gpu_spec, units_of};
use crate::hardware::{HardwareError, HardwareSource, MachineSpec};
use crate::units::{GIB, cores_to_milli, fmt_bytes, fmt_cores, gib_to_bytes};

/// What stays with the host whatever is onboarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HostReserve {
    /// CPU, millicores.
    pub cpu_millicores: u64,
    /// Memory, bytes.
    pub ram_bytes: u64,
    /// Free disk on the data dir's filesystem, bytes.
    pub disk_bytes: u64,
}

impl HostReserve {
    /// A reserve of `cpu` cores, `ram` GiB and `disk` GiB (as the `onboarding.reserve_*`
    /// config keys give them); `None` when one is negative or not a finite number.
    pub fn from_units(cpu: f64, ram: f64, disk: f64) -> Option<Self> {
        Some(HostReserve {
            cpu_millicores: cores_to_milli(cpu)?,
            ram_bytes: gib_to_bytes(ram)?,
            disk_bytes: gib_to_bytes(disk)?,
        })
    }
}

impl Default for HostReserve {
    fn default() -> Self {
        HostReserve {
            cpu_millicores: 1000,
            ram_bytes: 2 * GIB,
            disk_bytes: 5 * GIB,
        }
    }
}

/// `/dms/node/onboarding/onboard` parameters (cores; GiB; `"index:GiB,…"`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OnboardRequest {
    /// CPU cores (fractional allowed).
    pub cpu: Option<f64>,
    /// Memory, GiB.
    pub ram: Option<f64>,
    /// Disk, GiB.
    pub disk: Option<f64>,
    /// `--gpus "0:4,1:8"`.
    pub gpus: Option<String>,
    /// `--no-gpu`.
    pub no_gpu: bool,
}

/// Why onboarding did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OnboardError {
    /// The parameters are malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The request exceeds what the machine can give; each entry names the limit.
    #[error("onboarding refused: {}", .0.join("; "))]
    Refused(Vec<String>),
    /// Hardware detection failed.
    #[error(transparent)]
    Hardware(#[from] HardwareError),
    /// The accounting or database refused.
    #[error(transparent)]
    Accounting(#[from] AccountingError),
    /// The machine benchmark failed.
    #[error(transparent)]
    Bench(#[from] BenchError),
}

fn number(v: &Value, names: &[&str]) -> Result<Option<f64>, OnboardError> {
    for n in names {
        match v.get(*n) {
            None | Some(Value::Null) => {}
            Some(Value::Number(x)) => return Ok(x.as_f64()),
            Some(Value::String(s)) => {
                return s.trim().parse().map(Some).map_err(|_| {
                    OnboardError::BadRequest(format!("--{} {s:?} is not a number", names[0]))
                });
            }
            Some(other) => {
                return Err(OnboardError::BadRequest(format!(
                    "--{} {other} is not a number",
                    names[0]
                )));
            }
        }
    }
    Ok(None)
}

/// `--ram` / `--disk` in GiB: a number, or a size with its unit as NuNet's CLI takes it
/// (`"512MiB"`, `"4GiB"`, `"1TB"`; a bare number is GiB).
fn size_gib(v: &Value, names: &[&str]) -> Result<Option<f64>, OnboardError> {
    for n in names {
        if let Some(Value::String(s)) = v.get(*n)
            && s.trim().parse::<f64>().is_err()
        {
            let bytes = nunet_ensemble::units::parse_size(s)
                .map_err(|e| OnboardError::BadRequest(format!("--{}: {e}", names[0])))?;
            return Ok(Some(bytes as f64 / (1u64 << 30) as f64));
        }
        if v.get(*n).is_some_and(|x| !x.is_null()) {
            break;
        }
    }
    number(v, names)
}

impl OnboardRequest {
    /// Reads the payload `nunet actor cmd` builds (`--cpu 2 --ram 4` → `{"cpu":2,"ram":4}`;
    /// the short flags `-C -R -D -G` too).
    pub fn from_json(v: &Value) -> Result<OnboardRequest, OnboardError> {
        let gpus = match v.get("gpus").or_else(|| v.get("G")) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        };
        let no_gpu = match v.get("no_gpu") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(OnboardError::BadRequest(format!(
                    "--no-gpu takes no value (got {other})"
                )));
            }
        };
        Ok(OnboardRequest {
            cpu: number(v, &["cpu", "C"])?,
            ram: size_gib(v, &["ram", "R"])?,
            disk: size_gib(v, &["disk", "D"])?,
            gpus,
            no_gpu,
        })
    }
}

/// What an accepted request will onboard.
#[derive(Clone, Debug, PartialEq)]
pub struct OnboardPlan {
    /// The amounts.
    pub resources: Resources,
    /// The GPUs chosen, as detected.
    pub gpus: Vec<GpuInfo>,
    /// The machine it was checked against.
    pub spec: MachineSpec,
}

/// Checks `req` against `spec` minus `reserve`; every violated limit is listed.
pub fn plan(
    req: &OnboardRequest,
    spec: &MachineSpec,
    reserve: &HostReserve,
) -> Result<OnboardPlan, OnboardError> {
    let (Some(cpu), Some(ram), Some(disk)) = (req.cpu, req.ram, req.disk) else {
        return Err(OnboardError::BadRequest(
            "give --cpu <cores> --ram <GiB> --disk <GiB> (and --gpus \"index:GiB,…\" or --no-gpu)"
                .into(),
        ));
    };
    if req.no_gpu && req.gpus.is_some() {
        return Err(OnboardError::BadRequest(
            "--gpus and --no-gpu cannot be used together".into(),
        ));
    }
    let bad = |what: &str| OnboardError::BadRequest(format!("--{what} must be a positive number"));
    let cpu_m = cores_to_milli(cpu)
        .filter(|c| *c > 0)
        .ok_or_else(|| bad("cpu"))?;
    let ram_b = gib_to_bytes(ram)
        .filter(|c| *c > 0)
        .ok_or_else(|| bad("ram"))?;
    let disk_b = gib_to_bytes(disk)
        .filter(|c| *c > 0)
        .ok_or_else(|| bad("disk"))?;
    let mut refusals = Vec::new();

    let machine_cpu = u64::from(spec.cpu.logical_cores) * 1000;
    let max_cpu = machine_cpu.saturating_sub(reserve.cpu_millicores);
    if cpu_m > max_cpu {
        refusals.push(format!(
            "cpu {} requested, machine has {}, at most {} can be onboarded ({} reserved for the host)",
            fmt_cores(cpu_m),
            fmt_cores(machine_cpu),
            fmt_cores(max_cpu),
            fmt_cores(reserve.cpu_millicores)
        ));
    }
    let max_ram = spec.ram_bytes.saturating_sub(reserve.ram_bytes);
    if ram_b > max_ram {
        refusals.push(format!(
            "ram {} requested, machine has {}, at most {} can be onboarded ({} reserved for the host)",
            fmt_bytes(ram_b),
            fmt_bytes(spec.ram_bytes),
            fmt_bytes(max_ram),
            fmt_bytes(reserve.ram_bytes)
        ));
    }
    let max_disk = spec.disk.free_bytes.saturating_sub(reserve.disk_bytes);
    if disk_b > max_disk {
        refusals.push(format!(
            "disk {} requested, the filesystem of {} has {} free, at most {} can be onboarded ({} reserved for the host)",
            fmt_bytes(disk_b),
            spec.disk.path.display(),
            fmt_bytes(spec.disk.free_bytes),
            fmt_bytes(max_disk),
            fmt_bytes(reserve.disk_bytes)
        ));
    }

    let mut gpus = Vec::new();
    let mut gpu_res = std::collections::BTreeMap::new();
    if let Some(s) = &req.gpus {
        let wanted = parse_gpu_spec(s).map_err(|e| OnboardError::BadRequest(e.to_string()))?;
        for w in wanted {
            let Some(g) = spec.gpu.gpus.iter().find(|g| g.index == w.index) else {
                refusals.push(if spec.gpu.gpus.is_empty() {
                    format!(
                        "gpu {} requested, {}",
                        w.index,
                        spec.gpu.none_found_message()
                    )
                } else {
                    let have: Vec<String> =
                        spec.gpu.gpus.iter().map(|g| g.index.to_string()).collect();
                    format!(
                        "gpu {} requested, this machine has GPU {} (see `nunet gpu list`)",
                        w.index,
                        have.join(", ")
                    )
                });
                continue;
            };
            let want_b = gib_to_bytes(w.vram_gib).unwrap_or(u64::MAX);
            if g.vram_bytes == 0 {
                refusals.push(format!(
                    "gpu {} ({}) has no VRAM figure (driver tools missing, or memory shared with the host); it cannot be onboarded",
                    g.index, g.model
                ));
            } else if want_b > g.vram_bytes {
                refusals.push(format!(
                    "gpu {} ({}) VRAM {} requested, the device has {}",
                    g.index,
                    g.model,
                    fmt_bytes(want_b),
                    fmt_bytes(g.vram_bytes)
                ));
            } else if g.mig.is_empty() {
                gpu_res.insert(g.device_key(), want_b);
                gpus.push(g.clone());
            } else {
                match mig_share(g, want_b) {
                    Ok(chosen) => {
                        for m in &chosen {
                            gpu_res.insert(m.uuid.clone(), m.vram_bytes);
                        }
                        gpus.push(GpuInfo {
                            mig: chosen,
                            ..g.clone()
                        });
                    }
                    Err(why) => refusals.push(why),
                }
            }
        }
    }
    if !refusals.is_empty() {
        return Err(OnboardError::Refused(refusals));
    }
    Ok(OnboardPlan {
        resources: Resources {
            cpu_millicores: cpu_m,
            ram_bytes: ram_b,
            disk_bytes: disk_b,
            gpus: gpu_res,
        },
        gpus,
        spec: spec.clone(),
    })
}

/// The MIG instances of `g` that `want` bytes of VRAM onboard: instances in index order, as
/// long as their memory adds up to no more than `want`. A MIG instance is handed out whole,
/// so the share is rounded down to whole instances; at least one must fit.
fn mig_share(g: &GpuInfo, want: u64) -> Result<Vec<crate::gpu::MigInstance>, String> {
    let mut total = 0u64;
    let chosen: Vec<_> = g
        .mig
        .iter()
        .take_while(|m| {
            total = total.saturating_add(m.vram_bytes);
            total <= want
        })
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Err(format!(
            "gpu {} ({}) is in MIG mode and is onboarded by whole instances; its first instance has {}, {} requested",
            g.index,
            g.model,
            fmt_bytes(g.mig[0].vram_bytes),
            fmt_bytes(want)
        ));
    }
    Ok(chosen)
}

/// Where the node says it is (from `general.host_city/host_country/host_continent`; no
/// network lookups).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Geolocation {
    /// City.
    pub city: String,
    /// Country.
    pub country: String,
    /// Continent.
    pub continent: String,
}

impl Geolocation {
    /// `None` when nothing is configured.
    pub fn from_config(city: &str, country: &str, continent: &str) -> Option<Geolocation> {
        let g = Geolocation {
            city: city.trim().into(),
            country: country.trim().into(),
            continent: continent.trim().into(),
        };
        (!(g.city.is_empty() && g.country.is_empty() && g.continent.is_empty())).then_some(g)
    }
}

/// Amounts as the behaviors return them: CPU in cores and millicores, sizes in bytes.
pub fn resources_json(r: &Resources) -> Value {
    json!({
        "cpu": {"cores": r.cpu_millicores as f64 / 1000.0, "millicores": r.cpu_millicores},
        "ram": {"size": r.ram_bytes},
        "disk": {"size": r.disk_bytes},
        "gpus": r.gpus.iter().map(|(k, v)| json!({"device": k, "vram": v})).collect::<Vec<_>>(),
    })
}

/// Onboarding, accounting and hardware facts of one node, for its behaviors.
pub struct ResourceManager {
    acct: Accounting,
    hw: Arc<dyn HardwareSource>,
    reserve: HostReserve,
    geo: Option<Geolocation>,
    data_dir: PathBuf,
}

impl ResourceManager {
    /// Wraps an opened accounting.
    pub fn new(
        acct: Accounting,
        hw: Arc<dyn HardwareSource>,
        data_dir: PathBuf,
        geo: Option<Geolocation>,
    ) -> Self {
        ResourceManager {
            acct,
            hw,
            reserve: HostReserve::default(),
            geo,
            data_dir,
        }
    }

    /// Keeps `reserve` for the host instead of [`HostReserve::default`].
    pub fn with_reserve(mut self, reserve: HostReserve) -> Self {
        self.reserve = reserve;
        self
    }

    /// The accounting.
    pub fn accounting(&self) -> &Accounting {
        &self.acct
    }

    /// The accounting, to commit / allocate / release.
    pub fn accounting_mut(&mut self) -> &mut Accounting {
        &mut self.acct
    }

    /// The hardware source.
    pub fn hardware(&self) -> Arc<dyn HardwareSource> {
        self.hw.clone()
    }

    /// The data dir (benchmark scratch files go there).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Whether the node is onboarded.
    pub fn is_onboarded(&self) -> bool {
        self.acct.onboarding().is_some()
    }

    /// Validates a request against the machine (detects hardware; no side effects).
    pub fn plan_onboard(&self, req: &OnboardRequest) -> Result<OnboardPlan, OnboardError> {
        if self.is_onboarded() {
            return Err(AccountingError::AlreadyOnboarded.into());
        }
        plan(req, &self.hw.spec()?, &self.reserve)
    }

    /// Records a planned onboarding and its benchmark; returns the status.
    pub fn finish_onboard(
        &mut self,
        req: &OnboardRequest,
        plan: OnboardPlan,
        bench: BenchmarkRecord,
        now_ms: i64,
    ) -> Result<Value, OnboardError> {
        let details = json!({
            "request": {"cpu": req.cpu, "ram": req.ram, "disk": req.disk, "gpus": req.gpus, "no_gpu": req.no_gpu},
            "gpus": plan.gpus,
            "cpu": plan.spec.cpu,
            "geolocation": self.geo,
            "reserve": self.reserve,
        });
        self.acct.onboard(OnboardingRecord {
            resources: plan.resources,
            onboarded_at_ms: now_ms,
            details: details.to_string(),
        })?;
        self.acct
            .store()
            .benchmarks()
            .insert(&bench)
            .map_err(AccountingError::from)?;
        Ok(self.status())
    }

    /// Plan, benchmark and record in one call (tests; the node runs the benchmark unlocked).
    pub fn onboard(
        &mut self,
        req: &OnboardRequest,
        budget: &BenchBudget,
        now_ms: i64,
    ) -> Result<Value, OnboardError> {
        let p = self.plan_onboard(req)?;
        let bench = benchmark::run(&self.data_dir, budget, now_ms)?;
        self.finish_onboard(req, p, bench, now_ms)
    }

    /// Replaces the accounting's in-memory state with the database's (see
    /// [`Accounting::reload`]).
    pub fn reload(&mut self) -> Result<(), AccountingError> {
        self.acct.reload()
    }

    /// Offboards (see [`Accounting::offboard`]).
    pub fn offboard(
        &mut self,
        force: bool,
        stopper: &dyn AllocationStopper,
    ) -> Result<OffboardReport, OnboardError> {
        Ok(self.acct.offboard(force, stopper)?)
    }

    /// The onboarded GPUs as units a deployment can reserve, and which are free (see
    /// [`crate::gpu::GpuUnit`]). Empty when not onboarded or no GPU was onboarded.
    pub fn gpu_units(&self) -> Vec<GpuUnit> {
        let Some(rec) = self.acct.onboarding() else {
            return Vec::new();
        };
        if rec.resources.gpus.is_empty() {
            return Vec::new();
        }
        let gpus: Result<Vec<GpuInfo>, String> = serde_json::from_str::<Value>(&rec.details)
            .map_err(|e| e.to_string())
            .and_then(|d| {
                serde_json::from_value(d.get("gpus").cloned().unwrap_or(Value::Null))
                    .map_err(|e| e.to_string())
            });
        match gpus {
            Ok(gpus) => units_of(&gpus, &rec.resources.gpus, &self.acct.free().gpus),
            Err(e) => {
                // Onboarded GPUs nobody can describe are offered to nobody; say why.
                tracing::warn!(error = %e, "the onboarding record's GPU list is unreadable: no GPU is offered (offboard and onboard again)");
                Vec::new()
            }
        }
    }

    /// `/dms/node/onboarding/status`.
    pub fn status(&self) -> Value {
        let Some(rec) = self.acct.onboarding() else {
            return json!({"onboarded": false, "geolocation": self.geo});
        };
        let details: Value = serde_json::from_str(&rec.details).unwrap_or(Value::Null);
        let bench = self.acct.store().benchmarks().latest().ok().flatten();
        json!({
            "onboarded": true,
            "onboarded_at_ms": rec.onboarded_at_ms,
            "onboarded_resources": resources_json(&rec.resources),
            "free": resources_json(&self.acct.free()),
            "committed": resources_json(&self.acct.committed()),
            "allocated": resources_json(&self.acct.allocated()),
            "gpus": details.get("gpus").cloned().unwrap_or(Value::Null),
            "benchmark": bench,
            "geolocation": self.geo,
        })
    }
}

#[cfg(test)]
mod tests;
