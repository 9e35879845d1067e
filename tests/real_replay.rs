//! `moonlab real replay` end to end, as a user runs it: the replay starts
//! its own cluster (a master, prefill and decode workers as processes),
//! the Conductor places a slice of the conversation trace with core's
//! scheduler, the workers move and verify real KV bytes, and the run
//! folder matches `moonlab sim`'s. Checked from outside: every request
//! served once, TTFT's parts add up, no worker waited less than the cost
//! model's time, every byte read was the byte written, and the KV that
//! reached the decode nodes is exactly the prompts' scaled bytes.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

fn moonlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_moonlab"))
}

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/real/testbed/replay.yaml");
const TRACE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/traces/data/conversation_trace.jsonl"
);

fn slice(dir: &Path, n: usize) -> std::path::PathBuf {
    let text = std::fs::read_to_string(TRACE).unwrap();
    let lines: Vec<&str> = text.lines().take(n).collect();
    let p = dir.join("slice.jsonl");
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn rows(path: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            header
                .iter()
                .zip(l.split(','))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn f(row: &HashMap<String, String>, k: &str) -> f64 {
    row[k]
        .parse()
        .unwrap_or_else(|_| panic!("{k}: `{}`", row[k]))
}

#[test]
fn a_trace_slice_replays_on_real_bytes_and_writes_the_simulators_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let trace = slice(dir.path(), 24);
    let out = dir.path().join("real");
    let run = moonlab()
        .args(["real", "replay", "--trace"])
        .arg(&trace)
        .args(["--config", CONFIG, "--set", "model=llama3-8b", "--out"])
        .arg(&out)
        .args(["--table-format", "csv", "--quiet"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "replay failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    for f in ["requests.csv", "summary.json", "config.yaml", "replay.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let sim = dir.path().join("sim");
    let s = moonlab()
        .args(["sim", "--trace"])
        .arg(&trace)
        .args(["--config", CONFIG, "--set", "model=llama3-8b", "--out"])
        .arg(&sim)
        .args(["--table-format", "csv", "--quiet"])
        .output()
        .unwrap();
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let real = rows(&out.join("requests.csv"));
    let simulated = rows(&sim.join("requests.csv"));
    // The same table: the same columns, one row per request.
    assert_eq!(real.len(), 24);
    assert_eq!(simulated.len(), 24);
    assert_eq!(
        real[0].keys().collect::<std::collections::BTreeSet<_>>(),
        simulated[0]
            .keys()
            .collect::<std::collections::BTreeSet<_>>()
    );
    let text = std::fs::read_to_string(TRACE).unwrap();
    let trace_rows: Vec<serde_json::Value> = text
        .lines()
        .take(24)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut kv_tokens = 0u64;
    for (i, r) in real.iter().enumerate() {
        assert_eq!(r["id"], i.to_string());
        assert_eq!(r["served"], "true", "request {i}: {r:?}");
        let parts = f(r, "queue_s") + f(r, "prefill_s") + f(r, "transfer_s") + f(r, "load_s");
        assert!(
            (parts - f(r, "ttft_s")).abs() < 2e-3,
            "request {i}: TTFT {} but its parts add up to {parts}",
            f(r, "ttft_s")
        );
        // A worker never finishes before the model's time.
        assert!(
            f(r, "prefill_s") + 1e-6 >= f(r, "compute_s"),
            "request {i}: prefill {} shorter than its compute {}",
            f(r, "prefill_s"),
            f(r, "compute_s")
        );
        let input = trace_rows[i]["input_length"].as_u64().unwrap();
        let output = trace_rows[i]["output_length"].as_u64().unwrap();
        assert_eq!(f(r, "input_tokens") as u64, input);
        if output > 1 {
            kv_tokens += input;
            assert!(f(r, "decode_s") > 0.0, "request {i} decoded in no time");
        }
    }
    let replay: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("replay.json")).unwrap()).unwrap();
    assert_eq!(replay["wrong_bytes"], 0, "{replay}");
    assert_eq!(replay["failures"].as_array().unwrap().len(), 0, "{replay}");
    // llama3-8b: 128 KiB of KV per token, scaled by 1e-4 → 14 bytes.
    let bpt = (131072f64 * 1e-4).ceil() as u64;
    assert_eq!(replay["kv_bytes"].as_u64().unwrap(), kv_tokens * bpt);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["served"], 24);
}

#[test]
fn configurations_the_real_replay_does_not_model_are_refused_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let trace = slice(dir.path(), 2);
    for (set, key) in [
        ("deployment=colocated", "deployment"),
        ("prefill.ssd_cache_blocks=10", "prefill.ssd_cache_blocks"),
        ("store.eviction=belady", "store.eviction"),
        ("real.bytes_scale=2", "real.bytes_scale"),
    ] {
        let r = moonlab()
            .args(["real", "replay", "--trace"])
            .arg(&trace)
            .args(["--config", CONFIG, "--set", set, "--out"])
            .arg(dir.path().join("x"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{set} accepted");
        assert!(err.contains(key), "{set}: {err}");
        assert!(!dir.path().join("x").exists(), "{set} left a run folder");
    }
}

#[test]
fn a_cluster_folder_that_is_not_there_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let trace = slice(dir.path(), 2);
    let r = moonlab()
        .args(["real", "replay", "--trace"])
        .arg(&trace)
        .args(["--config", CONFIG, "--cluster"])
        .arg(dir.path().join("nowhere"))
        .arg("--out")
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        err.contains("master.addr") && err.contains("cluster up"),
        "{err}"
    );
}
