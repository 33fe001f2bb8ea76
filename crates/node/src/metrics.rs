//! The node's one metrics registry, served as OpenMetrics text at `/metrics` on the local
//! API: the event counters the crates keep (admission, bid rounds, executor operations,
//! libp2p) and, read at each scrape, the node's state (resources, deployments and
//! allocations by status, subnet traffic).
//!
//! Every name starts with `nunet_` (libp2p's with `nunet_libp2p_`); units are in the names;
//! label values come from closed sets (statuses, states, directions, reasons), never from
//! ids or peer-supplied text, so a node with many deployments or peers still exports a
//! bounded number of series. (libp2p's identify metrics would label series with addresses
//! peers advertise: identify events are therefore not recorded.)

use std::fmt::Write as _;
use std::sync::Arc;

use nunet_orchestrator::Deployments;
use nunet_protocol::{AllocationStatus, DeploymentStatus};
use nunet_provider::Provider;
use nunet_provider::onboarding::SharedManager;
use nunet_provider::subnet::NodeSubnets;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// The registry every part of the node registers in (prefix `nunet`).
pub fn new_registry() -> Registry {
    let mut r = Registry::with_prefix("nunet");
    nunet_actor::metrics::register(&mut r);
    nunet_orchestrator::metrics::register(&mut r);
    nunet_executor::metered::register(&mut r);
    r
}

/// Reads the node's state at each scrape.
pub struct StateCollector {
    /// The resource accounting.
    pub resources: SharedManager,
    /// The orchestrator's deployments.
    pub deployments: Deployments,
    /// The provider's allocations.
    pub provider: Arc<Provider>,
    /// The ensemble data path.
    pub subnets: Arc<NodeSubnets>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCollector")
    }
}

type Labels<'a> = [(&'static str, &'a str); 1];

/// One family of `(label value, value)` series, all with the label `key`.
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    key: &'static str,
    series: &[(&str, M)],
) -> std::fmt::Result {
    let Some((_, first)) = series.first() else {
        return Ok(());
    };
    let mut m = enc.encode_descriptor(name, help, unit, first.metric_type())?;
    for (value, metric) in series {
        let labels: Labels = [(key, value)];
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn single<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: M,
) -> std::fmt::Result {
    metric.encode(enc.encode_descriptor(name, help, unit, metric.metric_type())?)
}

fn gauge(v: f64) -> ConstGauge<f64> {
    ConstGauge::new(v)
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

/// A deployment status as a label value: lowercase like the allocation statuses.
fn status_label(s: DeploymentStatus) -> &'static str {
    match s {
        DeploymentStatus::Preparing => "preparing",
        DeploymentStatus::Committing => "committing",
        DeploymentStatus::Provisioning => "provisioning",
        DeploymentStatus::Running => "running",
        DeploymentStatus::Failed => "failed",
        DeploymentStatus::ShuttingDown => "shutting_down",
        DeploymentStatus::Completed => "completed",
    }
}

impl StateCollector {
    fn resources(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let Ok(g) = nunet_provider::onboarding::lock(&self.resources) else {
            return Ok(()); // the accounting is unavailable: export nothing rather than zeros
        };
        let a = g.accounting();
        let onboarded = a.onboarded();
        let states = [
            ("free", a.free()),
            ("committed", a.committed()),
            ("allocated", a.allocated()),
        ];
        drop(g);
        type Of = fn(&nunet_resources::Resources) -> f64;
        // (name, what, unit, amount): `onboarded_<name>` and `resources_<name>{state}`.
        let measures: [(&str, &str, Option<Unit>, Of); 4] = [
            ("cpu_cores", "CPU cores", None, |r| {
                r.cpu_millicores as f64 / 1000.0
            }),
            ("memory", "memory", Some(Unit::Bytes), |r| {
                r.ram_bytes as f64
            }),
            ("disk", "disk", Some(Unit::Bytes), |r| r.disk_bytes as f64),
            ("gpu_memory", "video memory", Some(Unit::Bytes), |r| {
                r.gpus.values().sum::<u64>() as f64
            }),
        ];
        for (name, what, unit, of) in measures {
            single(
                enc,
                &format!("onboarded_{name}"),
                &format!("Onboarded {what} (0 when not onboarded)"),
                unit.as_ref(),
                gauge(of(&onboarded)),
            )?;
            let series: Vec<(&str, ConstGauge<f64>)> =
                states.iter().map(|(s, r)| (*s, gauge(of(r)))).collect();
            family(
                enc,
                &format!("resources_{name}"),
                &format!("Onboarded {what} by state (free + committed + allocated = onboarded)"),
                unit.as_ref(),
                "state",
                &series,
            )?;
        }
        single(
            enc,
            "onboarded_gpus",
            "GPUs this provider onboarded",
            None,
            gauge(onboarded.gpus.len() as f64),
        )?;
        Ok(())
    }

    fn statuses(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let deployments = self.deployments.statuses();
        let series: Vec<(&str, ConstGauge<f64>)> = DeploymentStatus::ALL
            .iter()
            .map(|s| {
                let n = deployments.iter().filter(|d| *d == s).count();
                (status_label(*s), gauge(n as f64))
            })
            .collect();
        family(
            enc,
            "deployments",
            "Deployments this node orchestrates, by status (finished ones until removed)",
            None,
            "status",
            &series,
        )?;
        let allocations = self.provider.allocation_statuses();
        let series: Vec<(&str, ConstGauge<f64>)> = AllocationStatus::ALL
            .iter()
            .map(|s| {
                let n = allocations.iter().filter(|a| *a == s).count();
                (s.as_str(), gauge(n as f64))
            })
            .collect();
        family(
            enc,
            "allocations",
            "Allocations this provider holds, by status",
            None,
            "status",
            &series,
        )
    }

    fn subnet(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let Some((t, joined)) = self.subnets.traffic() else {
            return Ok(());
        };
        single(
            enc,
            "subnet_ensembles",
            "Ensemble subnets this node is on",
            None,
            gauge(joined as f64),
        )?;
        let dir = |out: u64, inn: u64| [("out", counter(out)), ("in", counter(inn))];
        family(
            enc,
            "subnet_packets",
            "IP packets carried between this node's allocations and their peers",
            None,
            "direction",
            &dir(t.packets_out, t.packets_in),
        )?;
        family(
            enc,
            "subnet_traffic",
            "Bytes of IP packets carried",
            Some(&Unit::Bytes),
            "direction",
            &dir(t.bytes_out, t.bytes_in),
        )?;
        family(
            enc,
            "subnet_datagrams",
            "Packets carried as UDP datagrams (part of subnet_packets)",
            None,
            "direction",
            &dir(t.datagrams_out, t.datagrams_in),
        )?;
        family(
            enc,
            "subnet_dropped_packets",
            "Packets dropped, by reason",
            None,
            "reason",
            &[
                ("no_route", counter(t.dropped_no_route)),
                ("local", counter(t.dropped_local)),
                ("not_ipv4_out", counter(t.dropped_not_ipv4_out)),
                ("queue_full", counter(t.dropped_queue_full)),
                ("spoofed", counter(t.dropped_spoofed)),
                ("bad_destination", counter(t.dropped_bad_destination)),
                ("not_ipv4_in", counter(t.dropped_not_ipv4_in)),
                ("bad_offload", counter(t.dropped_bad_offload)),
                ("tun_write", counter(t.dropped_tun_write)),
                ("bad_datagram", counter(t.dropped_bad_datagram)),
                ("datagram_send", counter(t.dropped_datagram_send)),
            ],
        )?;
        single(
            enc,
            "subnet_bad_frames",
            "Inbound subnet streams closed for a garbage, oversized or truncated frame",
            None,
            counter(t.bad_frames),
        )?;
        single(
            enc,
            "subnet_streams_opened",
            "Outbound subnet streams opened",
            None,
            counter(t.streams_opened),
        )?;
        family(
            enc,
            "subnet_datagram_paths",
            "Datagram paths confirmed by peers, and those given up",
            None,
            "event",
            &[
                ("confirmed", counter(t.datagram_paths)),
                ("lost", counter(t.datagram_paths_lost)),
            ],
        )
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        self.resources(&mut enc)?;
        self.statuses(&mut enc)?;
        self.subnet(&mut enc)
    }
}

/// Content type of [`Format::OpenMetrics`].
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of [`Format::Text`].
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The two exposition formats `/metrics` answers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text: what Prometheus asks for first.
    OpenMetrics,
    /// Prometheus' classic text format (0.0.4): for clients that do not ask for
    /// OpenMetrics (curl, `promtool check metrics`, older scrapers).
    Text,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it, else the classic text format.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Text,
        }
    }

    /// Its content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => OPENMETRICS,
            Self::Text => TEXT,
        }
    }
}

/// The registry in `format`.
pub fn render(registry: &Registry, format: Format) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    if !out.ends_with('\n') {
        out.write_char('\n')?;
    }
    Ok(match format {
        Format::OpenMetrics => out,
        Format::Text => classic(&out),
    })
}

/// OpenMetrics text → Prometheus 0.0.4 text, for what the registry emits (counters, gauges,
/// histograms; no exemplars, info or state sets): a counter family is named after its
/// `_total` samples in `HELP`/`TYPE`, and the `UNIT` and `EOF` lines go.
fn classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None; // (name, text) waiting for its TYPE line
    let flush_help = |out: &mut String, help: &mut Option<(&str, &str)>, suffix: &str| {
        if let Some((name, text)) = help.take() {
            out.push_str(&format!("# HELP {name}{suffix} {text}\n"));
        }
    };
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, &mut help, "");
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if kind == "counter" { "_total" } else { "" };
            // OpenMetrics' `unknown` is the classic format's `untyped`.
            let kind = if kind == "unknown" { "untyped" } else { kind };
            if help.is_some_and(|(h, _)| h == name) {
                flush_help(&mut out, &mut help, suffix);
            } else {
                flush_help(&mut out, &mut help, "");
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            flush_help(&mut out, &mut help, "");
            out.push_str(line);
            out.push('\n');
        }
    }
    flush_help(&mut out, &mut help, "");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;

    #[test]
    fn classic_text_names_counters_after_their_samples_and_drops_openmetrics_lines() {
        let mut r = Registry::with_prefix("nunet");
        let c: Counter = Counter::default();
        c.inc_by(3);
        r.register("things", "Things seen", c);
        let g: Gauge = Gauge::default();
        g.set(7);
        r.register_with_unit("size", "How big", Unit::Bytes, g);
        let text = render(&r, Format::Text).expect("render");
        assert_eq!(
            text,
            "# HELP nunet_things_total Things seen.\n\
             # TYPE nunet_things_total counter\n\
             nunet_things_total 3\n\
             # HELP nunet_size_bytes How big.\n\
             # TYPE nunet_size_bytes gauge\n\
             nunet_size_bytes 7\n"
        );
        let om = render(&r, Format::OpenMetrics).expect("render");
        assert!(om.contains("# TYPE nunet_things counter\n"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
    }

    #[test]
    fn negotiation_prefers_openmetrics_only_when_asked() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
    }
}
