//! The store scenarios of `core/tests/scenarios/*.scn`, unchanged, against
//! the real master (one mounted segment of the scenario's capacity).

use moonlab_core::store::scenario::run;
use moonlab_real::master::scenario::MasterStore;
use std::path::Path;

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
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "scn"))
        .collect();
    files.sort();
    assert!(files.len() >= 14, "scenario files missing: {files:?}");
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
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
