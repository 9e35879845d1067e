//! `moonlab run`, `merge` and `table` end to end: a spec's points as run
//! folders, the combined table, resuming after a kill, shards merged to
//! the same bytes as one run, and spec errors that name the key.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn moonlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moonlab"))
        .args(args)
        .current_dir(ROOT)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> (String, String) {
    let o = moonlab(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{args:?} failed: {err}");
    (String::from_utf8(o.stdout).unwrap(), err)
}

fn fails(args: &[&str]) -> String {
    let o = moonlab(args);
    assert!(!o.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A spec in `dir`, its traces given by absolute path.
fn spec(dir: &Path, name: &str, body: &str) -> PathBuf {
    let conv = Path::new(ROOT).join("traces/data/conversation_trace.jsonl");
    let config = Path::new(ROOT).join("experiments/configs/fig5-scheduling.yaml");
    let text = body.replace("CONV", s(&conv)).replace("CONFIG", s(&config));
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn points_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("table."))
        .collect();
    v.sort();
    v
}

const TINY: &str = "experiments/tests/tiny-sweep.yaml";

#[test]
fn a_spec_runs_every_point_into_its_folder_and_one_table() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let (stdout, stderr) = ok(&[
        "run",
        TINY,
        "--results",
        s(&out),
        "--quiet",
        "--table-format",
        "csv",
    ]);
    assert!(stdout.contains("8 rows"), "{stdout}");
    assert!(stderr.is_empty(), "--quiet: {stderr}");
    let points = points_in(&out);
    assert_eq!(points.len(), 8, "{points:?}");
    for p in &points {
        for f in [
            "point.json",
            "summary.json",
            "config.yaml",
            "requests.csv",
            "timeseries.csv",
            "replicas.csv",
        ] {
            assert!(out.join(p).join(f).is_file(), "{p}/{f}");
        }
        let point: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(p).join("point.json")).unwrap())
                .unwrap();
        assert_eq!(point["id"], p.as_str());
        // The point's overrides are in its config.yaml.
        let config = std::fs::read_to_string(out.join(p).join("config.yaml")).unwrap();
        let scheduler = point["params"]["scheduler"].as_str().unwrap();
        assert!(config.contains(&format!("name: {scheduler}")), "{config}");
        assert!(
            config.contains(&format!("seed: {}", point["seed"])),
            "{config}"
        );
    }
    let csv = std::fs::read_to_string(out.join("table.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 9);
    assert!(
        lines[0].starts_with("point_id,trace,scheduler,rate_scale,seed,requests,served,"),
        "{}",
        lines[0]
    );
    assert!(!lines[0].contains("wall_s"), "wall time is not a result");
    // Rows follow the spec: grid keys in order, seeds innermost.
    let keys: Vec<String> = lines[1..]
        .iter()
        .map(|l| l.split(',').skip(2).take(3).collect::<Vec<_>>().join(","))
        .collect();
    assert_eq!(
        keys,
        [
            "random,1,0",
            "random,1,1",
            "random,2,0",
            "random,2,1",
            "kvcache-centric,1,0",
            "kvcache-centric,1,1",
            "kvcache-centric,2,0",
            "kvcache-centric,2,1"
        ]
    );
    // Each row is its point's summary: the table holds what the runs say.
    for line in &lines[1..] {
        let id = line.split(',').next().unwrap();
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(id).join("summary.json")).unwrap(),
        )
        .unwrap();
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[5], summary["requests"].to_string());
        assert_eq!(
            cells[9].parse::<f64>().unwrap(),
            summary["ttft_mean_s"].as_f64().unwrap()
        );
    }
    // Rate scale 2 halves every arrival time.
    let last_arrival = |rate: &str| -> f64 {
        let line = lines[1..]
            .iter()
            .find(|l| l.contains(&format!(",random,{rate},0,")))
            .unwrap();
        let id = line.split(',').next().unwrap();
        let t = std::fs::read_to_string(out.join(id).join("requests.csv")).unwrap();
        let col = t
            .lines()
            .next()
            .unwrap()
            .split(',')
            .position(|c| c == "arrival_s")
            .unwrap();
        t.lines()
            .skip(1)
            .map(|l| l.split(',').nth(col).unwrap().parse::<f64>().unwrap())
            .fold(0.0, f64::max)
    };
    let (one, two) = (last_arrival("1"), last_arrival("2"));
    assert!(one > 60.0 && (two - one / 2.0).abs() < 1e-6, "{one} {two}");

    // A rerun skips what is done, and writes the same table.
    let before = std::fs::read(out.join("table.parquet")).unwrap();
    let (_, stderr) = ok(&["run", TINY, "--results", s(&out)]);
    assert!(
        stderr.contains("8 points, 8 finished, 0 to run"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(out.join("table.parquet")).unwrap(), before);
    // --force reruns them all, to the same table.
    let (_, stderr) = ok(&["run", TINY, "--results", s(&out), "--force"]);
    assert!(
        stderr.contains("8 points, 8 finished, 8 to run"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(out.join("table.parquet")).unwrap(), before);

    // Summaries across seeds, in three formats.
    let (md, _) = ok(&["table", s(&out)]);
    assert!(
        md.starts_with("| trace | scheduler | rate_scale | n | ttft_mean_s |"),
        "{md}"
    );
    assert_eq!(
        md.lines()
            .filter(|l| l.starts_with("| conversation |"))
            .count(),
        4
    );
    assert!(md.contains("| conversation | random | 1 | 2 | "), "{md}");
    let (csv, _) = ok(&[
        "table",
        s(&out.join("table.parquet")),
        "--by",
        "scheduler",
        "--metrics",
        "ttft_mean_s,hit_rate",
        "--format",
        "csv",
    ]);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "scheduler,n,ttft_mean_s_mean,ttft_mean_s_ci95,hit_rate_mean,hit_rate_ci95"
    );
    assert!(rows[1].starts_with("random,4,") && rows[2].starts_with("kvcache-centric,4,"));
    let (tex, _) = ok(&["table", s(&out), "--format", "latex"]);
    assert!(
        tex.contains("\\toprule") && tex.contains("\\bottomrule"),
        "{tex}"
    );
    assert!(tex.contains("$\\pm$") || tex.contains("\\pm"), "{tex}");
    let e = fails(&["table", s(&out), "--metrics", "nope"]);
    assert!(e.contains("--metrics nope: no such column"), "{e}");
    let e = fails(&["table", s(&tmp.path().join("none"))]);
    assert!(e.contains("cannot read"), "{e}");
}

#[test]
fn shards_merge_to_the_same_table_as_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    ok(&["run", TINY, "--results", s(&whole), "--quiet"]);
    // Three shards, each in its own folder (no shared file system).
    let mut dirs = Vec::new();
    let mut seen = 0;
    for i in 0..3 {
        let d = tmp.path().join(format!("shard{i}"));
        let shard = format!("{i}/3");
        let (stdout, _) = ok(&[
            "run",
            TINY,
            "--results",
            s(&d),
            "--shard",
            &shard,
            "--quiet",
        ]);
        assert!(stdout.is_empty(), "a shard writes no table: {stdout}");
        assert!(!d.join("table.parquet").exists());
        seen += points_in(&d).len();
        dirs.push(d);
    }
    assert_eq!(seen, 8, "the shards split the points exactly");
    // Merging before every shard is in names what is missing.
    let merged = tmp.path().join("merged");
    let e = fails(&[
        "merge",
        TINY,
        "--results",
        s(&merged),
        "--from",
        s(&dirs[0]),
    ]);
    assert!(e.contains("5 of 8 points have no finished run"), "{e}");
    assert!(!merged.join("table.parquet").exists());
    ok(&[
        "merge",
        TINY,
        "--results",
        s(&merged),
        "--from",
        s(&dirs[1]),
        "--from",
        s(&dirs[2]),
    ]);
    for f in ["table.parquet", "table.csv"] {
        assert_eq!(
            std::fs::read(merged.join(f)).unwrap(),
            std::fs::read(whole.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(points_in(&merged), points_in(&whole));
    // Shards writing into one shared folder merge in place.
    let shared = tmp.path().join("shared");
    for i in 0..2 {
        ok(&[
            "run",
            TINY,
            "--results",
            s(&shared),
            "--shard",
            &format!("{i}/2"),
            "--quiet",
        ]);
    }
    ok(&["merge", TINY, "--results", s(&shared)]);
    assert_eq!(
        std::fs::read(shared.join("table.csv")).unwrap(),
        std::fs::read(whole.join("table.csv")).unwrap()
    );
    let e = fails(&["run", TINY, "--shard", "3/3"]);
    assert!(e.contains("expected 0 <= I < N"), "{e}");
}

#[cfg(unix)]
#[test]
#[allow(clippy::disallowed_methods)] // a deadline for the wait, not a result
fn a_killed_sweep_resumes_without_redoing_finished_points() {
    let tmp = tempfile::tempdir().unwrap();
    let body = "config: CONFIG\ntraces: [{path: CONV, first: 2500}]\nset: {prefill.instances: 4, decode.instances: 4, decode.fast_forward: false}\ngrid: {scheduler: [random, round-robin, least-loaded, local-cache-aware, kvcache-centric]}\nseeds: [0, 1]\n";
    let spec = spec(tmp.path(), "slow.yaml", body);
    let out = tmp.path().join("r");
    for signal in ["-KILL", "-INT"] {
        let _ = std::fs::remove_dir_all(&out);
        let mut child = Command::new(env!("CARGO_BIN_EXE_moonlab"))
            .args([
                "run",
                s(&spec),
                "--results",
                s(&out),
                "--threads",
                "1",
                "--quiet",
            ])
            .current_dir(ROOT)
            .spawn()
            .unwrap();
        // Wait for two finished points, then kill the run.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        loop {
            let done = out.is_dir()
                && points_in(&out)
                    .iter()
                    .filter(|p| !p.starts_with('.'))
                    .count()
                    >= 2;
            if done || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        assert!(!status.success(), "the run should have been killed midway");
        assert!(!out.join("table.parquet").exists());
        let finished: Vec<String> = points_in(&out)
            .into_iter()
            .filter(|p| !p.starts_with('.'))
            .collect();
        assert!(finished.len() >= 2 && finished.len() < 10, "{finished:?}");
        for p in &finished {
            assert!(out.join(p).join("summary.json").is_file(), "{p} is whole");
        }
        if signal == "-INT" {
            let left: Vec<String> = points_in(&out)
                .into_iter()
                .filter(|p| p.starts_with('.'))
                .collect();
            assert!(left.is_empty(), "SIGINT removes temporaries: {left:?}");
        }
        // The rerun does only what is missing...
        let (_, stderr) = ok(&["run", s(&spec), "--results", s(&out)]);
        assert!(
            stderr.contains(&format!(
                "10 points, {} finished, {} to run",
                finished.len(),
                10 - finished.len()
            )),
            "{stderr}"
        );
    }
    // ... and gives the table of an uninterrupted run.
    let whole = tmp.path().join("whole");
    ok(&["run", s(&spec), "--results", s(&whole), "--quiet"]);
    for f in ["table.parquet", "table.csv"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(whole.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn spec_errors_name_the_file_the_key_and_what_was_expected() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            "traces: [CONV]\ngrid: {scheduler: [random]}\nrepetitons: 2\n",
            &["bad.yaml", "unknown key `repetitons`"],
        ),
        (
            "traces: [CONV]\ngrid: {scheduler: [random, nope]}\n",
            &["bad.yaml", "grid.scheduler[1]", "nope"],
        ),
        (
            "traces: [CONV]\npoints: [{prefill.instances: four}]\n",
            &["bad.yaml", "points[0].prefill.instances", "four"],
        ),
        (
            "traces: [CONV]\ngrid: {prefill.instancez: [1]}\n",
            &["bad.yaml", "grid.prefill.instancez[0]", "instancez"],
        ),
        (
            "traces: [missing/trace.jsonl]\n",
            &["bad.yaml", "traces[0]", "missing/trace.jsonl", "not found"],
        ),
        (
            "traces: [CONV]\nconfig: nowhere.yaml\n",
            &["bad.yaml", "config", "nowhere.yaml", "cannot read"],
        ),
        (
            "traces: [CONV]\ngrid: {rate_scale: [-1]}\n",
            &["bad.yaml", "grid.rate_scale[0]", "expected a number > 0"],
        ),
        (
            "traces: [CONV]\ngrid: {scheduler: random}\n",
            &["bad.yaml", "grid.scheduler", "expected a list"],
        ),
    ];
    for (body, wants) in cases {
        let p = spec(tmp.path(), "bad.yaml", body);
        let out = tmp.path().join("never");
        let e = fails(&["run", s(&p), "--results", s(&out)]);
        for w in *wants {
            assert!(e.contains(w), "{body:?}: missing {w:?} in {e}");
        }
        assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
        assert!(!out.exists(), "{body:?}: nothing is written");
    }
}
