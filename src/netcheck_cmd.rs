//! `moonlab real netcheck`: the simulator's network model (max-min fair
//! flows over each node's NIC, `sim::cluster::flows`) against transfers
//! measured on a testbed (`real/testbed/testbed.sh`, whose links are
//! shaped to each node's NIC rate times `real.bytes_scale`): one flow, two
//! flows sharing a receiver, two sharing a sender, and many-to-one incast.
//! Each scenario's flows start together; each flow's measured time is set
//! against the time the model gives it, and the error reported.

use crate::real_cmd::{runtime, size_arg};
use crate::replay_cmd::read_cluster;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use moonlab_core::Nanos;
use moonlab_real::replay::conductor::{timed_flows, Flow};
use moonlab_real::replay::WorkerRole;
use moonlab_sim::cluster::flows::{LinkKind, Network};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct NetcheckArgs {
    /// The testbed's folder (its `links` file gives each node's shaped rate).
    #[arg(long)]
    cluster: PathBuf,
    /// Bytes per flow.
    #[arg(long, default_value = "4MiB")]
    bytes: String,
    /// Runs of each scenario (the median error is reported).
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// A label for this run's shape (in the table).
    #[arg(long, default_value = "")]
    label: String,
}

/// A testbed node's shaped rate in bits per second (0: unshaped), by name
/// (`p0`, `d1`, `m`).
fn read_links(dir: &Path) -> Result<BTreeMap<String, u64>> {
    let path = dir.join("links");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read (is the testbed up?)", path.display()))?;
    let mut m = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(bits)) = (w.first(), w.get(3).and_then(|b| b.parse().ok())) else {
            bail!(
                "{}:{}: expected `NAME ADDR NAMESPACE BITS_PER_S`, got `{line}`",
                path.display(),
                n + 1
            );
        };
        m.insert(name.to_string(), bits);
    }
    Ok(m)
}

fn node_name(role: WorkerRole, k: usize) -> String {
    match role {
        WorkerRole::Prefill => format!("p{k}"),
        WorkerRole::Decode => format!("d{k}"),
    }
}

/// The model's completion time of each flow, all started at 0: each node
/// has a send and a receive link at its shaped rate; a flow crosses its
/// sender's and its receiver's.
pub fn predict(flows: &[Flow], rates: &BTreeMap<String, u64>) -> Result<Vec<f64>> {
    let mut net: Network<usize> = Network::new();
    let mut links = BTreeMap::new();
    let mut link = |net: &mut Network<usize>, name: &str, dir: &str| -> Result<_> {
        let key = format!("{name} {dir}");
        if let Some(&l) = links.get(&key) {
            return Ok(l);
        }
        let bits = *rates
            .get(name)
            .ok_or_else(|| anyhow!("the testbed has no node `{name}`"))?;
        if bits == 0 {
            bail!("node `{name}` is not shaped: the model needs its rate");
        }
        let kind = if dir == "tx" {
            LinkKind::NicTx
        } else {
            LinkKind::NicRx
        };
        let l = net.add_link(bits as f64 / 8.0, kind);
        links.insert(key, l);
        Ok(l)
    };
    let mut paths = Vec::new();
    for f in flows {
        let from = node_name(f.from.0, f.from.1);
        let to = match f.to.split_once('-') {
            Some(("prefill", k)) => format!("p{k}"),
            Some(("decode", k)) => format!("d{k}"),
            _ => bail!("segment `{}` is not a worker's", f.to),
        };
        paths.push(vec![
            link(&mut net, &from, "tx")?,
            link(&mut net, &to, "rx")?,
        ]);
    }
    for (i, (f, p)) in flows.iter().zip(paths).enumerate() {
        net.start(Nanos::ZERO, p, f.bytes as f64, i);
    }
    let mut ends = vec![0.0; flows.len()];
    let mut done = Vec::new();
    while let Some(t) = net.next_completion() {
        if t == Nanos::MAX {
            bail!("a flow of the model never completes");
        }
        done.clear();
        net.complete_due(t, &mut done);
        for &i in &done {
            ends[i] = t.as_secs_f64();
        }
    }
    Ok(ends)
}

fn scenarios(prefill: usize, decode: usize, bytes: u64) -> Vec<(&'static str, Vec<Flow>)> {
    let flow = |p: usize, d: usize| Flow {
        from: (WorkerRole::Prefill, p),
        to: WorkerRole::Decode.segment(d as u32),
        bytes,
    };
    let mut s = vec![("one flow", vec![flow(0, 0)])];
    if prefill >= 2 {
        s.push(("two flows, one receiver", vec![flow(0, 0), flow(1, 0)]));
    }
    if decode >= 2 {
        s.push(("two flows, one sender", vec![flow(0, 0), flow(0, 1)]));
    }
    if prefill >= 3 {
        s.push((
            "incast (every prefill node to one decode node)",
            (0..prefill).map(|p| flow(p, 0)).collect(),
        ));
    }
    s
}

pub fn run(a: NetcheckArgs) -> Result<()> {
    let bytes = size_arg("--bytes", &a.bytes)?;
    if a.repeat == 0 || a.repeat > 100 {
        bail!("--repeat: expected 1 to 100, got {}", a.repeat);
    }
    let rates = read_links(&a.cluster)?;
    let rt = runtime()?;
    let targets = rt.block_on(read_cluster(&a.cluster))?;
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| shape | scenario | flows | model time (ms) | measured time (ms, median flow, median run) | error |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|");
    for (name, flows) in scenarios(targets.prefill.len(), targets.decode.len(), bytes) {
        let predicted = predict(&flows, &rates)?;
        let mut errors = Vec::new();
        let mut measured_ms = Vec::new();
        for _ in 0..a.repeat {
            let times = rt
                .block_on(timed_flows(&targets, &flows))
                .map_err(|e| anyhow!("{name}: {e}"))?;
            let mut errs: Vec<f64> = times
                .iter()
                .zip(&predicted)
                .map(|(&(s, e), &p)| (e - s) as f64 / 1e9 / p - 1.0)
                .collect();
            let mut ms: Vec<f64> = times.iter().map(|&(s, e)| (e - s) as f64 / 1e6).collect();
            errs.sort_by(f64::total_cmp);
            ms.sort_by(f64::total_cmp);
            errors.push(errs[errs.len() / 2]);
            measured_ms.push(ms[ms.len() / 2]);
        }
        errors.sort_by(f64::total_cmp);
        measured_ms.sort_by(f64::total_cmp);
        let mut model = predicted.clone();
        model.sort_by(f64::total_cmp);
        let _ = writeln!(
            table,
            "| {} | {name} | {} | {:.1} | {:.1} | {:+.1} % |",
            a.label,
            flows.len(),
            model[model.len() / 2] * 1e3,
            measured_ms[measured_ms.len() / 2],
            100.0 * errors[errors.len() / 2]
        );
    }
    crate::output::emit(&table)
}
