//! A deployment's secrets (credentials of object stores that its allocations' inputs and
//! outputs name): checked against the ensemble when it is created, held by its engine in
//! memory only (never in the deployment record, so never on disk or in a status), and
//! handed to a provider only with the allocations that name them.

use std::collections::BTreeMap;

use nunet_ensemble::Ensemble;
use nunet_ensemble::data::S3Credentials;
use nunet_ensemble::volumes::valid_name;
use nunet_protocol::AllocationRequest;

/// Secrets by name.
pub type Secrets = BTreeMap<String, S3Credentials>;

/// Most secrets one deployment passes.
pub const MAX_SECRETS: usize = 32;

/// The `credentials` names of an allocation's inputs and outputs, with their field paths.
fn named(e: &Ensemble) -> Vec<(String, &str)> {
    let mut v = Vec::new();
    for a in &e.allocations {
        let base = format!("allocations.{}", a.name);
        for (i, x) in a.inputs.iter().enumerate() {
            if let Some(c) = &x.credentials {
                v.push((format!("{base}.inputs[{i}].credentials"), c.as_str()));
            }
        }
        for (i, x) in a.outputs.iter().enumerate() {
            if let Some(c) = &x.credentials {
                v.push((format!("{base}.outputs[{i}].credentials"), c.as_str()));
            }
        }
    }
    v
}

/// Every name the ensemble uses is given, and every secret given is used.
pub fn check(e: &Ensemble, secrets: &Secrets) -> Result<(), String> {
    if secrets.len() > MAX_SECRETS {
        return Err(format!(
            "{} secrets; a deployment passes at most {MAX_SECRETS}",
            secrets.len()
        ));
    }
    let used = named(e);
    let mut problems = Vec::new();
    for (path, name) in &used {
        if !secrets.contains_key(*name) {
            problems.push(format!(
                "{path} names the secret {name:?}, which the deployment was not given (nunet deploy --secret {name}=FILE)"
            ));
        }
    }
    for name in secrets.keys() {
        if !valid_name(name) {
            problems.push(format!(
                "secret name {name:?} is not a name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)"
            ));
        } else if !used.iter().any(|(_, n)| n == name) {
            problems.push(format!(
                "secret {name:?} is given but no input or output names it as credentials"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Every secret an updated ensemble names is one the deployment holds (an update carries
/// no secrets of its own).
pub fn check_held(e: &Ensemble, secrets: &Secrets) -> Result<(), String> {
    let missing: Vec<String> = named(e)
        .into_iter()
        .filter(|(_, n)| !secrets.contains_key(*n))
        .map(|(path, n)| format!("{path} names the secret {n:?}, which this deployment does not hold (an update cannot add secrets; deploy anew with --secret)"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

/// The secrets `r`'s inputs and outputs name that `secrets` holds (a deployment restored
/// after a restart holds none; its provider then says which are missing).
pub(crate) fn for_allocation(r: &AllocationRequest, secrets: &Secrets) -> Secrets {
    r.inputs
        .iter()
        .filter_map(|i| i.credentials.as_ref())
        .chain(r.outputs.iter().filter_map(|o| o.credentials.as_ref()))
        .filter_map(|n| Some((n.clone(), secrets.get(n)?.clone())))
        .collect()
}
