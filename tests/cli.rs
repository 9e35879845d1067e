//! End-to-end tests of the `moonlab` binary: the README's commands on the
//! shipped traces, every bad input's error, and atomic outputs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn moonlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moonlab"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the moonlab binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = moonlab(args);
    assert!(
        out.status.success(),
        "moonlab {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs a command that must succeed and print JSON; returns it parsed.
fn ok_json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(args)).expect("JSON output")
}

/// Parses JSON Lines output, one value a line.
fn jsonl(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Runs a command that must fail; returns its stderr.
fn fails(args: &[&str]) -> String {
    let out = moonlab(args);
    assert!(
        !out.status.success(),
        "moonlab {args:?} unexpectedly succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !err.contains("panicked"),
        "moonlab {args:?} panicked:\n{err}"
    );
    err
}

const CONV: &str = "traces/data/conversation_trace.jsonl";
const SYNTH: &str = "traces/data/synthetic_trace.jsonl";

/// `moonlab cache` on the synthetic trace with `policy` and `capacity`,
/// then `extra` options.
fn cache_synth<'a>(policy: &'a str, capacity: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let base = [
        "cache",
        "--trace",
        SYNTH,
        "--policy",
        policy,
        "--capacity",
        capacity,
    ];
    [&base[..], extra].concat()
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write fixture");
    p
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn stats_of_the_shipped_traces() {
    let table = ok(&["trace", "stats", CONV]);
    assert!(table.contains("requests"), "{table}");
    assert!(table.contains("12031"), "{table}");
    assert!(table.contains("cache ratio"), "{table}");
    let json = ok_json(&["trace", "stats", "--format", "json", CONV, SYNTH]);
    assert_eq!(json[0]["stats"]["requests"], 12031);
    assert_eq!(json[1]["stats"]["requests"], 3993);
    let ratio = json[0]["stats"]["prefix"]["cache_ratio"].as_f64().unwrap();
    assert!(ratio > 0.0 && ratio < 1.0);
    // Every conversation request opens with the same system-prompt block.
    let top = json[0]["stats"]["prefix"]["top_first_blocks"]
        .as_array()
        .unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!(top[0]["share"], 1.0);
    let top = json[1]["stats"]["prefix"]["top_first_blocks"]
        .as_array()
        .unwrap();
    assert_eq!(top.len(), 10);
    assert!(top[0]["requests"].as_u64() >= top[9]["requests"].as_u64());
}

#[test]
fn cache_table_jsonl_csv_and_determinism() {
    let table = ok(&cache_synth("lru,s3fifo", "1000,3Mtok,inf", &[]));
    assert!(
        table.contains("s3fifo") && table.contains("5859") && table.contains("inf"),
        "{table}"
    );
    let args = cache_synth("all", "1000,inf", &["--format", "jsonl"]);
    let a = ok(&args);
    assert_eq!(a, ok(&args), "same inputs, same bytes");
    let rows = jsonl(&a);
    assert_eq!(rows.len(), 9 * 2);
    for key in [
        "trace",
        "policy",
        "capacity_blocks",
        "requests",
        "input_tokens",
        "hit_tokens",
        "hit_rate",
        "block_hit_rate",
    ] {
        assert!(rows[0].get(key).is_some(), "missing {key}");
    }
    assert!(rows[1]["capacity_blocks"].is_null());
    let csv = ok(&cache_synth("lru", "100", &["--format", "csv"]));
    assert_eq!(csv.lines().count(), 2);
    assert!(csv.starts_with("trace,policy,capacity_blocks"));
}

#[test]
fn nodes_report_local_next_to_pooled() {
    // Rows of `cache --nodes 4` (pooled, then local) with `extra` options.
    let on_4_nodes = |extra: &[&str]| {
        let extra = [&["--nodes", "4", "--format", "jsonl"][..], extra].concat();
        jsonl(&ok(&cache_synth("lru", "5000", &extra)))
    };
    let rows = on_4_nodes(&[]);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["cache"], "pooled");
    assert_eq!(rows[1]["cache"], "local");
    assert_eq!(rows[1]["nodes"], 4);
    assert!(rows[0]["hit_rate"].as_f64() >= rows[1]["hit_rate"].as_f64());
    // Strict balancing (slack 0) breaks session affinity and loses hits.
    let strict = &on_4_nodes(&["--balance-slack", "0"])[1];
    assert_eq!(strict["balance_slack"], 0.0);
    assert!(strict["hit_rate"].as_f64() < rows[1]["hit_rate"].as_f64());
}

#[test]
fn out_and_plot_files() {
    let dir = tmp();
    let out = dir.path().join("r.jsonl");
    let png = dir.path().join("fig.png");
    let svg = dir.path().join("fig.svg");
    ok(&cache_synth(
        "lru,fifo",
        "500,2000,inf",
        &["--format", "jsonl", "--out", s(&out), "--plot", s(&png)],
    ));
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 6);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    ok(&cache_synth("lru", "500,2000", &["--plot", s(&svg)]));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg") && text.contains("Cache capacity"));
    // Nothing but the outputs is left in the folder (no temp files).
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

const GOOD: &str =
    "{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 5, \"hash_ids\": [1, 2]}\n";

#[test]
fn every_bad_input_gets_one_clear_error_and_no_output() {
    let dir = tmp();
    let out = dir.path().join("out.jsonl");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "malformed.jsonl",
            format!("{GOOD}{{\"timestamp\": 1,\n"),
            "malformed.jsonl:2: (line): not valid JSON",
        ),
        (
            "missing.jsonl",
            format!("{GOOD}{{\"timestamp\": 1, \"input_length\": 5, \"hash_ids\": [1]}}\n"),
            "missing.jsonl:2: output_length: missing",
        ),
        (
            "negative.jsonl",
            GOOD.replace("600", "-600"),
            "negative.jsonl:1: input_length: -600 is out of range",
        ),
        (
            "absurd.jsonl",
            GOOD.replace("\"output_length\": 5", "\"output_length\": 5000000000"),
            "absurd.jsonl:1: output_length: 5000000000 is out of range",
        ),
        (
            "count.jsonl",
            GOOD.replace("[1, 2]", "[1]"),
            "count.jsonl:1: hash_ids: has 1 ids but input_length 600 needs",
        ),
        (
            "unsorted.jsonl",
            format!(
                "{}{GOOD}",
                GOOD.replace("\"timestamp\": 0", "\"timestamp\": 9")
            ),
            "unsorted.jsonl:2: timestamp: 0 is earlier than line 1's 9",
        ),
        ("empty.jsonl", String::new(), "empty.jsonl: is empty"),
    ];
    for (name, text, want) in &cases {
        let p = write(dir.path(), name, text);
        for args in [
            vec!["trace", "stats", s(&p)],
            vec!["cache", "--trace", s(&p), "--out", s(&out)],
            vec!["trace", "slice", s(&p), "--first", "1", "-o", s(&out)],
            vec!["trace", "synth", "--like", s(&p), "-o", s(&out)],
        ] {
            let err = fails(&args);
            assert!(err.contains(want), "{args:?}\n got: {err}\nwant: {want}");
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
            assert!(!out.exists(), "{args:?} left a partial output");
        }
    }
    // --sort accepts the unsorted file.
    let p = dir.path().join("unsorted.jsonl");
    ok(&["trace", "stats", "--sort", s(&p)]);

    let err = fails(&[
        "cache",
        "--trace",
        SYNTH,
        "--policy",
        "lru,bogus",
        "--out",
        s(&out),
    ]);
    assert!(
        err.contains("unknown eviction policy `bogus`") && err.contains("s3fifo"),
        "{err}"
    );
    let err = fails(&[
        "cache",
        "--trace",
        SYNTH,
        "--capacity",
        "1000,lots",
        "--out",
        s(&out),
    ]);
    assert!(err.contains("invalid capacity `lots`"), "{err}");
    let err = fails(&[
        "cache",
        "--trace",
        SYNTH,
        "--plot",
        s(&dir.path().join("fig.jpg")),
    ]);
    assert!(
        err.contains("expected a file name ending in .png or .svg"),
        "{err}"
    );
    let err = fails(&["cache", "--trace", s(&dir.path().join("absent.jsonl"))]);
    assert!(
        err.contains("absent.jsonl") && err.contains("No such file"),
        "{err}"
    );
    let err = fails(&["cache", "--trace", SYNTH, "--balance-slack", "0.1"]);
    assert!(err.contains("--balance-slack needs --nodes"), "{err}");
    let err = fails(&[
        "cache",
        "--trace",
        SYNTH,
        "--nodes",
        "2",
        "--balance-slack=-1",
    ]);
    assert!(
        err.contains("--balance-slack -1: expected a non-negative number"),
        "{err}"
    );
    let err = fails(&["trace", "slice", SYNTH, "--rate-scale", "0", "-o", s(&out)]);
    assert!(err.contains("--rate-scale 0"), "{err}");
    let err = fails(&[
        "trace",
        "synth",
        "--like",
        SYNTH,
        "--rate-scale=-2",
        "-o",
        s(&out),
    ]);
    assert!(err.contains("rate"), "{err}");
    assert!(!out.exists());
}

#[test]
fn csv_traces_feed_stats_but_not_replay() {
    let dir = tmp();
    let azure = write(
        dir.path(),
        "azure.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,4808,10\n2023-11-16 18:15:50.9951690,3180,8\n",
    );
    let json = ok_json(&["trace", "stats", "--format", "json", s(&azure)]);
    assert_eq!(json[0]["format"], "azure");
    assert_eq!(json[0]["stats"]["requests"], 2);
    assert!(json[0]["stats"]["prefix"].is_null());
    let err = fails(&["cache", "--trace", s(&azure)]);
    assert!(err.contains("carries no block hashes"), "{err}");
}

#[test]
fn synth_is_deterministic_and_valid() {
    let dir = tmp();
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    let c = dir.path().join("c.jsonl");
    let args = |o: &Path, seed: &'static str| {
        vec![
            "trace",
            "synth",
            "--like",
            SYNTH,
            "--rate-scale",
            "2",
            "--duration",
            "300",
            "--seed",
            seed,
            "-o",
        ]
        .into_iter()
        .map(String::from)
        .chain([o.to_string_lossy().into_owned()])
        .collect::<Vec<_>>()
    };
    let run = |v: Vec<String>| ok(&v.iter().map(String::as_str).collect::<Vec<_>>());
    run(args(&a, "7"));
    run(args(&b, "7"));
    run(args(&c, "8"));
    let (ta, tb, tc) = (
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        std::fs::read(&c).unwrap(),
    );
    assert_eq!(ta, tb);
    assert_ne!(ta, tc);
    // The output is a valid trace: stats reads it back.
    let json = ok_json(&["trace", "stats", "--format", "json", s(&a)]);
    assert!(json[0]["stats"]["requests"].as_u64().unwrap() > 100);
}

#[test]
fn slice_window_first_and_rate() {
    let dir = tmp();
    let out = dir.path().join("s.jsonl");
    ok(&[
        "trace",
        "slice",
        CONV,
        "--from",
        "60",
        "--to",
        "120",
        "--rebase",
        "--rate-scale",
        "2",
        "-o",
        s(&out),
    ]);
    let json = ok_json(&["trace", "stats", "--format", "json", s(&out)]);
    let span = json[0]["stats"]["span_s"].as_f64().unwrap();
    assert!(span <= 30.0 && span > 20.0, "span {span}");
    ok(&["trace", "slice", CONV, "--first", "10", "-o", s(&out)]);
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 10);
}

#[test]
fn sim_writes_a_run_folder_with_the_documented_fields() {
    let dir = tmp();
    let trace = dir.path().join("head.jsonl");
    ok(&["trace", "slice", CONV, "--first", "400", "-o", s(&trace)]);
    let out = dir.path().join("run");
    let printed = ok(&[
        "sim",
        "--trace",
        s(&trace),
        "--config",
        "experiments/configs/fig5-scheduling.yaml",
        "--set",
        "scheduler=local-cache-aware",
        "--out",
        s(&out),
        "--explain",
        "--quiet",
        "--table-format",
        "csv",
    ]);
    assert!(printed.contains("scheduler local-cache-aware"), "{printed}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    for key in [
        "requests",
        "served",
        "rejected",
        "ttft_mean_s",
        "ttft_p90_s",
        "tbt_mean_s",
        "tbt_p90_s",
        "hit_rate",
        "effective_request_capacity",
        "events",
        "wall_s",
    ] {
        assert!(summary[key].is_number(), "summary.json lacks numeric {key}");
    }
    assert_eq!(summary["requests"], 400);
    let csv = std::fs::read_to_string(out.join("requests.csv")).unwrap();
    assert_eq!(csv.lines().count(), 401);
    let series = std::fs::read_to_string(out.join("timeseries.csv")).unwrap();
    assert!(series.starts_with("time_s,instance,role,utilization,queued,batch,cache_blocks\n"));
    assert!(
        series.lines().count() > 16,
        "one row per sample and instance"
    );
    let replicas = std::fs::read_to_string(out.join("replicas.csv")).unwrap();
    assert!(
        replicas.lines().any(|l| l.split(',').nth(1) == Some("10")),
        "{replicas}"
    );
    let yaml = std::fs::read_to_string(out.join("config.yaml")).unwrap();
    assert!(yaml.contains("name: local-cache-aware"), "{yaml}");
    assert_eq!(
        std::fs::read_to_string(out.join("explain.jsonl"))
            .unwrap()
            .lines()
            .count(),
        400
    );
    // The same run again gives the same per-request table, byte for byte.
    let again = dir.path().join("again");
    ok(&[
        "sim",
        "--trace",
        s(&trace),
        "--config",
        "experiments/configs/fig5-scheduling.yaml",
        "--set",
        "scheduler=local-cache-aware",
        "--out",
        s(&again),
        "--quiet",
        "--table-format",
        "csv",
    ]);
    assert_eq!(
        csv,
        std::fs::read_to_string(again.join("requests.csv")).unwrap()
    );
    // Parquet by default.
    let pq = dir.path().join("pq");
    ok(&["sim", "--trace", s(&trace), "--out", s(&pq), "--quiet"]);
    let bytes = std::fs::read(pq.join("requests.parquet")).unwrap();
    assert_eq!(&bytes[..4], b"PAR1");
    assert!(!pq.join("requests.csv").exists());
}

#[test]
fn sim_config_errors_name_the_key_and_leave_nothing() {
    let dir = tmp();
    let out = dir.path().join("run");
    let bad = write(
        dir.path(),
        "bad.yaml",
        "prefill:\n  instances: 4\n  gpu_count: 9\n",
    );
    let err = fails(&[
        "sim",
        "--trace",
        SYNTH,
        "--config",
        s(&bad),
        "--out",
        s(&out),
    ]);
    assert!(
        err.contains("bad.yaml: prefill.gpu_count: unknown key"),
        "{err}"
    );
    let err = fails(&[
        "sim",
        "--trace",
        SYNTH,
        "--set",
        "scheduler=fastest",
        "--out",
        s(&out),
    ]);
    assert!(
        err.contains("fastest") && err.contains("kvcache-centric"),
        "{err}"
    );
    let err = fails(&[
        "sim",
        "--trace",
        SYNTH,
        "--set",
        "decode.node=8xB200",
        "--out",
        s(&out),
    ]);
    assert!(
        err.contains("decode.node: unknown preset `8xB200`"),
        "{err}"
    );
    assert!(!out.exists());
    let defaults = ok(&["config", "show"]);
    assert!(defaults.contains("kvcache-centric") && defaults.contains("dram_cache_blocks: 5859"));
}

#[test]
fn sim_uses_a_measured_cost_profile() {
    let dir = tmp();
    let trace = write(
        dir.path(),
        "one.jsonl",
        "{\"timestamp\": 0, \"input_length\": 1500, \"output_length\": 1, \"hash_ids\": [1, 2, 3]}\n",
    );
    let profile = write(
        dir.path(),
        "a800.csv",
        "phase,x,y,seconds\nprefill,1000,0,1.0\nprefill,2000,0,3.0\ndecode,1,1000,0.02\ndecode,8,1000,0.03\n",
    );
    let out = dir.path().join("run");
    let cost = format!("prefill.cost_profile={}", s(&profile));
    ok(&[
        "sim",
        "--trace",
        s(&trace),
        "--set",
        &cost,
        "--set",
        "prefill.chunk_tokens=0",
        "--out",
        s(&out),
        "--quiet",
        "--table-format",
        "csv",
    ]);
    let csv = std::fs::read_to_string(out.join("requests.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    let prefill_s = header.iter().position(|c| *c == "prefill_s").unwrap();
    // 1500 new tokens at prefix 0: halfway between 1 s and 3 s.
    assert_eq!(row[prefill_s], "2", "prefill_s in {csv}");
    let bad = write(
        dir.path(),
        "bad.csv",
        "phase,x,y,seconds\nprefill,1000,zero,1\n",
    );
    let cost = format!("prefill.cost_profile={}", s(&bad));
    let err = fails(&[
        "sim",
        "--trace",
        s(&trace),
        "--set",
        &cost,
        "--out",
        s(&out),
    ]);
    assert!(
        err.contains("prefill.cost_profile:") && err.contains("bad.csv:2: y: `zero`"),
        "{err}"
    );
}

/// The entries of `dir`, by name, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_run_folder_holds_one_run() {
    // A non-empty --out is refused (naming --force); --force replaces it
    // whole, so nothing of the previous contents survives beside the run.
    let dir = tmp();
    let out = dir.path().join("run");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("stale.csv"), "left over").unwrap();
    let args = [
        "sim",
        "--trace",
        SYNTH,
        "--set",
        "prefill.instances=2",
        "--out",
        s(&out),
        "--quiet",
    ];
    let err = fails(&args);
    assert!(
        err.contains("the folder is not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(entries(&out), vec!["stale.csv"]);
    let mut forced = args.to_vec();
    forced.push("--force");
    ok(&forced);
    assert_eq!(
        entries(&out),
        vec![
            "config.yaml",
            "replicas.csv",
            "requests.parquet",
            "summary.json",
            "timeseries.csv"
        ]
    );
    // Nothing temporary is left beside it.
    assert_eq!(entries(dir.path()), vec!["run"]);
    // An empty folder is fine.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    ok(&[
        "sim",
        "--trace",
        SYNTH,
        "--set",
        "prefill.instances=2",
        "--out",
        s(&empty),
        "--quiet",
    ]);
    assert!(empty.join("summary.json").exists());
}

#[test]
fn an_unusable_out_fails_before_the_run_and_leaves_nothing() {
    let dir = tmp();
    let file = write(dir.path(), "a-file", "x");
    let under = file.join("run");
    let err = fails(&["sim", "--trace", SYNTH, "--out", s(&under), "--quiet"]);
    assert!(err.starts_with("error: --out "), "{err}");
    assert_eq!(entries(dir.path()), vec!["a-file"]);
}

#[cfg(unix)]
#[test]
fn an_interrupted_run_leaves_nothing_behind() {
    // SIGINT while the simulation runs: the temporary run folder beside
    // the target is removed and the target never appears.
    let dir = tmp();
    let out = dir.path().join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_moonlab"))
        .args([
            "sim",
            "--trace",
            CONV,
            "--out",
            s(&out),
            "--quiet",
            "--set",
            "decode.fast_forward=false",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    if status.success() {
        // The run beat the signal: then it must be whole.
        assert!(out.join("summary.json").exists());
    } else {
        assert_eq!(status.code(), Some(130), "{status:?}");
        assert!(!out.exists());
    }
    let left: Vec<String> = entries(dir.path())
        .into_iter()
        .filter(|e| e.starts_with(".moonlab"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[cfg(unix)]
#[test]
fn a_terminated_single_file_output_leaves_nothing_behind() {
    // SIGTERM while `trace synth` writes a large trace: the temporary file
    // is removed and the output never appears.
    let dir = tmp();
    let out = dir.path().join("big.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_moonlab"))
        .args([
            "trace",
            "synth",
            "--like",
            CONV,
            "--rate-scale",
            "20",
            "--duration",
            "36000",
            "-o",
            s(&out),
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    if status.success() {
        assert!(out.exists());
    } else {
        assert_eq!(status.code(), Some(130), "{status:?}");
        assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
    }
}

// ---- Hardening: each example of issue 9 and its siblings ----

/// Runs a command that must fail with an error holding every one of
/// `wants`, on one line; returns the error.
fn fails_with(args: &[&str], wants: &[&str]) -> String {
    let err = fails(args);
    for want in wants {
        assert!(err.contains(want), "{args:?}\n got: {err}\nwant: {want}");
    }
    // (clap adds a hint line after its own one-line errors.)
    let lines = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("For more information"))
        .count();
    assert_eq!(lines, 1, "one line: {err}");
    err
}

/// Runs moonlab with `file` piped into its standard input through a real
/// pipe (`cat FILE |`), as `<(cat trace)` or `zcat trace.gz |` would.
fn piped(file: &str, args: &[&str]) -> String {
    let mut cat = Command::new("cat")
        .arg(file)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("cat runs");
    let out = Command::new(env!("CARGO_BIN_EXE_moonlab"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(cat.stdout.take().unwrap())
        .output()
        .expect("the moonlab binary runs");
    cat.wait().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The first `n` requests of the synthetic trace, moved `shift_ms` later.
fn shifted_synth(n: usize, shift_ms: u64) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(SYNTH)).unwrap();
    text.lines()
        .take(n)
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["timestamp"] = (v["timestamp"].as_u64().unwrap() + shift_ms).into();
            format!("{v}\n")
        })
        .collect()
}

#[cfg(unix)]
#[test]
fn a_trace_read_from_a_pipe_loses_no_request() {
    let stats =
        |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap()[0]["stats"].clone();
    let from_file = stats(&ok(&["trace", "stats", "--format", "json", CONV]));
    for path in ["-", "/dev/stdin"] {
        let json = piped(CONV, &["trace", "stats", "--format", "json", path]);
        assert_eq!(stats(&json), from_file, "{path}");
    }
    // Every command that reads a trace takes `-`.
    let dir = tmp();
    let sliced = dir.path().join("s.jsonl");
    piped(
        CONV,
        &["trace", "slice", "-", "--first", "100", "-o", s(&sliced)],
    );
    assert_eq!(
        std::fs::read_to_string(&sliced).unwrap().lines().count(),
        100
    );
    let cache = [
        "cache",
        "--policy",
        "lru",
        "--capacity",
        "inf",
        "--format",
        "csv",
        "--trace",
    ];
    let rows = |t: &str| -> Vec<String> {
        t.lines()
            .skip(1)
            .map(|l| l.split_once(',').unwrap().1.to_string())
            .collect()
    };
    let from_pipe = piped(SYNTH, &[&cache[..], &["-"]].concat());
    assert_eq!(
        rows(&from_pipe),
        rows(&ok(&[&cache[..], &[SYNTH]].concat()))
    );
    // A first line longer than the detection window still reads whole.
    let long = format!(
        "{{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 5, \"hash_ids\": [1], \"note\": \"{}\"}}\n{GOOD}",
        "x".repeat(200_000)
    );
    let p = write(dir.path(), "long.jsonl", &long);
    let json = piped(s(&p), &["trace", "stats", "--format", "json", "-"]);
    assert_eq!(stats(&json)["requests"], 2);
}

#[test]
fn timestamps_that_cannot_be_represented_are_rejected_by_line() {
    let dir = tmp();
    let far = format!(
        "{GOOD}{}",
        GOOD.replace("\"timestamp\": 0", "\"timestamp\": 2e13")
    );
    let p = write(dir.path(), "far.jsonl", &far);
    fails_with(
        &["trace", "stats", s(&p)],
        &["far.jsonl:2: timestamp: 20000000000000 ms is beyond the latest representable arrival"],
    );
    // Epoch milliseconds are fine.
    let epoch = GOOD.replace("\"timestamp\": 0", "\"timestamp\": 1700000000000");
    ok(&[
        "trace",
        "stats",
        s(&write(dir.path(), "epoch.jsonl", &epoch)),
    ]);
    // A rate scale that overflows the clock or merges distinct arrivals.
    let out = dir.path().join("o.jsonl");
    let slice =
        |k: &'static str| ["trace", "slice", CONV, "--rate-scale", k, "-o", s(&out)].to_vec();
    fails_with(
        &slice("1e-12"),
        &["would arrive at", "beyond the latest representable arrival"],
    );
    fails_with(&slice("1e12"), &["would arrive at the same nanosecond"]);
    assert_eq!(entries(dir.path()), vec!["epoch.jsonl", "far.jsonl"]);
}

#[test]
fn runs_that_produce_nothing_are_errors() {
    let dir = tmp();
    let out = dir.path().join("o.jsonl");
    let slice = |extra: &[&'static str]| [&["trace", "slice", CONV, "-o", s(&out)], extra].concat();
    fails_with(
        &slice(&["--from", "600", "--to", "100"]),
        &["--from 600 --to 100: the window is empty"],
    );
    fails_with(
        &slice(&["--from", "1e9"]),
        &["no request falls in the slice"],
    );
    fails_with(&slice(&["--first", "0"]), &["--first 0"]);
    fails_with(
        &[
            "trace",
            "synth",
            "--like",
            SYNTH,
            "--rate-scale",
            "1e-320",
            "-o",
            s(&out),
        ],
        &["the model is unusable"],
    );
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn synth_output_is_capped_and_says_so() {
    let dir = tmp();
    let out = dir.path().join("o.jsonl");
    let synth = |extra: &[&'static str]| {
        [&["trace", "synth", "--like", SYNTH, "-o", s(&out)], extra].concat()
    };
    fails_with(
        &synth(&["--duration", "1e300"]),
        &["duration 1e300 s ends beyond the latest representable arrival"],
    );
    fails_with(
        &synth(&["--duration", "1e9"]),
        &["more than the cap of 10000000", "--max-requests"],
    );
    fails_with(&synth(&["--rate-scale", "1e9"]), &["more than the cap"]);
    fails_with(
        &synth(&["--max-requests", "50"]),
        &["more than the cap of 50"],
    );
    assert!(entries(dir.path()).is_empty());
    // The cap can be raised (or lowered) and a spec within it runs.
    ok(&synth(&["--duration", "10", "--max-requests", "1000"]));
    assert!(out.exists());
}

#[test]
fn config_values_that_size_memory_or_loops_are_bounded_by_key() {
    let dir = tmp();
    let out = dir.path().join("run");
    let sim = |sets: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["sim", "--trace", SYNTH, "--out", s(&out), "--quiet"]
            .map(String::from)
            .to_vec();
        for set in sets {
            args.extend(["--set".to_string(), set.to_string()]);
        }
        args
    };
    let fails_sim = |sets: &[&str], wants: &[&str]| {
        let args = sim(sets);
        fails_with(&args.iter().map(String::as_str).collect::<Vec<_>>(), wants)
    };
    for (set, key) in [
        ("prefill.instances=4294967295", "prefill.instances"),
        (
            "workload.output_tokens=4294967295",
            "workload.output_tokens",
        ),
        (
            "metrics.sample_interval_s=0.001",
            "metrics.sample_interval_s",
        ),
        ("decode.max_batch=4294967295", "decode.max_batch"),
        ("metrics.max_samples=0", "metrics.max_samples"),
    ] {
        fails_sim(&[set], &[key, "expected"]);
    }
    let err = fails_sim(&["store.eviction=all"], &["store.eviction"]);
    assert!(!err.contains(", all") && !err.contains("all,"), "{err}");
    // A section is not a value; a tiny number is shown short.
    fails_sim(
        &["prefill="],
        &["`prefill` is a section (expected a key inside it"],
    );
    fails_sim(&["slo.ttft_s=1e-300"], &["slo.ttft_s: 1e-300 (expected"]);
    // A run needing more samples than allowed fails naming the key.
    fails_sim(
        &["metrics.max_samples=3", "metrics.sample_interval_s=1"],
        &[
            "metrics.max_samples: the run needs more than 3 samples",
            "nothing was written",
        ],
    );
    fails_with(
        &["cache", "--trace", SYNTH, "--threads", "100000"],
        &["--threads", "1..=256"],
    );
    assert!(!out.exists());
}

#[test]
fn config_errors_name_the_source_line_and_key() {
    let dir = tmp();
    let out = dir.path().join("run");
    let cfg = write(
        dir.path(),
        "c.yaml",
        "model: llama3-70b\nprefill:\n  instances: \"four\"\n",
    );
    fails_with(
        &[
            "sim",
            "--trace",
            SYNTH,
            "--config",
            s(&cfg),
            "--out",
            s(&out),
        ],
        &["c.yaml:3: prefill.instances: invalid type: string \"four\", expected u32"],
    );
    let err = fails_with(
        &[
            "sim",
            "--trace",
            SYNTH,
            "--set",
            "decode.mfu=high",
            "--out",
            s(&out),
        ],
        &["--set decode.mfu=high: decode.mfu: invalid type"],
    );
    assert!(!err.contains("(defaults)"), "{err}");
    // A huge value is quoted short, from a file and from --set.
    let huge = "x".repeat(5_000_000);
    let cfg = write(dir.path(), "huge.yaml", &format!("model: {huge}\n"));
    let err = fails_with(
        &[
            "sim",
            "--trace",
            SYNTH,
            "--config",
            s(&cfg),
            "--out",
            s(&out),
        ],
        &["bytes)"],
    );
    assert!(err.len() < 1000, "{}", &err[..1000]);
    // (One argument may hold at most 128 KiB.)
    let set = format!("prefill.instances={}", &huge[..100_000]);
    let err = fails_with(
        &["sim", "--trace", SYNTH, "--set", &set, "--out", s(&out)],
        &["bytes)"],
    );
    assert!(err.len() < 1000, "{}", &err[..1000]);
}

#[test]
fn sim_block_tokens_is_the_configurations_block_size() {
    let dir = tmp();
    let out = dir.path().join("run");
    let sim = |extra: &[&'static str]| {
        [
            &["sim", "--trace", SYNTH, "--out", s(&out), "--quiet"],
            extra,
        ]
        .concat()
    };
    // The trace's hash_ids are 512-token blocks: 256 is read and refused.
    fails_with(&sim(&["--block-tokens", "256"]), &["hash_ids", "256"]);
    fails_with(
        &sim(&["--block-tokens", "512", "--set", "block_tokens=256"]),
        &["--block-tokens 512 and --set block_tokens=256 disagree"],
    );
    assert!(!out.exists());
    ok(&sim(&[
        "--block-tokens",
        "512",
        "--set",
        "prefill.instances=2",
    ]));
    let yaml = std::fs::read_to_string(out.join("config.yaml")).unwrap();
    assert!(yaml.contains("block_tokens: 512"), "{yaml}");
}

#[test]
fn cost_profiles_beside_the_config_and_bad_profiles_by_line() {
    let dir = tmp();
    let configs = dir.path().join("configs");
    std::fs::create_dir(&configs).unwrap();
    let decode = "decode,1,1000,0.02\ndecode,8,1000,0.03\n";
    write(
        &configs,
        "a800.csv",
        &format!("phase,x,y,seconds\nprefill,1000,0,1.0\nprefill,2000,0,3.0\n{decode}"),
    );
    let cfg = write(
        &configs,
        "c.yaml",
        "prefill:\n  instances: 2\n  cost_profile: a800.csv\n",
    );
    // Run from the repository root: the profile is found beside the config.
    let out = dir.path().join("run");
    ok(&[
        "sim",
        "--trace",
        SYNTH,
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--quiet",
    ]);
    let out = dir.path().join("run2");
    for (name, prefill, want) in [
        (
            "dup.csv",
            "prefill,1000,0,1.0\nprefill,2000,0,3.0\nprefill,1000,0,1.1\n",
            "dup.csv:4: prefill x = 1000, y = 0 is measured a second time (first on line 2",
        ),
        (
            "zero.csv",
            "prefill,1000,0,0\nprefill,2000,0,0\n",
            "zero.csv: every time in the prefill table is 0 seconds",
        ),
    ] {
        write(
            &configs,
            name,
            &format!("phase,x,y,seconds\n{prefill}{decode}"),
        );
        let cfg = write(
            &configs,
            "bad.yaml",
            &format!("prefill:\n  cost_profile: {name}\n"),
        );
        fails_with(
            &[
                "sim",
                "--trace",
                SYNTH,
                "--config",
                s(&cfg),
                "--out",
                s(&out),
                "--quiet",
            ],
            &[want],
        );
        assert!(!out.exists());
    }
}

#[test]
fn an_epoch_clock_trace_simulates_in_bounded_time_and_memory() {
    let dir = tmp();
    let p = write(
        dir.path(),
        "epoch.jsonl",
        &shifted_synth(500, 1_700_000_000_000),
    );
    let out = dir.path().join("run");
    ok(&[
        "sim",
        "--trace",
        s(&p),
        "--set",
        "metrics.sample_interval_s=1",
        "--out",
        s(&out),
        "--quiet",
        "--table-format",
        "csv",
    ]);
    let series = std::fs::read_to_string(out.join("timeseries.csv")).unwrap();
    let first_t: f64 = series
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        first_t > 1.7e9,
        "samples start at the first arrival: {first_t}"
    );
    assert!(
        series.lines().count() < 100_000,
        "{} rows",
        series.lines().count()
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["unfinished"], 0);
    assert_eq!(
        summary["served"].as_u64().unwrap() + summary["rejected"].as_u64().unwrap(),
        500
    );
}

#[test]
fn traces_with_the_same_file_name_keep_apart_in_tables_and_plots() {
    let dir = tmp();
    let mut args = vec![
        "cache",
        "--policy",
        "lru",
        "--capacity",
        "inf",
        "--format",
        "csv",
    ];
    let paths: Vec<PathBuf> = ["a", "b"]
        .iter()
        .map(|sub| {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            write(&dir.path().join(sub), "trace.jsonl", &shifted_synth(200, 0))
        })
        .collect();
    for p in &paths {
        args.extend(["--trace", s(p)]);
    }
    let csv = ok(&args);
    let traces: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(traces, vec!["a/trace", "b/trace"]);
}

#[test]
fn cache_outputs_are_one_unit() {
    // The plot cannot be written: neither is the table, and nothing
    // temporary is left.
    let dir = tmp();
    let out = dir.path().join("r.csv");
    let plot = dir.path().join("missing").join("fig.svg");
    fails_with(
        &[
            "cache",
            "--trace",
            SYNTH,
            "--policy",
            "lru",
            "--capacity",
            "inf",
            "--format",
            "csv",
            "--out",
            s(&out),
            "--plot",
            s(&plot),
        ],
        &["fig.svg"],
    );
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn input_encodings_and_io_errors_are_explained_once() {
    let dir = tmp();
    let bom = write(dir.path(), "bom.jsonl", &format!("\u{feff}{GOOD}{GOOD}"));
    let json = ok_json(&["trace", "stats", "--format", "json", s(&bom)]);
    assert_eq!(json[0]["stats"]["requests"], 2);
    let bad = dir.path().join("latin1.jsonl");
    let mut bytes = format!("{GOOD}{GOOD}").into_bytes();
    bytes.extend_from_slice(b"{\"timestamp\": 1, \"note\": \"caf\xe9\"}\n");
    std::fs::write(&bad, bytes).unwrap();
    fails_with(
        &["trace", "stats", s(&bad)],
        &["latin1.jsonl:3: (line): not valid UTF-8 at byte 30"],
    );
    let err = fails_with(
        &["trace", "stats", s(&dir.path().join("absent.jsonl"))],
        &["absent.jsonl"],
    );
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    // A huge field is quoted short, in JSON and in CSV.
    let huge_json = GOOD.replace(
        "\"timestamp\": 0",
        &format!("\"timestamp\": \"{}\"", "9".repeat(5_000_000)),
    );
    let huge_csv = format!(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n{},x,10,5,15,Conversation log\n",
        "1".repeat(5_000_000)
    );
    for (name, text) in [("huge.jsonl", huge_json), ("huge.csv", huge_csv)] {
        let err = fails_with(
            &["trace", "stats", s(&write(dir.path(), name, &text))],
            &["bytes)"],
        );
        assert!(err.len() < 400, "{}", &err[..400]);
    }
}
