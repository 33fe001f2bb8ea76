//! The order in which an ensemble's allocations start: every allocation after the ones it
//! `depends_on` and the ones whose outputs its inputs name, otherwise in the order the ensemble lists them (NuNet starts them in
//! topological layers; one after the other is that order, flattened). Dependencies on
//! allocations that are not in the ensemble are ignored here (the validator rejects them).

use nunet_ensemble::Ensemble;

/// Allocation names of `e`, dependencies first; an error names the allocations caught in a
/// cycle.
pub fn start_order(e: &Ensemble) -> Result<Vec<String>, String> {
    // An input from another allocation's output orders like a dependency (the start itself
    // also waits for that allocation to complete: see `Engine::start_in_order`).
    let deps: Vec<(&str, Vec<String>)> = e
        .allocations
        .iter()
        .map(|a| {
            let mut d = a.depends_on.clone();
            d.extend(a.producers().map(str::to_string));
            (a.name.as_str(), d)
        })
        .collect();
    let allocs: Vec<(&str, &[String])> = deps.iter().map(|(n, d)| (*n, d.as_slice())).collect();
    order_of(&allocs)
}

/// [`start_order`] over `(name, depends_on)` pairs, in listing order.
pub fn order_of(allocs: &[(&str, &[String])]) -> Result<Vec<String>, String> {
    let names: Vec<&str> = allocs.iter().map(|(n, _)| *n).collect();
    let mut order: Vec<String> = Vec::with_capacity(names.len());
    while order.len() < names.len() {
        let before = order.len();
        for (name, deps) in allocs {
            let ready = deps
                .iter()
                .all(|d| order.contains(d) || !names.contains(&d.as_str()));
            if ready && !order.iter().any(|o| o == name) {
                order.push(name.to_string());
            }
        }
        if order.len() == before {
            let stuck: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| !order.iter().any(|o| o == n))
                .collect();
            return Err(format!(
                "depends_on has a cycle among: {}",
                stuck.join(", ")
            ));
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn order(deps: &[(&str, &[&str])]) -> Result<Vec<String>, String> {
        let owned: Vec<(&str, Vec<String>)> = deps
            .iter()
            .map(|(n, d)| (*n, d.iter().map(|s| s.to_string()).collect()))
            .collect();
        let pairs: Vec<(&str, &[String])> = owned.iter().map(|(n, d)| (*n, d.as_slice())).collect();
        order_of(&pairs)
    }

    #[test]
    fn dependencies_start_first_and_listing_order_breaks_ties() {
        let got = order(&[
            ("app", &["db", "cache"]),
            ("cache", &["db"]),
            ("db", &[]),
            ("tool", &["gone"]),
        ]);
        assert_eq!(got.unwrap(), ["db", "tool", "cache", "app"]);
    }

    #[test]
    fn a_cycle_is_an_error_that_names_its_members() {
        let err = order(&[("a", &["b"]), ("b", &["a"]), ("c", &[])]).unwrap_err();
        assert!(err.ends_with("among: a, b"), "{err}");
    }
}
