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
fn spec_file(dir: &Path, name: &str, body: &str) -> PathBuf {
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
    let empty = tmp.path().join("empty");
    let e = fails(&["merge", TINY, "--results", s(&empty)]);
    assert!(e.contains("8 of 8 points have no finished run"), "{e}");
    assert!(!empty.exists(), "a failed merge leaves no folder");
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
    let spec = spec_file(tmp.path(), "slow.yaml", body);
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
        // Folders of a dead process on this host, and of another host.
        std::fs::create_dir_all(out.join(".moonlab-run-elsewhere-1-x")).unwrap();
        // ... and, after SIGKILL, what the killed run left behind goes.
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
        let left: Vec<String> = points_in(&out)
            .into_iter()
            .filter(|p| p.starts_with('.'))
            .collect();
        assert_eq!(
            left,
            [".moonlab-run-elsewhere-1-x"],
            "another host's temporary stays"
        );
        std::fs::remove_dir_all(out.join(".moonlab-run-elsewhere-1-x")).unwrap();
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
        let p = spec_file(tmp.path(), "bad.yaml", body);
        let out = tmp.path().join("never");
        let e = fails(&["run", s(&p), "--results", s(&out)]);
        for w in *wants {
            assert!(e.contains(w), "{body:?}: missing {w:?} in {e}");
        }
        assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
        assert!(!out.exists(), "{body:?}: nothing is written");
    }
}

#[test]
fn search_finds_the_grids_answer_in_a_fraction_of_its_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let spec = "experiments/tests/tiny-search.yaml";
    let (pruned, _) = ok(&["search", spec, "--results", s(&out), "--quiet"]);
    let (full, _) = ok(&[
        "search",
        spec,
        "--results",
        s(&out),
        "--exhaustive",
        "--quiet",
    ]);
    let answer = |text: &str| -> String {
        text.lines()
            .find(|l| l.starts_with("  (base): "))
            .unwrap_or_else(|| panic!("{text}"))
            .to_string()
    };
    assert_eq!(answer(&pruned), answer(&full), "{pruned}\n{full}");
    assert!(answer(&pruned).contains("prefill.instances="), "{pruned}");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(name)).unwrap()).unwrap()
    };
    let (p, f) = (read("search.json"), read("search-exhaustive.json"));
    assert_eq!(p["answers"], f["answers"]);
    let probes = p["probes"].as_array().unwrap().len();
    assert_eq!(f["probes"].as_array().unwrap().len(), 64);
    assert!(probes * 5 < 64, "{probes} probes");
    assert!(
        pruned.contains(&format!("{probes} of the grid's 64 points probed")),
        "{pruned}"
    );
    // The answer is the grid's cheapest feasible point.
    let feasible: Vec<(i64, i64)> = f["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["feasible"].as_bool().unwrap())
        .map(|p| {
            let text = p["params"].as_str().unwrap();
            let num = |k: &str| -> i64 {
                text.split(", ")
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            (num("prefill.instances"), num("decode.instances"))
        })
        .collect();
    let cheapest = feasible.iter().map(|(a, b)| a + b).min().unwrap();
    assert!(
        answer(&pruned).contains(&format!("(cost {cheapest})")),
        "{pruned}"
    );
    // Probes are run folders: a second search reuses them all.
    let (again, _) = ok(&["search", spec, "--results", s(&out), "--quiet"]);
    assert!(again.contains("0 runs simulated now"), "{again}");

    // Saturation: the highest rate scale of a deployment, by bisection.
    let sat = spec_file(
        tmp.path(),
        "sat.yaml",
        "config: CONFIG\ntraces: [{path: CONV, first: 300}]\nset: {prefill.instances: 4, decode.instances: 4}\nsearch:\n  require: {effective_request_capacity: {min: 0.9}}\n  saturation: {from: 0.25, to: 4, tolerance: 0.1}\n",
    );
    let (pruned, _) = ok(&["search", s(&sat), "--results", s(&out), "--quiet"]);
    let (full, _) = ok(&[
        "search",
        s(&sat),
        "--results",
        s(&out),
        "--exhaustive",
        "--quiet",
    ]);
    assert_eq!(answer(&pruned), answer(&full), "{pruned}\n{full}");
    assert!(answer(&pruned).contains("rate scale"), "{pruned}");
    let e = fails(&["search", TINY]);
    assert!(e.contains("no `search` section"), "{e}");
    // Node presets as options, priced per instance: each option's
    // cheapest counts, then the best over all; the same as the grid's.
    let opts = spec_file(
        tmp.path(),
        "opts.yaml",
        "config: CONFIG\ntraces: [{path: CONV, first: 300}]\nsearch:\n  require: {effective_request_capacity: {min: 0.9}}\n  counts:\n    prefill.instances: {from: 1, to: 8}\n    decode.instances: {from: 1, to: 4}\n  options:\n    prefill.node: [8xA800, 8xH800]\n  price: {8xA800: 1.0, 8xH800: 2.5}\n",
    );
    let (pruned, _) = ok(&["search", s(&opts), "--results", s(&out), "--quiet"]);
    let (full, _) = ok(&[
        "search",
        s(&opts),
        "--results",
        s(&out),
        "--exhaustive",
        "--quiet",
    ]);
    let answers = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("  prefill.node=") || l.starts_with("best:"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(answers(&pruned).len(), 3, "{pruned}");
    assert_eq!(answers(&pruned), answers(&full), "{pruned}\n{full}");
    assert!(
        pruned.contains("of the grid's 64 points probed"),
        "{pruned}"
    );
    // A misspelt metric is an error, not an infeasible search.
    let typo = spec_file(
        tmp.path(),
        "typo.yaml",
        "config: CONFIG\ntraces: [{path: CONV, first: 50}]\nsearch:\n  require: {ttft_p90: {max: 10}}\n  saturation: {from: 0.5, to: 2}\n",
    );
    let e = fails(&["search", s(&typo), "--results", s(&out), "--quiet"]);
    assert!(e.contains("search.require.ttft_p90: no such metric"), "{e}");
}

#[test]
fn report_draws_every_figure_kind_with_the_papers_values_beside_ours() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let out = tmp.path().join("report");
    let folder = "experiments/tests/report";
    // Before the runs, the report names what to run.
    let e = fails(&["report", folder, "--results", s(&results), "--out", s(&out)]);
    assert!(
        e.contains("table.parquet") && e.contains("moonlab run"),
        "{e}"
    );
    ok(&["run", folder, "--results", s(&results), "--quiet"]);
    assert!(results.join("tiny-report").join("table.parquet").is_file());
    let (stdout, _) = ok(&["report", folder, "--results", s(&results), "--out", s(&out)]);
    assert!(stdout.contains("6 figures"), "{stdout}");
    let md = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(md.contains("## Tiny: schedulers at two rates"), "{md}");
    assert!(
        md.contains("| mean TTFT | test setting | 10 s ± 0.5 |"),
        "{md}"
    );
    assert!(
        md.contains("| TTFT reduction | kvcache-centric vs least-loaded | 20 % |"),
        "{md}"
    );
    assert!(md.contains("Notes are printed last."), "{md}");
    // Every figure is a PNG that decodes and an SVG with its series.
    let want: &[(&str, &[&str])] = &[
        (
            "tiny-bars",
            &["least-loaded", "kvcache-centric", "paper", "Mean TTFT (s)"],
        ),
        (
            "tiny-lines",
            &["least-loaded", "kvcache-centric", "reference", "Rate scale"],
        ),
        ("tiny-cdf", &["least-loaded", "kvcache-centric", "TTFT (s)"]),
        (
            "tiny-capacity",
            &["least-loaded", "kvcache-centric", "TBT threshold (ms)"],
        ),
        ("tiny-stacked", &["Queue", "Prefill", "Transfer", "Load"]),
        (
            "tiny-replicas",
            &["key ranked 10", "key ranked 100", "Time (s)"],
        ),
    ];
    for (name, series) in want {
        assert!(md.contains(&format!("(figures/{name}.png)")), "{name}");
        let png = image::open(out.join("figures").join(format!("{name}.png"))).unwrap();
        assert!(png.width() > 500 && png.height() > 300, "{name}");
        let svg = std::fs::read_to_string(out.join("figures").join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") || svg.starts_with("<?xml"),
            "{name}"
        );
        for s in *series {
            assert!(svg.contains(s), "{name}: no {s:?} in the SVG");
        }
    }
    // The same results give the same report, byte for byte.
    let again = tmp.path().join("again");
    ok(&[
        "report",
        folder,
        "--results",
        s(&results),
        "--out",
        s(&again),
    ]);
    assert_eq!(
        std::fs::read(out.join("README.md")).unwrap(),
        std::fs::read(again.join("README.md")).unwrap()
    );
    for (name, _) in want {
        for ext in ["png", "svg"] {
            let f = format!("figures/{name}.{ext}");
            assert_eq!(
                std::fs::read(out.join(&f)).unwrap(),
                std::fs::read(again.join(&f)).unwrap(),
                "{f}"
            );
        }
    }
    // A bad report section names the spec and the key.
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let text = std::fs::read_to_string(Path::new(ROOT).join(folder).join("tiny-report.yaml"))
        .unwrap()
        .replace("../../../traces", &format!("{ROOT}/traces"))
        .replace("../../configs", &format!("{ROOT}/experiments/configs"))
        .replace("kind: cdf,", "kind: pie,");
    std::fs::write(bad.join("tiny-report.yaml"), text).unwrap();
    let e = fails(&[
        "report",
        s(&bad),
        "--results",
        s(&results),
        "--out",
        s(&tmp.path().join("x")),
    ]);
    assert!(
        e.contains("tiny-report.yaml: report.figures[2].kind: \"pie\""),
        "{e}"
    );
    let results2 = tmp.path().join("results2");
    let report_fails = |why: &str| {
        let e = fails(&[
            "report",
            s(&bad),
            "--results",
            s(&results2),
            "--out",
            s(&tmp.path().join("x")),
        ]);
        assert!(e.contains(why), "{e}");
    };
    let edit = |from: &str, to: &str| {
        let text = std::fs::read_to_string(bad.join("tiny-report.yaml")).unwrap();
        assert!(text.contains(from), "{from}");
        std::fs::write(bad.join("tiny-report.yaml"), text.replace(from, to)).unwrap();
    };
    // A comparison that would pool two settings as if they were seeds.
    edit("kind: pie,", "kind: cdf,");
    edit(
        "{paper: test-ttft, where: {scheduler: kvcache-centric, rate_scale: 1}",
        "{paper: test-ttft, where: {scheduler: kvcache-centric}",
    );
    std::fs::create_dir_all(bad.join("values")).unwrap();
    std::fs::copy(
        Path::new(ROOT)
            .join(folder)
            .join("values/paper-values.yaml"),
        bad.join("values/paper-values.yaml"),
    )
    .unwrap();
    ok(&["run", s(&bad), "--results", s(&results2), "--quiet"]);
    report_fails("compare test-ttft: its rows differ in `rate_scale`");
    // A table from an earlier version of the spec is not reported on.
    edit(
        "{paper: test-ttft, where: {scheduler: kvcache-centric}",
        "{paper: test-ttft, where: {scheduler: kvcache-centric, rate_scale: 1}",
    );
    edit(
        "scheduler: [least-loaded, kvcache-centric]",
        "scheduler: [kvcache-centric, least-loaded]",
    );
    report_fails("is not this spec's current run");
    // The report's own figures are replaced; a file it did not write stays.
    let mine = out.join("figures").join("diagram.png");
    std::fs::write(&mine, b"not moonlab's").unwrap();
    ok(&["report", folder, "--results", s(&results), "--out", s(&out)]);
    assert_eq!(std::fs::read(&mine).unwrap(), b"not moonlab's");
}

#[test]
fn plot_draws_any_column_pair_of_a_table() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    ok(&["run", TINY, "--results", s(&out), "--quiet"]);
    let png = tmp.path().join("p.png");
    ok(&[
        "plot",
        s(&out),
        "--x",
        "rate_scale",
        "--y",
        "ttft_mean_s",
        "--series",
        "scheduler",
        "--out",
        s(&png),
    ]);
    let img = image::open(&png).unwrap();
    assert!(img.width() > 500 && img.height() > 300);
    let svg = tmp.path().join("p.svg");
    ok(&[
        "plot",
        s(&out.join("table.parquet")),
        "--x",
        "rate_scale",
        "--y",
        "hit_rate",
        "--series",
        "scheduler",
        "--log-x",
        "--out",
        s(&svg),
    ]);
    let text = std::fs::read_to_string(&svg).unwrap();
    for want in ["random", "kvcache-centric", "rate_scale", "hit_rate"] {
        assert!(text.contains(want), "{want}");
    }
    for (args, words) in [
        (
            vec!["--x", "scheduler", "--y", "hit_rate"],
            "`scheduler` is a str column, not a number",
        ),
        (vec!["--x", "rate_scale", "--y", "nope"], "no column `nope`"),
    ] {
        let target = tmp.path().join("x.png");
        let mut all = vec!["plot", s(&out)];
        all.extend(args);
        all.extend(["--out", s(&target)]);
        let e = fails(&all);
        assert!(e.contains(words), "{e}");
        assert!(!target.exists());
    }
    let e = fails(&[
        "plot",
        s(&out),
        "--x",
        "rate_scale",
        "--y",
        "hit_rate",
        "--out",
        "x.gif",
    ]);
    assert!(e.contains("expected a .png or .svg file"), "{e}");
}
