//! The store scenarios of `tests/scenarios/*.scn` (the language is in
//! `moonlab_core::store::scenario`) run against a core `Segment`. The real
//! master runs the same files against itself.

use moonlab_core::store::scenario::{run, SegmentStore};
use std::path::Path;

#[test]
fn every_scenario_holds_on_a_segment() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
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
        if let Err(e) = run(&text, &name, &mut |s| Box::new(SegmentStore::new(s))) {
            failures.push(e.to_string());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_wrong_expectation_fails_with_its_line() {
    // The scenarios above would pass vacuously if the runner ignored
    // expectations: a deliberately wrong one must fail.
    let text = "store capacity=4KiB lease=10s\nput a 1KiB\nread a\nremove a\n";
    let e = run(text, "wrong.scn", &mut |s| Box::new(SegmentStore::new(s))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "wrong.scn:4: remove a: failed with `leased`, expected success"
    );
}
