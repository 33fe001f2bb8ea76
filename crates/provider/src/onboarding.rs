//! Onboarding, resources and hardware behaviors (`/dms/node/onboarding/*`,
//! `/dms/node/resources/*`, `/dms/node/hardware/*`) over the node's [`ResourceManager`], and
//! the background task that releases lapsed commitments.
//!
//! SQLite calls and the machine benchmark are blocking: they run on tokio's blocking pool,
//! and the manager's lock is not held while the benchmark runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use nunet_actor::{ActorError, ActorSystem, Behavior, Incoming};
use nunet_config::Config;
use nunet_resources::accounting::MAX_COMMIT_TTL_MS;
use nunet_resources::benchmark::{self, BenchBudget};
use nunet_resources::hardware::{HardwareSource, LocalHardware};
use nunet_resources::onboarding::{HostReserve, resources_json};
use nunet_resources::units::{cores_to_milli, gib_to_bytes};
use nunet_resources::{
    Accounting, AllocationStopper, Geolocation, OnboardRequest, ResourceManager, Resources,
    StopOutcome, Store,
};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The node's resource manager, shared by its behaviors.
pub type SharedManager = Arc<Mutex<ResourceManager>>;

/// Creates the data directory (private: 0700) and returns the node database's path,
/// `<data_dir>/dms.sqlite`.
pub fn database_path(config: &Config) -> Result<std::path::PathBuf, String> {
    let dir = &config.general.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    // Databases, VM and WASM state, subnet plans: nothing here is for other local users.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("making {} private (0700): {e}", dir.display()))?;
    }
    Ok(dir.join("dms.sqlite"))
}

/// The resource manager over `store` (the daemon opened it): rebuilds the accounting and
/// releases lapsed commitments.
pub fn manager(config: &Config, store: Store) -> Result<SharedManager, String> {
    let dir = &config.general.data_dir;
    let mut acct = Accounting::open(store).map_err(|e| e.to_string())?;
    // No executor is wired yet, so which allocations still run is unknown (None): they are
    // kept; lapsed commitments are released. The deployment issue passes the running set.
    let released = acct.reconcile(None, now_ms()).map_err(|e| e.to_string())?;
    if !released.is_empty() {
        tracing::info!(?released, "released lapsed commitments at start");
    }
    let g = &config.general;
    let geo = Geolocation::from_config(&g.host_city, &g.host_country, &g.host_continent);
    let hw: Arc<dyn HardwareSource> = Arc::new(LocalHardware::new(dir));
    let o = &config.onboarding;
    let reserve = HostReserve::from_units(o.reserve_cpu_cores, o.reserve_ram_gb, o.reserve_disk_gb)
        .ok_or_else(|| {
            format!(
                "onboarding.reserve_*: {} cores, {} GiB, {} GiB is not a reserve (negative or not a number)",
                o.reserve_cpu_cores, o.reserve_ram_gb, o.reserve_disk_gb
            )
        })?;
    Ok(Arc::new(Mutex::new(
        ResourceManager::new(acct, hw, dir.to_path_buf(), geo).with_reserve(reserve),
    )))
}

/// Current time, Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What runs on this node, as a forced offboard sees it: it stops every workload first
/// (through its executor, releasing its resources the usual way) and says which it stopped.
/// The provider ([`crate::Provider`]) implements it; a node without one passes [`NoWorkloads`].
pub trait Workloads: Send + Sync {
    /// Stops every allocation that runs or is about to, and takes no new work until
    /// [`Workloads::resume`]; returns the ids stopped.
    fn stop_all(self: Arc<Self>) -> BoxFuture<'static, Vec<String>>;
    /// Takes work again (the offboard finished or failed).
    fn resume(&self);
    /// Which GPUs each executor can hand to workloads (executor name → support).
    fn gpu_support(&self) -> BTreeMap<String, nunet_executor::GpuSupport> {
        BTreeMap::new()
    }
}

/// What a GPU job on this node would get: per onboarded GPU unit, the executors that can
/// hand it to a workload and why the others cannot; and each executor's GPU support.
fn gpu_report(g: &ResourceManager, w: &dyn Workloads) -> Value {
    let support = w.gpu_support();
    let units: Vec<Value> = g
        .gpu_units()
        .into_iter()
        .map(|u| {
            let vendor = nunet_executor::GpuVendor::from_name(u.vendor.as_str());
            let (usable, why_not): (Vec<_>, Vec<_>) = support
                .iter()
                .partition(|(_, s)| vendor.is_some_and(|v| s.supports(v)));
            json!({
                "device": u.key,
                "vendor": u.vendor,
                "model": u.model,
                "vram": u.vram_bytes,
                "mig_parent": u.parent,
                "free": u.free,
                "device_nodes": u.device_nodes,
                "usable_by": usable.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                "not_usable_by": why_not
                    .iter()
                    .map(|(n, s)| (n.to_string(), json!(s.notes.join("; "))))
                    .collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    json!({"gpu_units": units, "gpu_support": support})
}

/// `v` (a JSON object) with the fields of `extra` (a JSON object) added.
fn merged(mut v: Value, extra: Value) -> Value {
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

/// No workloads run here (a node without a provider side, and unit tests).
pub struct NoWorkloads;

impl Workloads for NoWorkloads {
    fn stop_all(self: Arc<Self>) -> BoxFuture<'static, Vec<String>> {
        Box::pin(async { Vec::new() })
    }

    fn resume(&self) {}
}

/// The accounting's hook during a forced offboard, after [`Workloads::stop_all`]: the
/// allocations stopped then count as stopped; any other allocated reservation has no
/// workload on this node (reserved through `/dms/node/resources/allocate` directly) and is
/// released as such (`released_without_executor`).
struct AfterStopAll(Vec<String>);

impl AllocationStopper for AfterStopAll {
    fn stop(&self, allocation_id: &str) -> Result<StopOutcome, String> {
        if self.0.iter().any(|s| s == allocation_id) {
            return Ok(StopOutcome::Stopped);
        }
        tracing::warn!(
            allocation = allocation_id,
            "no workload for this reservation: releasing its resources"
        );
        Ok(StopOutcome::NoExecutor)
    }
}

fn failed(e: impl std::fmt::Display) -> ActorError {
    ActorError::failed(e.to_string())
}

/// Locks the manager; after a panic in another holder, the accounting is first rebuilt from
/// the database (see [`nunet_resources::shared`]), so one failed call never fails the next.
pub fn lock(m: &SharedManager) -> Result<std::sync::MutexGuard<'_, ResourceManager>, ActorError> {
    nunet_resources::lock_manager(m)
        .map_err(|e| failed(format!("resource manager unavailable: {e}")))
}

/// Runs `f` with the manager locked, on the blocking pool. A panic in `f` answers this call
/// with an error and leaves the manager usable (see [`lock`]).
async fn with<T: Send + 'static>(
    m: SharedManager,
    f: impl FnOnce(&mut ResourceManager) -> Result<T, ActorError> + Send + 'static,
) -> Result<T, ActorError> {
    tokio::task::spawn_blocking(move || f(&mut *lock(&m)?))
        .await
        .map_err(failed)?
}

async fn onboard(
    m: SharedManager,
    w: Arc<dyn Workloads>,
    payload: Value,
) -> Result<Value, ActorError> {
    let req = OnboardRequest::from_json(&payload).map_err(failed)?;
    let r = req.clone();
    let (plan, dir) = with(m.clone(), move |g| {
        Ok((
            g.plan_onboard(&r).map_err(failed)?,
            g.data_dir().to_path_buf(),
        ))
    })
    .await?;
    let bench = tokio::task::spawn_blocking(move || {
        benchmark::run(&dir, &BenchBudget::default(), now_ms())
    })
    .await
    .map_err(failed)?
    .map_err(failed)?;
    with(m, move |g| {
        let st = g
            .finish_onboard(&req, plan, bench, now_ms())
            .map_err(failed)?;
        Ok(merged(st, gpu_report(g, w.as_ref())))
    })
    .await
}

fn str_arg<'a>(p: &'a Value, name: &str) -> Result<&'a str, ActorError> {
    p.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ActorError::failed(format!("give --{name} <value>")))
}

/// How long a manual commitment lasts when `--ttl` is not given.
const DEFAULT_COMMIT_TTL_MS: i64 = 60_000;

/// `--ttl <seconds>` in milliseconds: absent is [`DEFAULT_COMMIT_TTL_MS`]; otherwise a
/// number from 0.001 to the longest commitment ([`MAX_COMMIT_TTL_MS`]), refused (never
/// clamped or wrapped) outside that.
fn ttl_ms(p: &Value) -> Result<i64, ActorError> {
    if p.get("ttl").is_none_or(Value::is_null) {
        return Ok(DEFAULT_COMMIT_TTL_MS);
    }
    let s = num_arg(p, "ttl")?;
    let ms = (s * 1000.0).round();
    if !(1.0..=MAX_COMMIT_TTL_MS as f64).contains(&ms) {
        return Err(failed(format!(
            "--ttl must be a number of seconds from 0.001 to {}, got {s}",
            MAX_COMMIT_TTL_MS / 1000
        )));
    }
    // In range, so the conversion is exact.
    Ok(ms as i64)
}

fn num_arg(p: &Value, name: &str) -> Result<f64, ActorError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(0.0),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| failed(format!("--{name}"))),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| failed(format!("--{name} {s:?} is not a number"))),
        Some(v) => Err(failed(format!("--{name} {v} is not a number"))),
    }
}

/// `--cpu --ram --disk --gpus "index:GiB,…"` → amounts, GPU indexes mapped to onboarded devices.
fn wanted(g: &ResourceManager, p: &Value) -> Result<Resources, ActorError> {
    let bad = |n: &str| failed(format!("--{n} must be a non-negative number"));
    let mut r = Resources {
        cpu_millicores: cores_to_milli(num_arg(p, "cpu")?).ok_or_else(|| bad("cpu"))?,
        ram_bytes: gib_to_bytes(num_arg(p, "ram")?).ok_or_else(|| bad("ram"))?,
        disk_bytes: gib_to_bytes(num_arg(p, "disk")?).ok_or_else(|| bad("disk"))?,
        gpus: BTreeMap::new(),
    };
    if let Some(spec) = p.get("gpus").and_then(Value::as_str) {
        let details: Value = g
            .accounting()
            .onboarding()
            .and_then(|o| serde_json::from_str(&o.details).ok())
            .unwrap_or(Value::Null);
        for w in nunet_resources::gpu::parse_gpu_spec(spec).map_err(failed)? {
            let key = details["gpus"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|d| d["index"].as_u64() == Some(u64::from(w.index)))
                .and_then(|d| {
                    d["uuid"]
                        .as_str()
                        .map(str::to_string)
                        .or_else(|| d["pci_address"].as_str().map(|a| format!("pci:{a}")))
                })
                .ok_or_else(|| failed(format!("GPU {} is not onboarded", w.index)))?;
            r.gpus
                .insert(key, gib_to_bytes(w.vram_gib).ok_or_else(|| bad("gpus"))?);
        }
    }
    Ok(r)
}

/// `offboard`: refused while allocations run, unless forced; forced, it first stops every
/// workload through the provider (so nothing keeps running unaccounted), then leaves.
async fn offboard(
    m: SharedManager,
    workloads: Arc<dyn Workloads>,
    p: Value,
) -> Result<Value, ActorError> {
    let force = p.get("force").and_then(Value::as_bool).unwrap_or(false);
    let stopped = if force {
        // Refuse early when not onboarded: nothing is stopped for an offboard that fails.
        with(m.clone(), |g| {
            if g.is_onboarded() {
                Ok(())
            } else {
                Err(failed(nunet_resources::AccountingError::NotOnboarded))
            }
        })
        .await?;
        workloads.clone().stop_all().await
    } else {
        Vec::new()
    };
    let r = with(m, move |g| {
        let mut rep = g
            .offboard(force, &AfterStopAll(stopped.clone()))
            .map_err(failed)?;
        // Stopping released their resources already; the report names them all the same.
        for id in stopped {
            if !rep.stopped.contains(&id) {
                rep.stopped.push(id);
            }
        }
        Ok(json!({"onboarded": false, "offboard": rep}))
    })
    .await;
    // Offboarded (bids now decline: not onboarded) or failed (it stays onboarded): either
    // way the provider takes work again.
    workloads.resume();
    r
}

/// Registers the behaviors on the root actor.
pub fn register(
    system: &ActorSystem,
    m: SharedManager,
    workloads: Arc<dyn Workloads>,
) -> Result<(), ActorError> {
    type Handler =
        fn(SharedManager, Value) -> futures::future::BoxFuture<'static, Result<Value, ActorError>>;
    let reg = |name: &str, h: Handler| {
        let m = m.clone();
        system.register(
            "root",
            name,
            Behavior::direct(move |msg: Incoming| h(m.clone(), msg.payload)),
        )
    };
    use futures::FutureExt;
    let (mm, w) = (m.clone(), workloads.clone());
    system.register(
        "root",
        "/dms/node/onboarding/onboard",
        Behavior::direct(move |msg: Incoming| onboard(mm.clone(), w.clone(), msg.payload)),
    )?;
    let (mm, w) = (m.clone(), workloads.clone());
    system.register(
        "root",
        "/dms/node/onboarding/status",
        Behavior::direct(move |_: Incoming| {
            let w = w.clone();
            with(mm.clone(), move |g| {
                Ok(merged(g.status(), gpu_report(g, w.as_ref())))
            })
        }),
    )?;
    let (mm, w) = (m.clone(), workloads);
    system.register(
        "root",
        "/dms/node/onboarding/offboard",
        Behavior::direct(move |msg: Incoming| offboard(mm.clone(), w.clone(), msg.payload)),
    )?;
    reg("/dms/node/onboarding/resource", |m, _| {
        with(m, |g| {
            let spec = g.hardware().spec().map_err(failed)?;
            Ok(json!({
                "onboarded": g.accounting().onboarding().map(|o| resources_json(&o.resources)),
                "machine": spec,
            }))
        })
        .boxed()
    })?;
    reg("/dms/node/resources/onboarded", |m, _| {
        with(m, |g| Ok(resources_json(&g.accounting().onboarded()))).boxed()
    })?;
    reg("/dms/node/resources/free", |m, _| {
        with(m, |g| Ok(resources_json(&g.accounting().free()))).boxed()
    })?;
    reg("/dms/node/resources/allocated", |m, _| {
        with(m, |g| {
            let a = g.accounting();
            Ok(json!({
                "allocated": resources_json(&a.allocated()),
                "committed": resources_json(&a.committed()),
                "reservations": a.reservations().collect::<Vec<_>>(),
            }))
        })
        .boxed()
    })?;
    // Manual accounting operations: what the deployment protocol will call (issue 8); exposed
    // under /dms/node so the node's owner (and the tests) can exercise the accounting.
    reg("/dms/node/resources/commit", |m, p| {
        async move {
            // The arguments are read before the lock is taken.
            let id = str_arg(&p, "id")?.to_string();
            let ttl_ms = ttl_ms(&p)?;
            with(m, move |g| {
                let want = wanted(g, &p)?;
                let now = now_ms();
                let expires = now
                    .checked_add(ttl_ms)
                    .ok_or_else(|| failed("--ttl: the expiry is past the end of time"))?;
                g.accounting_mut()
                    .commit(&id, want, expires, now)
                    .map_err(failed)?;
                Ok(json!({"committed": id, "expires_at_ms": expires}))
            })
            .await
        }
        .boxed()
    })?;
    reg("/dms/node/resources/allocate", |m, p| {
        with(m, move |g| {
            let id = str_arg(&p, "id")?.to_string();
            g.accounting_mut().allocate(&id, now_ms()).map_err(failed)?;
            Ok(json!({"allocated": id}))
        })
        .boxed()
    })?;
    reg("/dms/node/resources/release", |m, p| {
        with(m, move |g| {
            let id = str_arg(&p, "id")?.to_string();
            g.accounting_mut().release(&id).map_err(failed)?;
            Ok(json!({"released": id}))
        })
        .boxed()
    })?;
    reg("/dms/node/hardware/spec", |m, _| {
        with(m, |g| {
            serde_json::to_value(g.hardware().spec().map_err(failed)?).map_err(failed)
        })
        .boxed()
    })?;
    reg("/dms/node/hardware/usage", |m, _| {
        with(m, |g| {
            serde_json::to_value(g.hardware().usage().map_err(failed)?).map_err(failed)
        })
        .boxed()
    })?;
    Ok(())
}

/// Releases lapsed commitments every second until `stop` turns true.
pub async fn expire_loop(m: SharedManager, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let r = with(m.clone(), |g| {
            g.accounting_mut().expire(now_ms()).map_err(failed)
        })
        .await;
        match r {
            Ok(ids) if !ids.is_empty() => tracing::info!(?ids, "commitments expired"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e.message, "expiring commitments"),
        }
    }
}

/// Whether the node is onboarded (for `/public/status`).
pub fn is_onboarded(m: &SharedManager) -> bool {
    lock(m).map(|g| g.is_onboarded()).unwrap_or(false)
}

#[cfg(test)]
pub(crate) mod tests;
