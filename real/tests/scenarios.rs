//! The store scenarios of `core/tests/scenarios/*.scn`, unchanged, against
//! the real master (one mounted segment of the scenario's capacity).

use moonlab_core::store::scenario::run;
use moonlab_real::master::scenario::MasterStore;
mod common;

fn run_on_master(text: &str, name: &str) -> Result<(), String> {
    let mut built: Option<String> = None;
    let r = run(text, name, &mut |s| match MasterStore::new(s) {
        Ok(m) => Box::new(m),
        Err(e) => {
            built = Some(e);
            Box::new(MasterStore::new(&Default::default()).expect("default setup"))
        }
    });
    if let Some(e) = built {
        return Err(format!("{name}: {e}"));
    }
    r.map_err(|e| e.to_string())
}

#[test]
fn every_core_scenario_holds_on_the_master() {
    let mut failures = Vec::new();
    for (name, text) in common::core_scenarios() {
        if let Err(e) = run_on_master(&text, &name) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_wrong_expectation_fails_on_the_master_too() {
    let text = "store capacity=4KiB lease=10s\nput a 1KiB\nread a\nremove a\n";
    let e = run_on_master(text, "wrong.scn").unwrap_err();
    assert_eq!(
        e,
        "wrong.scn:4: remove a: failed with `leased`, expected success"
    );
}
