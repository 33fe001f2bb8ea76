//! Ensemble specs: the YAML/JSON text `nunet validate` / `nunet deploy` read (anchors,
//! merge keys, placeholders, units, every validation rule), and the decoded ensemble JSON
//! the daemon accepts on `/dms/deployment/new`, followed by what the orchestrator computes
//! from it first (summary, placement problem, start order). Never panics; an ensemble that
//! validates survives the trip to the daemon unchanged.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use nunet_ensemble::{Context, Ensemble, parse_str, summarize};

fn context() -> &'static Context {
    // No variables, and `${file:…}` relative to a directory that does not exist.
    static C: OnceLock<Context> = OnceLock::new();
    C.get_or_init(|| Context::with_vars(HashMap::new(), "/nonexistent/nunet-fuzz"))
}

/// What the orchestrator derives from a received ensemble before placing it.
fn plan(e: &Ensemble) {
    let _ = summarize(e);
    let problem = nunet_placement::Problem::from_ensemble(e);
    for n in &e.nodes {
        let _ = e.node_resources(n);
        let _ = problem.node_index(&n.name);
    }
    let _ = nunet_orchestrator::order::start_order(e);
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(parsed) = parse_str(text, context())
    {
        let e = &parsed.ensemble;
        plan(e);
        // `nunet deploy` sends the decoded ensemble as JSON; the daemon decodes it back.
        let v = serde_json::to_value(e).expect("an ensemble encodes");
        let back: Ensemble = serde_json::from_value(v).expect("an encoded ensemble decodes");
        assert_eq!(&back, e, "the ensemble changed on its way to the daemon");
        let bytes = serde_json::to_vec(e).expect("an ensemble encodes");
        serde_json::from_slice::<Ensemble>(&bytes).expect("the ensemble's JSON decodes");
    }
    // The daemon's side: any JSON in the request's `ensemble` field.
    if let Ok(e) = serde_json::from_slice::<Ensemble>(data) {
        plan(&e);
    }
});
