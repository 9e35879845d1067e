//! `moonlab cache --plot`: hit rate against capacity, drawn by the figures
//! library (`moonlab_experiments::figures`: one paper style, the embedded
//! DejaVu Sans font, PNG or SVG).

use anyhow::{anyhow, Result};
use moonlab_experiments::figures::{
    render_grid_as, Axis, Chart, Figure, Format, Grid, RefLine, Series, TickFormat,
};
use moonlab_sim::replay::ReplayResult;
use std::path::Path;

fn format(path: &Path) -> Result<Format> {
    Format::from_path(path).ok_or_else(|| {
        anyhow!(
            "--plot {}: expected a file name ending in .png or .svg",
            path.display()
        )
    })
}

pub fn check_extension(path: &Path) -> Result<()> {
    format(path).map(|_| ())
}

/// Hit rate against capacity (log scale), one line per policy and one panel
/// per trace and cache mode; unbounded runs are drawn as a dashed level.
/// Returns the encoded file (PNG or SVG) for `path`'s extension.
pub fn hit_rate_vs_capacity(
    results: &[ReplayResult],
    block_tokens: u32,
    path: &Path,
) -> Result<Vec<u8>> {
    let format = format(path)?;
    let mut panels: Vec<(String, Vec<&ReplayResult>)> = Vec::new();
    for r in results {
        let title = if r.nodes == 1 {
            format!("{} — one pooled cache", r.trace)
        } else {
            format!("{} — {} local caches", r.trace, r.nodes)
        };
        match panels.iter_mut().find(|(t, _)| *t == title) {
            Some((_, v)) => v.push(r),
            None => panels.push((title, vec![r])),
        }
    }
    let figures = panels
        .iter()
        .map(|(title, runs)| panel(title, runs, block_tokens))
        .collect();
    Ok(render_grid_as(&Grid::new(figures, 1), format)?)
}

fn panel(title: &str, runs: &[&ReplayResult], block_tokens: u32) -> Figure {
    let tokens = |blocks: u64| (blocks.max(1) * block_tokens as u64) as f64;
    let mut names: Vec<&str> = Vec::new();
    for r in runs {
        if !names.contains(&r.policy.as_str()) {
            names.push(&r.policy);
        }
    }
    let series: Vec<Series> = names
        .iter()
        .filter_map(|name| {
            let mut pts: Vec<(f64, f64)> = runs
                .iter()
                .filter(|r| r.policy == *name)
                .filter_map(|r| r.capacity_blocks.map(|c| (tokens(c), r.hit_rate)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            // A policy run only unbounded has no line, only the level.
            (!pts.is_empty()).then(|| Series::new(*name, pts))
        })
        .collect();
    let mut x = Axis::new("Cache capacity")
        .unit("tokens")
        .log()
        .format(TickFormat::Si);
    if series.is_empty() {
        // Only unbounded runs: a range around one block up to ten.
        x = x.range(tokens(1) / 1.5, tokens(10) * 1.5);
    }
    let mut fig = Figure::new(
        Chart::Lines(series),
        x,
        Axis::new("Prefix cache hit rate")
            .unit("%")
            .format(TickFormat::Percent)
            .range(0.0, 1.0),
    )
    .title(title)
    .size(640, 440);
    if let Some(inf) = runs.iter().find(|r| r.capacity_blocks.is_none()) {
        fig = fig.reference(RefLine::new(
            inf.hit_rate,
            format!("unbounded: {:.1} %", 100.0 * inf.hit_rate),
        ));
    }
    fig
}
