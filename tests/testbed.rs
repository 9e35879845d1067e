//! The multi-host testbed (`real/testbed/testbed.sh`): network namespaces
//! joined by a bridge, each node's link shaped. It needs root and
//! namespaces; where they cannot be made the script exits 2 with "SKIP:
//! <why>", and these tests print that and pass (CI runs as root and runs
//! them). Checked: a replay on the testbed serves every request with no
//! wrong byte, and a partitioned store node is unmounted after the
//! heartbeat timeout and rejoins when its link returns.

use std::path::Path;
use std::process::Command;

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/real/testbed/replay.yaml");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/real/testbed/testbed.sh");
const TRACE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/traces/data/conversation_trace.jsonl"
);

/// Runs `testbed.sh` with `cmd` inside; `None` (after saying why) where the
/// testbed cannot be made here. (Testbeds are one at a time on a machine:
/// the script waits on a lock file for another to finish.)
fn testbed(dir: &Path, sets: &[&str], cmd: &[&str]) -> Option<std::process::Output> {
    let mut c = Command::new("bash");
    c.arg(SCRIPT)
        .args(["--config", CONFIG, "--dir"])
        .arg(dir.join("tb"))
        .env("MOONLAB", env!("CARGO_BIN_EXE_moonlab"));
    for s in sets {
        c.args(["--set", s]);
    }
    c.arg("--").args(cmd);
    let out = c.output().unwrap();
    if out.status.code() == Some(2) {
        let why = String::from_utf8_lossy(&out.stdout);
        assert!(why.contains("SKIP:"), "exit 2 without a SKIP line: {why}");
        eprintln!("{}", why.trim());
        return None;
    }
    Some(out)
}

#[test]
fn a_replay_on_the_shaped_testbed_serves_every_request_with_no_wrong_byte() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(TRACE).unwrap();
    let slice: Vec<&str> = text.lines().take(20).collect();
    let trace = dir.path().join("slice.jsonl");
    std::fs::write(&trace, slice.join("\n") + "\n").unwrap();
    let out = dir.path().join("run");
    let tb = dir.path().join("tb");
    let Some(r) = testbed(
        dir.path(),
        &["model=llama3-8b"],
        &[
            env!("CARGO_BIN_EXE_moonlab"),
            "real",
            "replay",
            "--cluster",
            tb.to_str().unwrap(),
            "--trace",
            trace.to_str().unwrap(),
            "--config",
            CONFIG,
            "--set",
            "model=llama3-8b",
            "--out",
            out.to_str().unwrap(),
            "--table-format",
            "csv",
            "--quiet",
        ],
    ) else {
        return;
    };
    assert!(
        r.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    let replay: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("replay.json")).unwrap()).unwrap();
    assert_eq!(replay["wrong_bytes"], 0, "{replay}");
    assert_eq!(replay["failures"].as_array().unwrap().len(), 0, "{replay}");
    // The KV crossed the shaped links: every decode node received some.
    let links = replay["link_bytes"].as_object().unwrap();
    assert!(links.keys().any(|k| k.starts_with("decode-")), "{replay}");
    // Everything the testbed made is gone.
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ns.stdout).contains("mlt-"),
        "namespaces left behind"
    );
}

#[test]
fn a_partitioned_store_node_is_unmounted_and_rejoins_when_its_link_returns() {
    let dir = tempfile::tempdir().unwrap();
    let tb = dir.path().join("tb");
    let moonlab = env!("CARGO_BIN_EXE_moonlab");
    // Inside the testbed: prefill-0's segment is mounted; its link goes
    // down; within the master's client TTL (10 s) plus a tick it is
    // unmounted; the link comes back; within a few heartbeats it is
    // mounted again and takes a put and a get.
    let script = format!(
        r#"set -u
stat() {{ "{moonlab}" kv --cluster "{tb}" stat 2>&1; }}
mounted() {{ stat | grep -q '^prefill-0'; }}
until_() {{ for i in $(seq 1 $2); do if eval "$1"; then return 0; fi; sleep 0.5; done; return 1; }}
until_ mounted 40 || {{ echo "prefill-0 never mounted"; exit 1; }}
ip -n mlt-p0 link set eth0 down
t0=$(date +%s)
until_ '! mounted' 60 || {{ echo "prefill-0 still mounted 30 s after its link went down"; exit 1; }}
echo "unmounted after $(( $(date +%s) - t0 )) s"
ip -n mlt-p0 link set eth0 up
until_ mounted 60 || {{ echo "prefill-0 did not rejoin within 30 s"; exit 1; }}
echo rejoined
"{moonlab}" kv --cluster "{tb}" put probe --value again --preferred prefill-0 || exit 1
test "$("{moonlab}" kv --cluster "{tb}" get probe)" = again || {{ echo "get after rejoin"; exit 1; }}
echo ok
"#,
        tb = tb.display()
    );
    let Some(r) = testbed(dir.path(), &["model=llama3-8b"], &["bash", "-c", &script]) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        r.status.success() && stdout.contains("ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(stdout.contains("unmounted after") && stdout.contains("rejoined"));
    eprintln!("partition: {}", stdout.trim().replace('\n', "; "));
}

/// Delay where the kernel has no netem: the delay line holds every frame of
/// a node's link for the delay, each way. With 50 ms on each link, a put of
/// 4 KiB from a prefill node to a decode node crosses two links each way
/// at least once (its write and the acknowledgement): at least 200 ms,
/// where an unshaped one takes about a millisecond.
#[test]
fn a_delayed_testbed_delays_every_transfer_by_its_links() {
    let dir = tempfile::tempdir().unwrap();
    let tb = dir.path().join("tb");
    let moonlab = env!("CARGO_BIN_EXE_moonlab");
    let mut c = Command::new("bash");
    c.arg(SCRIPT)
        .args([
            "--config",
            CONFIG,
            "--set",
            "model=llama3-8b",
            "--delay",
            "50",
            "--dir",
        ])
        .arg(&tb)
        .env("MOONLAB", moonlab)
        .args(["--", moonlab, "real", "netcheck", "--cluster"])
        .arg(&tb)
        .args(["--bytes", "4KiB", "--repeat", "1"]);
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.code() == Some(2) {
        eprintln!("{}", stdout.trim());
        return;
    }
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let one = stdout
        .lines()
        .find(|l| l.contains("| one flow |"))
        .unwrap_or_else(|| panic!("no one-flow row: {stdout}"));
    let measured: f64 = one.split('|').nth(5).unwrap().trim().parse().unwrap();
    assert!(
        measured >= 200.0,
        "a 4 KiB put across two 50 ms links took {measured} ms"
    );
}
