//! [`Metered`]: an [`Executor`] that counts and times every operation of the one it wraps,
//! for the node's metrics endpoint.
//!
//! The counters are process-wide; [`register`] adds them to a registry. Labels come from
//! closed sets (executor kind, operation, outcome). `wait` and `logs` are passed through
//! untimed: they last as long as the workload, which says nothing about the runtime.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::interface::{
    ExecOutput, ExecutionInfo, Executor, ExecutorKind, ExecutorStatus, ExitStatus, GpuSupport,
    LogOptions, LogStream,
};
use crate::{ExecutionSpec, Result};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    executor: &'static str,
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    executor: &'static str,
    op: &'static str,
    outcome: &'static str,
}

type Durations = Family<OpLabels, Histogram, fn() -> Histogram>;

struct Metrics {
    ops: Family<OutcomeLabels, Counter>,
    seconds: Durations,
}

fn duration_histogram() -> Histogram {
    // 5 ms … ~87 min: an inspect takes milliseconds, an image pull or a VM boot minutes.
    Histogram::new(exponential_buckets(0.005, 3.0, 14))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    ops: Family::default(),
    seconds: Family::new_with_constructor(duration_histogram),
});

/// Adds `executor_operations_total` and `executor_operation_duration_seconds` to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "executor_operations",
        "Executor operations (prepare, start, inspect, stop, remove, list, exec) by outcome",
        METRICS.ops.clone(),
    );
    registry.register_with_unit(
        "executor_operation_duration",
        "How long executor operations took, failed ones included",
        prometheus_client::registry::Unit::Seconds,
        METRICS.seconds.clone(),
    );
}

/// Wraps an executor so that its operations are counted and timed.
pub struct Metered {
    inner: Arc<dyn Executor>,
}

impl Metered {
    /// `inner`, metered.
    pub fn wrap(inner: Arc<dyn Executor>) -> Arc<dyn Executor> {
        Arc::new(Self { inner })
    }

    fn observe<T>(&self, op: &'static str, started: Instant, r: &Result<T>) {
        let executor = self.inner.kind().as_str();
        let outcome = if r.is_ok() { "ok" } else { "error" };
        METRICS
            .ops
            .get_or_create(&OutcomeLabels {
                executor,
                op,
                outcome,
            })
            .inc();
        METRICS
            .seconds
            .get_or_create(&OpLabels { executor, op })
            .observe(started.elapsed().as_secs_f64());
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let t = Instant::now();
        let r = f.await;
        self.observe(op, t, &r);
        r
    }
}

#[async_trait::async_trait]
impl Executor for Metered {
    fn kind(&self) -> ExecutorKind {
        self.inner.kind()
    }

    fn status(&self) -> ExecutorStatus {
        self.inner.status()
    }

    fn gpu_support(&self) -> GpuSupport {
        self.inner.gpu_support()
    }

    async fn prepare(&self, spec: &ExecutionSpec) -> Result<()> {
        self.timed("prepare", self.inner.prepare(spec)).await
    }

    async fn start(&self, spec: &ExecutionSpec) -> Result<ExecutionInfo> {
        self.timed("start", self.inner.start(spec)).await
    }

    async fn inspect(&self, id: &str) -> Result<ExecutionInfo> {
        self.timed("inspect", self.inner.inspect(id)).await
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus> {
        self.inner.wait(id).await
    }

    async fn logs(&self, id: &str, options: LogOptions) -> Result<LogStream> {
        self.inner.logs(id, options).await
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        self.timed("stop", self.inner.stop(id, grace)).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.timed("remove", self.inner.remove(id)).await
    }

    async fn list(&self) -> Result<Vec<ExecutionInfo>> {
        self.timed("list", self.inner.list()).await
    }

    async fn exec(&self, id: &str, argv: &[String], timeout: Duration) -> Result<ExecOutput> {
        self.timed("exec", self.inner.exec(id, argv, timeout)).await
    }

    async fn netns(&self, id: &str) -> Result<Option<std::path::PathBuf>> {
        self.inner.netns(id).await
    }
}
