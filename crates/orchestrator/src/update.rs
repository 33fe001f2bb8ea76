//! Live updates of a running deployment (`/dms/node/deployment/update`, `nunet deployment
//! update`): the changed ensemble is compared with the running one allocation by allocation
//! ([`diff`]), and only the difference is applied.
//!
//! 1. **Additions** (new allocations on a node that stays: committed and allocated on its
//!    provider; new nodes: a bid round each). If any fails, all of them are reverted and the
//!    deployment runs on unchanged: the update is refused as a whole.
//! 2. **Removals** (allocations and nodes gone, and the old version of changed ones): stopped
//!    and released on their providers (a revert of those allocation ids only).
//! 3. **Replacements**: a changed allocation (its execution, resources, ports, provisioning,
//!    health check) starts anew on the same provider; a node whose `peer` or `location`
//!    changed is placed anew by a bid round. What fails here is said in the reply and the
//!    events; the rest of the deployment runs on.
//! 4. The subnet plan keeps the address of every allocation that stays and gives new ones
//!    free addresses; every provider gets it; what waits to start is started in `depends_on`
//!    order. Untouched allocations keep their container and address.
//!
//! It only sends actor messages; supervision is held off while an update runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nunet_ensemble::Ensemble;
use nunet_protocol::calls::{Revert, SubnetCreate};
use nunet_protocol::{DeploymentStatus, JOIN_ALLOCATION, PortForward, RevertRequest};

use crate::engine::{BID_COLLECT, Engine, RoundError, allocation_request, bid_of};
use crate::now_ms;

/// What a live update changes, by node and allocation name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Nodes that are new.
    pub added_nodes: Vec<String>,
    /// Nodes that are gone.
    pub removed_nodes: Vec<String>,
    /// Nodes whose `peer` or `location` changed: placed anew.
    pub moved_nodes: Vec<String>,
    /// (node, allocation) new on a node that stays.
    pub added: Vec<(String, String)>,
    /// (node, allocation) gone from a node that stays.
    pub removed: Vec<(String, String)>,
    /// (node, allocation) on a node that stays whose request changed: started anew.
    pub changed: Vec<(String, String)>,
}

impl Diff {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Nodes whose allocations change (their standbys no longer match).
    pub fn touched_nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .removed_nodes
            .iter()
            .chain(&self.moved_nodes)
            .cloned()
            .chain(
                self.added
                    .iter()
                    .chain(&self.removed)
                    .chain(&self.changed)
                    .map(|(n, _)| n.clone()),
            )
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// One line for the events and the reply.
    pub fn summary(&self) -> String {
        let list = |v: &[String]| v.join(", ");
        let pairs = |v: &[(String, String)]| {
            v.iter()
                .map(|(n, a)| format!("{n}.{a}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        for (what, s) in [
            ("nodes added", list(&self.added_nodes)),
            ("nodes removed", list(&self.removed_nodes)),
            ("nodes moved", list(&self.moved_nodes)),
            ("allocations added", pairs(&self.added)),
            ("allocations removed", pairs(&self.removed)),
            ("allocations changed", pairs(&self.changed)),
        ] {
            if !s.is_empty() {
                parts.push(format!("{what}: {s}"));
            }
        }
        if parts.is_empty() {
            "nothing changes".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Refuses an ensemble whose names do not identify one thing each (a JSON ensemble can
/// repeat what a YAML map cannot): a node or allocation named twice, a node naming an
/// allocation that does not exist, an allocation on two nodes.
fn shape(e: &Ensemble) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for a in &e.allocations {
        if !seen.insert(a.name.as_str()) {
            return Err(format!("allocation {} is defined twice", a.name));
        }
    }
    let mut nodes = std::collections::BTreeSet::new();
    let mut placed: BTreeMap<&str, &str> = BTreeMap::new();
    for n in &e.nodes {
        if !nodes.insert(n.name.as_str()) {
            return Err(format!("node {} is defined twice", n.name));
        }
        for a in &n.allocations {
            if !seen.contains(a.as_str()) {
                return Err(format!(
                    "nodes.{}.allocations names no allocation {a}",
                    n.name
                ));
            }
            if let Some(other) = placed.insert(a.as_str(), n.name.as_str()) {
                return Err(format!(
                    "allocation {a} is on two nodes ({other} and {})",
                    n.name
                ));
            }
        }
    }
    Ok(())
}

/// Compares the running ensemble `old` of deployment `id` with `new`. Changes that cannot be
/// applied to a running deployment are refused, naming the key.
pub fn diff(id: &str, old: &Ensemble, new: &Ensemble) -> Result<Diff, String> {
    shape(new)?;
    if old.subnet_join != new.subnet_join {
        return Err("subnet.join cannot change on a running deployment".into());
    }
    if old.contracts != new.contracts {
        return Err("contracts cannot change on a running deployment".into());
    }
    let mut d = Diff::default();
    for n in &old.nodes {
        if new.node(&n.name).is_none() {
            d.removed_nodes.push(n.name.clone());
        }
    }
    for n in &new.nodes {
        let Some(o) = old.node(&n.name) else {
            d.added_nodes.push(n.name.clone());
            continue;
        };
        if o.peer != n.peer || o.location != n.location {
            d.moved_nodes.push(n.name.clone());
            continue;
        }
        for a in &o.allocations {
            if !n.allocations.contains(a) {
                d.removed.push((n.name.clone(), a.clone()));
            }
        }
        for a in &n.allocations {
            let Some(spec) = new.allocation(a) else {
                continue;
            };
            match old.allocation(a).filter(|_| o.allocations.contains(a)) {
                None => d.added.push((n.name.clone(), a.clone())),
                Some(before) => {
                    let was = allocation_request(id, old, &o.name, before);
                    let will = allocation_request(id, new, &n.name, spec);
                    if was != will {
                        d.changed.push((n.name.clone(), a.clone()));
                    }
                }
            }
        }
    }
    Ok(d)
}

/// The (provider handle, allocation id) of what step 2 of `d` removes, from the record `old`.
fn removed_by(old: &crate::state::Deployment, d: &Diff) -> Vec<(nunet_actor::Handle, String)> {
    let mut out = Vec::new();
    for (key, a) in &old.manifest.allocations {
        let node = a.node_id.as_str();
        let name = key.rsplit('.').next().unwrap_or(key);
        let gone = d
            .removed_nodes
            .iter()
            .chain(&d.moved_nodes)
            .any(|n| n == node)
            || d.removed
                .iter()
                .chain(&d.changed)
                .any(|(n, x)| n == node && x == name);
        if let (true, Some(m)) = (gone, old.manifest.nodes.get(node)) {
            out.push((m.handle.clone(), a.id.clone()));
        }
    }
    out
}

/// How long a live update may take at most (its bid rounds included).
pub const UPDATE_WINDOW: Duration = Duration::from_secs(120);

impl Engine {
    /// Applies `new` to the running deployment (see the module doc). `Ok` with the summary
    /// of what changed; `Err` when it was refused (nothing changed) or partly failed (said
    /// what).
    /// New nodes are placed within `window` (the caller's patience, at most
    /// [`UPDATE_WINDOW`]).
    pub async fn apply_update(
        self: &Arc<Self>,
        new: Ensemble,
        window: Duration,
    ) -> Result<String, String> {
        let deadline = std::time::Instant::now() + window.min(UPDATE_WINDOW);
        let _held = self.changing.lock().await;
        let rec = self.record().ok_or("record lost")?;
        if rec.status != DeploymentStatus::Running {
            return Err(format!(
                "deployment {} is {}, not running: it cannot be updated",
                rec.id,
                rec.status.as_str()
            ));
        }
        crate::secrets::check_held(&new, self.secrets())?;
        let d = diff(&rec.id, &rec.ensemble, &new)?;
        if d.is_empty() {
            self.update(|r| r.ensemble = new);
            self.event("update: nothing to change");
            return Ok(d.summary());
        }
        self.event(format!("update: {}", d.summary()));
        let old = rec.clone();
        // Standbys of a node that changes no longer match it: the keeper places new ones.
        self.drop_standbys_of(&d.touched_nodes()).await;
        self.update(|r| r.ensemble = new.clone());

        // 1. Additions, all or nothing.
        if let Err(e) = self.add_all(&d, deadline).await {
            let added = self.added_by(&d);
            self.revert_ids(&added).await;
            self.update(|r| {
                r.ensemble = old.ensemble.clone();
                r.manifest.nodes = old.manifest.nodes.clone();
                r.manifest.allocations = old.manifest.allocations.clone();
            });
            self.event(format!(
                "update refused, the deployment runs unchanged: {e}"
            ));
            self.standby_wake.notify_one();
            return Err(format!("update refused (nothing changed): {e}"));
        }

        // 2. Removals.
        let gone = removed_by(&old, &d);
        self.revert_ids(&gone).await;
        self.update(|r| {
            for (node, name) in d.removed.iter().chain(&d.changed) {
                r.manifest.allocations.remove(&format!("{node}.{name}"));
            }
            for node in d.removed_nodes.iter().chain(&d.moved_nodes) {
                r.manifest.nodes.remove(node);
                r.manifest.allocations.retain(|_, a| &a.node_id != node);
            }
        });

        // 3. Replacements.
        let mut problems = Vec::new();
        for (node, name) in &d.changed {
            if let Err(e) = self.add_on_provider(node, std::slice::from_ref(name)).await {
                problems.push(format!(
                    "{node}.{name} was stopped and not started again: {e}"
                ));
            }
        }
        for node in &d.moved_nodes {
            if let Err(e) = self.place_new_node(node, deadline).await {
                problems.push(format!("node {node} was stopped and not placed again: {e}"));
            }
        }

        // 4. Subnet and start.
        if let Err(e) = self.replan_subnet().await {
            problems.push(format!("subnet: {e}"));
        }
        if let Err(RoundError::Retry(e, _) | RoundError::Fatal(e)) = self.start_in_order(None).await
        {
            problems.push(format!("start: {e}"));
        }
        self.standby_wake.notify_one();
        if problems.is_empty() {
            self.event(format!("updated: {}", d.summary()));
            Ok(d.summary())
        } else {
            let why = problems.join("; ");
            self.event(format!("update partly failed: {why}"));
            Err(format!(
                "update partly applied ({}); failed: {why}",
                d.summary()
            ))
        }
    }

    /// New allocations on nodes that stay, then new nodes.
    async fn add_all(&self, d: &Diff, deadline: std::time::Instant) -> Result<(), String> {
        let mut by_node: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (node, name) in &d.added {
            by_node.entry(node).or_default().push(name.clone());
        }
        for (node, names) in by_node {
            self.add_on_provider(node, &names).await?;
        }
        for node in &d.added_nodes {
            self.place_new_node(node, deadline).await?;
        }
        Ok(())
    }

    /// Commits and allocates allocations `names` of node `node` on the provider that runs it.
    async fn add_on_provider(&self, node: &str, names: &[String]) -> Result<(), String> {
        let rec = self.record().ok_or("record lost")?;
        let m = rec
            .manifest
            .nodes
            .get(node)
            .ok_or_else(|| format!("node {node} is not placed"))?;
        let assign = vec![(node.to_string(), bid_of(&rec.id, node, m))];
        let steps = async {
            self.commit_some(&assign, Some(names)).await?;
            self.allocate_some(&assign, Some(names)).await
        };
        steps.await.map_err(|e| match e {
            RoundError::Retry(e, _) | RoundError::Fatal(e) => e,
        })
    }

    /// Places node `node` (new, or moved) by bid rounds of its own until `deadline`:
    /// placed, committed and allocated, not started.
    async fn place_new_node(&self, node: &str, deadline: std::time::Instant) -> Result<(), String> {
        let t0 = std::time::Instant::now();
        let mut excluded: Vec<String> = Vec::new();
        loop {
            let rec = self.record().ok_or("record lost")?;
            let mut skip = rec.placement_exclusions(node);
            skip.extend(excluded.iter().cloned());
            skip.extend(self.fenced());
            let round = rec.rounds + 1;
            self.update(|r| {
                r.rounds = round;
                r.event(
                    now_ms(),
                    format!("round {round}: placing node {node} (update)"),
                );
            });
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let bids = self
                .collect_bids(round, &skip, BID_COLLECT.min(left), Some(node))
                .await;
            let attempt = async {
                let assign = self.place(&bids, &skip, Some(node)).await?;
                self.record_placement(&assign);
                let steps = async {
                    self.commit(&assign).await?;
                    self.allocate(&assign).await
                };
                if let Err(e) = steps.await {
                    self.revert(&assign).await;
                    self.update(|r| {
                        r.manifest.nodes.remove(node);
                        r.manifest.allocations.retain(|_, a| a.node_id != node);
                    });
                    return Err(e);
                }
                Ok(())
            };
            match attempt.await {
                Ok(()) => return Ok(()),
                Err(RoundError::Fatal(e)) => return Err(e),
                Err(RoundError::Retry(e, peers)) => {
                    excluded.extend(peers);
                    if std::time::Instant::now() + Duration::from_millis(500) >= deadline {
                        return Err(format!(
                            "node {node} not placed within {:.0}s: {e}",
                            t0.elapsed().as_secs_f64()
                        ));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The (provider handle, allocation id) of what the update added (after step 1).
    fn added_by(&self, d: &Diff) -> Vec<(nunet_actor::Handle, String)> {
        let Some(rec) = self.record() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, a) in &rec.manifest.allocations {
            let node = a.node_id.as_str();
            let name = key.rsplit('.').next().unwrap_or(key);
            let new = d.added_nodes.iter().any(|n| n == node)
                || d.added.iter().any(|(n, x)| n == node && x == name);
            if let (true, Some(m)) = (new, rec.manifest.nodes.get(node)) {
                out.push((m.handle.clone(), a.id.clone()));
            }
        }
        out
    }

    /// Reverts allocation ids on their providers (one request per provider).
    async fn revert_ids(&self, ids: &[(nunet_actor::Handle, String)]) {
        let Some(rec) = self.record() else { return };
        let mut by_provider: BTreeMap<String, (nunet_actor::Handle, Vec<String>)> = BTreeMap::new();
        for (h, id) in ids {
            by_provider
                .entry(h.did.clone())
                .or_insert_with(|| (h.clone(), Vec::new()))
                .1
                .push(id.clone());
        }
        for (did, (h, ids)) in by_provider {
            let req = RevertRequest {
                ensemble_id: rec.id.clone(),
                allocations: ids.clone(),
            };
            match self.call::<Revert>(&h, &req, Duration::from_secs(30)).await {
                Ok(_) => self.event(format!("removed {} on {did}", ids.join(", "))),
                Err(e) => self.event(format!(
                    "removal of {} on {did} failed: {} (it drops them when it next asks about \
                     them)",
                    ids.join(", "),
                    e.message
                )),
            }
        }
    }

    /// Reverts and forgets the standbys of `nodes`.
    async fn drop_standbys_of(&self, nodes: &[String]) {
        let Some(rec) = self.record() else { return };
        let mut assign: crate::engine::Assignment = Vec::new();
        for n in nodes {
            for s in rec.manifest.standbys.get(n).into_iter().flatten() {
                assign.push((n.clone(), bid_of(&rec.id, n, &s.node)));
            }
        }
        if assign.is_empty() {
            return;
        }
        self.update(|r| {
            for n in nodes {
                r.manifest.standbys.remove(n);
            }
        });
        self.revert(&assign).await;
    }

    /// Sends every provider of the deployment the subnet plan for the allocations it now
    /// has (same addresses for those that stay), and records the new addresses.
    async fn replan_subnet(&self) -> Result<(), String> {
        let rec = self.record().ok_or("record lost")?;
        let Some(old) = &rec.subnet else {
            return Ok(()); // no subnet for this deployment
        };
        let mut members = Vec::new();
        let mut ports = Vec::new();
        for a in rec.manifest.allocations.values() {
            let Some(node) = rec.manifest.nodes.get(&a.node_id) else {
                continue;
            };
            let Some(spec) = rec
                .ensemble
                .allocations_of(&a.node_id)
                .into_iter()
                .find(|s| nunet_protocol::allocation_id(&rec.id, &a.node_id, &s.name) == a.id)
            else {
                continue;
            };
            if !matches!(spec.execution.executor(), "docker" | "firecracker" | "wasm") {
                continue;
            }
            let dns = if spec.dns_name.is_empty() {
                spec.name.clone()
            } else {
                spec.dns_name.clone()
            };
            members.push((a.id.clone(), dns, node.peer.clone()));
            if let Some(n) = rec.ensemble.node(&a.node_id) {
                for p in n.ports.iter().filter(|p| p.allocation == spec.name) {
                    ports.push(PortForward {
                        public: p.public,
                        private: p.private,
                        allocation: a.id.clone(),
                    });
                }
            }
        }
        if let Some(me) = old.member(JOIN_ALLOCATION) {
            members.push((me.allocation.clone(), me.dns_name.clone(), me.peer.clone()));
        }
        let plan = nunet_protocol::subnet::replan(old, &members, ports)?;
        let mut failed = Vec::new();
        let hosts: BTreeMap<String, nunet_actor::Handle> = rec
            .manifest
            .nodes
            .values()
            .filter(|m| plan.members.iter().any(|x| x.peer == m.peer))
            .map(|m| (m.peer.clone(), m.handle.clone()))
            .collect();
        for (peer, h) in hosts {
            if let Err(e) = self
                .call::<SubnetCreate>(&h, &plan, Duration::from_secs(30))
                .await
            {
                failed.push(format!("{peer}: {}", e.message));
            }
        }
        self.record_plan(&plan);
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ensemble(allocs: &[(&str, &str)], nodes: &[(&str, &[&str])]) -> Ensemble {
        let mut y = String::from("version: V1\nallocations:\n");
        for (name, image) in allocs {
            y.push_str(&format!(
                "  {name}:\n    executor: docker\n    type: service\n    resources: {{cpu: \
                 {{cores: 0.1}}, ram: {{size: 16MiB}}, disk: {{size: 10MiB}}}}\n    \
                 execution: {{type: docker, image: {image}}}\n"
            ));
        }
        y.push_str("nodes:\n");
        for (n, a) in nodes {
            y.push_str(&format!("  {n}:\n    allocations: [{}]\n", a.join(", ")));
        }
        nunet_ensemble::parse_str(&y, &Default::default())
            .expect("ensemble")
            .ensemble
    }

    #[test]
    fn a_diff_names_every_kind_of_change_and_nothing_else() {
        let old = ensemble(
            &[("a", "x"), ("b", "x"), ("c", "x"), ("d", "x")],
            &[("n1", &["a", "b"]), ("n2", &["c"]), ("n3", &["d"])],
        );
        assert!(diff("e", &old, &old).unwrap().is_empty());
        // n1: b removed, e added, a changed (image); n2 gone; n4 new; n3 untouched.
        let new = ensemble(
            &[("a", "y"), ("d", "x"), ("e", "x"), ("f", "x")],
            &[("n1", &["a", "e"]), ("n3", &["d"]), ("n4", &["f"])],
        );
        let d = diff("e", &old, &new).unwrap();
        let p = |n: &str, a: &str| (n.to_string(), a.to_string());
        assert_eq!(d.added, vec![p("n1", "e")]);
        assert_eq!(d.removed, vec![p("n1", "b")]);
        assert_eq!(d.changed, vec![p("n1", "a")]);
        assert_eq!(d.removed_nodes, vec!["n2".to_string()]);
        assert_eq!(d.added_nodes, vec!["n4".to_string()]);
        assert!(d.moved_nodes.is_empty());
        assert_eq!(d.touched_nodes(), vec!["n1".to_string(), "n2".to_string()]);
        let s = d.summary();
        assert!(
            s.contains("allocations changed: n1.a") && s.contains("nodes added: n4"),
            "{s}"
        );
    }

    #[test]
    fn a_pinned_peer_that_changes_moves_the_node_and_subnet_join_cannot_change() {
        let old = ensemble(&[("a", "x")], &[("n1", &["a"])]);
        let mut new = old.clone();
        new.nodes[0].peer = Some("12D3KooWOther".into());
        let d = diff("e", &old, &new).unwrap();
        assert_eq!(d.moved_nodes, vec!["n1".to_string()]);
        assert!(d.changed.is_empty() && d.added.is_empty());
        let mut join = old.clone();
        join.subnet_join = !old.subnet_join;
        assert!(diff("e", &old, &join).unwrap_err().contains("subnet.join"));
        // Names that do not identify one thing each are refused, naming it.
        let mut twice = old.clone();
        twice.nodes.push(twice.nodes[0].clone());
        assert!(
            diff("e", &old, &twice)
                .unwrap_err()
                .contains("node n1 is defined twice")
        );
        let mut unknown = old.clone();
        unknown.nodes[0].allocations.push("ghost".into());
        assert!(
            diff("e", &old, &unknown)
                .unwrap_err()
                .contains("no allocation ghost")
        );
    }
}
