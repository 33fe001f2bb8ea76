//! Which allocations the supervisor restarts when one fails, and when it gives up: the
//! ensemble's `supervisor` tree (Erlang-style `OneForOne`, `AllForOne`, `RestForOne`, nested)
//! and each allocation's `failure_recovery` (`one_for_one`, `one_for_all`, `rest_for_one`;
//! `stay_down` keeps the old behaviour: the deployment fails).
//!
//! An allocation listed in the tree follows its supervisor's strategy; one outside it follows
//! its own `failure_recovery`, with the whole ensemble as its supervisor. Each supervisor may
//! restart at most [`MAX_RESTARTS`] times within [`WINDOW`]; one more failure escalates to its
//! parent, which restarts that supervisor's whole subtree under its own strategy and limit;
//! past the root, the ensemble's `escalation_strategy` decides. Restarts back off: the first
//! at once, then [`FIRST_BACKOFF`] doubling up to [`MAX_BACKOFF`].
//!
//! Pure logic: it never sends a message.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use nunet_ensemble::Ensemble;
use nunet_ensemble::spec::{AllocationRecovery, Supervisor, SupervisorStrategy};

/// Restarts a supervisor may make within [`WINDOW`] before it escalates.
pub const MAX_RESTARTS: usize = 5;
/// The window of [`MAX_RESTARTS`].
pub const WINDOW: Duration = Duration::from_secs(60);
/// Pause before the second restart within the window.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause before a restart.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A restart strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only the failed allocation.
    OneForOne,
    /// Every allocation under the same supervisor.
    AllForOne,
    /// The failed one and those started after it.
    RestForOne,
}

impl Strategy {
    fn name(self) -> &'static str {
        match self {
            Self::OneForOne => "one_for_one",
            Self::AllForOne => "one_for_all",
            Self::RestForOne => "rest_for_one",
        }
    }
}

/// One supervisor: a node of the tree, or the ensemble root for allocation-level policies.
#[derive(Debug, Clone)]
struct Group {
    /// Shown in events.
    name: String,
    strategy: Strategy,
    /// Every allocation in its subtree, in start order.
    all: Vec<String>,
    parent: Option<usize>,
}

/// What the supervisor does about a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Restart these allocations (start order) after `delay`.
    Restart {
        /// Allocation names.
        allocations: Vec<String>,
        /// Back-off before the restart.
        delay: Duration,
        /// Which supervisor and strategy decided, for the events.
        why: String,
    },
    /// Nothing restarts it: the ensemble's escalation applies (the reason says why).
    GiveUp(String),
}

/// The supervision plan of one deployment and its restart history.
#[derive(Debug, Clone)]
pub struct Supervision {
    groups: Vec<Group>,
    /// Allocation name → the supervisor it restarts under (`None`: stay_down).
    of: HashMap<String, Option<(usize, Strategy)>>,
    order: Vec<String>,
    history: HashMap<usize, VecDeque<Instant>>,
}

impl Supervision {
    /// The plan of `e`, with `order` its allocations in start order.
    pub fn new(e: &Ensemble, order: &[String]) -> Self {
        let mut s = Self {
            groups: Vec::new(),
            of: HashMap::new(),
            order: order.to_vec(),
            history: HashMap::new(),
        };
        if let Some(root) = &e.supervisor {
            s.add_tree(root, None, "supervisor");
        }
        let mut root_group = None;
        for a in &e.allocations {
            if s.of.contains_key(&a.name) {
                continue;
            }
            let strategy = match a.failure_recovery {
                AllocationRecovery::StayDown => {
                    s.of.insert(a.name.clone(), None);
                    continue;
                }
                AllocationRecovery::OneForOne => Strategy::OneForOne,
                AllocationRecovery::OneForAll => Strategy::AllForOne,
                AllocationRecovery::RestForOne => Strategy::RestForOne,
            };
            let g = match (strategy, root_group) {
                (Strategy::OneForOne, _) => {
                    s.groups.push(Group {
                        name: a.name.clone(),
                        strategy,
                        all: vec![a.name.clone()],
                        parent: None,
                    });
                    s.groups.len() - 1
                }
                (_, Some(g)) => g,
                (_, None) => {
                    s.groups.push(Group {
                        name: "the ensemble".into(),
                        strategy,
                        all: order.to_vec(),
                        parent: None,
                    });
                    root_group = Some(s.groups.len() - 1);
                    s.groups.len() - 1
                }
            };
            s.of.insert(a.name.clone(), Some((g, strategy)));
        }
        s
    }

    fn add_tree(&mut self, sup: &Supervisor, parent: Option<usize>, path: &str) -> Vec<String> {
        let strategy = match sup.strategy {
            SupervisorStrategy::OneForOne => Strategy::OneForOne,
            SupervisorStrategy::AllForOne => Strategy::AllForOne,
            SupervisorStrategy::RestForOne => Strategy::RestForOne,
        };
        let me = self.groups.len();
        self.groups.push(Group {
            name: path.to_string(),
            strategy,
            all: Vec::new(),
            parent,
        });
        let mut all: Vec<String> = sup.allocations.clone();
        for a in &sup.allocations {
            self.of.insert(a.clone(), Some((me, strategy)));
        }
        for (i, child) in sup.children.iter().enumerate() {
            all.extend(self.add_tree(child, Some(me), &format!("{path}.children[{i}]")));
        }
        let ordered: Vec<String> = self
            .order
            .iter()
            .filter(|n| all.contains(n))
            .cloned()
            .collect();
        self.groups[me].all = ordered.clone();
        ordered
    }

    /// Whether `allocation` is restarted when it fails (its provider keeps its resources).
    pub fn supervised(&self, allocation: &str) -> bool {
        matches!(self.of.get(allocation), Some(Some(_)))
    }

    /// What to do now that `allocation` failed (at `now`); records the restart it decides.
    pub fn on_failure(&mut self, allocation: &str, now: Instant) -> Decision {
        let Some(Some((mut g, _))) = self.of.get(allocation).cloned() else {
            return Decision::GiveUp(format!(
                "{allocation} has failure_recovery stay_down and no supervisor"
            ));
        };
        // The failed unit at the current level: the allocation, then a whole subtree.
        let mut unit: Vec<String> = vec![allocation.to_string()];
        loop {
            let group = self.groups[g].clone();
            let h = self.history.entry(g).or_default();
            while h.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
                h.pop_front();
            }
            if h.len() < MAX_RESTARTS {
                let n = h.len();
                h.push_back(now);
                let allocations = match group.strategy {
                    Strategy::OneForOne => self.in_order(&unit),
                    Strategy::AllForOne => group.all.clone(),
                    Strategy::RestForOne => {
                        let first = group.all.iter().position(|a| unit.contains(a)).unwrap_or(0);
                        group.all[first..].to_vec()
                    }
                };
                return Decision::Restart {
                    allocations,
                    delay: backoff(n),
                    why: format!(
                        "{} of {} (restart {} of at most {MAX_RESTARTS} in {}s)",
                        group.strategy.name(),
                        group.name,
                        n + 1,
                        WINDOW.as_secs()
                    ),
                };
            }
            match group.parent {
                Some(p) => {
                    unit = group.all.clone();
                    g = p;
                }
                None => {
                    return Decision::GiveUp(format!(
                        "{} restarted {MAX_RESTARTS} times within {}s and {allocation} failed again",
                        group.name,
                        WINDOW.as_secs()
                    ));
                }
            }
        }
    }

    fn in_order(&self, names: &[String]) -> Vec<String> {
        self.order
            .iter()
            .filter(|n| names.contains(n))
            .cloned()
            .collect()
    }
}

/// What of the ensemble's supervision settings this build does not do yet, as deployment
/// notes (said, never silently ignored); `Err` for what would make the deployment fail in a
/// way the deployer cannot see coming (a health check no executor here can run).
pub fn unsupported(e: &Ensemble) -> Result<Vec<String>, String> {
    use nunet_ensemble::Execution;
    use nunet_ensemble::spec::NodeRecovery;
    let mut notes = Vec::new();
    for a in &e.allocations {
        if a.healthcheck.is_some() && !matches!(a.execution, Execution::Docker(_)) {
            return Err(format!(
                "allocations.{}.healthcheck: health checks run inside docker allocations only; \
                 {} uses the {} executor",
                a.name,
                a.name,
                a.execution.executor()
            ));
        }
        if let Some(h) = &a.healthcheck
            && let nunet_ensemble::spec::HealthcheckKind::Http {
                response_type: Some(t),
                ..
            } = &h.check
            && !["string", "text"].contains(&t.to_ascii_lowercase().as_str())
        {
            notes.push(format!(
                "health: allocations.{}.healthcheck.response.type {t:?} is not interpreted; \
                 the body is compared as text",
                a.name
            ));
        }
        if let Execution::Docker(d) = &a.execution
            && let Some(p) = d.restart_policy.as_deref().filter(|p| *p != "no")
        {
            notes.push(format!(
                "supervision: allocations.{}.execution.restart_policy {p:?} is not applied; \
                 restarts follow failure_recovery and the supervisor tree",
                a.name
            ));
        }
    }
    for n in &e.nodes {
        if n.failure_recovery == NodeRecovery::Redeploy && n.peer.is_some() {
            notes.push(format!(
                "supervision: nodes.{}.failure_recovery redeploy cannot move a node pinned to \
                 peer {}; a lost provider fails the deployment",
                n.name,
                n.peer.as_deref().unwrap_or_default()
            ));
        }
        if n.redundancy > 0 && n.peer.is_some() {
            notes.push(format!(
                "supervision: nodes.{}.redundancy {}: a node pinned to peer {} has no \
                 standby elsewhere; none are placed",
                n.name,
                n.redundancy,
                n.peer.as_deref().unwrap_or_default()
            ));
        }
    }
    Ok(notes)
}

/// The pause before a restart when `n` restarts happened in the window already.
pub fn backoff(n: usize) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(n - 1).unwrap_or(u32::MAX).min(16);
    FIRST_BACKOFF.saturating_mul(1 << exp).min(MAX_BACKOFF)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ensemble(extra_alloc: &str, tail: &str) -> (Ensemble, Vec<String>) {
        let alloc = |n: &str, more: &str| {
            format!(
                "  {n}:\n    executor: docker\n    type: service\n    resources: {{cpu: {{cores: 0.1}}, ram: {{size: 16MiB}}, disk: {{size: 10MiB}}}}\n    execution: {{type: docker, image: busybox}}\n{more}"
            )
        };
        let yaml = format!(
            "version: V1\nallocations:\n{}{}{}{}nodes:\n  n:\n    allocations: [db, api, web, cache]\n{tail}",
            alloc("db", extra_alloc),
            alloc("api", "    depends_on: [db]\n"),
            alloc("web", "    depends_on: [api]\n"),
            alloc("cache", ""),
        );
        let e = nunet_ensemble::parse_str(&yaml, &Default::default())
            .unwrap()
            .ensemble;
        let order = crate::order::start_order(&e).unwrap();
        (e, order)
    }

    fn restarted(d: &Decision) -> Vec<&str> {
        match d {
            Decision::Restart { allocations, .. } => {
                allocations.iter().map(String::as_str).collect()
            }
            Decision::GiveUp(why) => panic!("gave up: {why}"),
        }
    }

    #[test]
    fn allocation_level_policies_pick_who_restarts() {
        let (e, order) = ensemble("    failure_recovery: one_for_one\n", "");
        let mut s = Supervision::new(&e, &order);
        assert!(s.supervised("db") && !s.supervised("web"));
        let t = Instant::now();
        assert_eq!(restarted(&s.on_failure("db", t)), ["db"]);
        assert!(matches!(s.on_failure("web", t), Decision::GiveUp(_)));

        let (e, order) = ensemble("    failure_recovery: rest_for_one\n", "");
        let mut s = Supervision::new(&e, &order);
        let d = s.on_failure("db", t);
        let got = restarted(&d);
        assert_eq!(got[0], "db");
        assert!(got.contains(&"api") && got.contains(&"web"), "{got:?}");
    }

    #[test]
    fn the_tree_decides_for_its_members_and_escalates_to_the_parent() {
        let tail = "supervisor:\n  strategy: OneForOne\n  allocations: [cache]\n  children:\n    - strategy: AllForOne\n      allocations: [db, api]\n";
        let (e, order) = ensemble("", tail);
        let mut s = Supervision::new(&e, &order);
        assert!(s.supervised("db") && s.supervised("cache") && !s.supervised("web"));
        let t = Instant::now();
        let mut delays = Vec::new();
        for i in 0..MAX_RESTARTS {
            let d = s.on_failure("api", t + Duration::from_secs(i as u64));
            assert_eq!(restarted(&d), ["db", "api"]);
            if let Decision::Restart { delay, .. } = d {
                delays.push(delay.as_secs());
            }
        }
        assert_eq!(delays, [0, 1, 2, 4, 8]);
        // The child supervisor is spent: the root restarts its whole subtree (one_for_one
        // at the root treats the subtree as one child).
        let d = s.on_failure("api", t + Duration::from_secs(6));
        assert_eq!(restarted(&d), ["db", "api"]);
        match &d {
            Decision::Restart { why, .. } => assert!(why.contains("of supervisor ("), "{why}"),
            Decision::GiveUp(w) => panic!("{w}"),
        }
        // Outside the window, the child's history no longer counts.
        let later = t + WINDOW + Duration::from_secs(30);
        match s.on_failure("db", later) {
            Decision::Restart { why, delay, .. } => {
                assert!(why.contains("children[0]"), "{why}");
                assert_eq!(delay, Duration::ZERO);
            }
            Decision::GiveUp(w) => panic!("{w}"),
        }
    }

    #[test]
    fn settings_not_implemented_yet_are_said_or_refused() {
        let tail =
            "    redundancy: 1\n    failure_recovery: redeploy\nescalation_strategy: redeploy\n";
        let (e, _) = ensemble("", tail);
        let notes = unsupported(&e).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        let mut pinned = e.clone();
        pinned.nodes[0].peer = Some("12D3KooWPinned".into());
        let notes = unsupported(&pinned).unwrap();
        assert!(
            notes
                .iter()
                .any(|n| n.contains("cannot move a node pinned")),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.contains("nodes.n.redundancy 1: a node pinned")),
            "{notes:?}"
        );
        let (mut e, _) = ensemble("", "");
        if let nunet_ensemble::Execution::Docker(d) = &mut e.allocations[0].execution {
            d.restart_policy = Some("always".into());
        }
        assert!(unsupported(&e).unwrap()[0].contains("restart_policy \"always\""));
        e.allocations[1].healthcheck = Some(nunet_ensemble::spec::Healthcheck {
            check: nunet_ensemble::spec::HealthcheckKind::Http {
                endpoint: ":80/".into(),
                response_type: Some("json".into()),
                response_value: None,
            },
            interval_ms: None,
            timeout_ms: None,
            failure_threshold: None,
        });
        assert!(
            unsupported(&e)
                .unwrap()
                .iter()
                .any(|n| n.contains("response.type \"json\" is not interpreted"))
        );
        e.allocations[1].healthcheck = None;
        e.allocations[0].execution = nunet_ensemble::Execution::Null;
        e.allocations[0].healthcheck = Some(nunet_ensemble::spec::Healthcheck {
            check: nunet_ensemble::spec::HealthcheckKind::Command {
                exec: vec!["true".into()],
                response_value: None,
            },
            interval_ms: None,
            timeout_ms: None,
            failure_threshold: None,
        });
        let err = unsupported(&e).unwrap_err();
        assert!(err.contains("docker allocations only"), "{err}");
    }

    #[test]
    fn a_spent_root_gives_up() {
        let (e, order) = ensemble("    failure_recovery: one_for_one\n", "");
        let mut s = Supervision::new(&e, &order);
        let t = Instant::now();
        for _ in 0..MAX_RESTARTS {
            assert_eq!(restarted(&s.on_failure("db", t)), ["db"]);
        }
        match s.on_failure("db", t) {
            Decision::GiveUp(why) => assert!(why.contains("restarted 5 times"), "{why}"),
            d => panic!("{d:?}"),
        }
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
