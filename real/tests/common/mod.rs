//! Shared by the real backend's tests: the core store scenarios.

use std::path::Path;

/// Every `core/tests/scenarios/*.scn` file, sorted: (file name, text).
pub fn core_scenarios() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "scn"))
        .collect();
    files.sort();
    assert!(files.len() >= 14, "scenario files missing: {files:?}");
    files
        .iter()
        .map(|f| {
            (
                f.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read_to_string(f).unwrap(),
            )
        })
        .collect()
}
