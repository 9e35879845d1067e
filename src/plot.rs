//! Figures drawn with plotters. Text is rendered with the DejaVu Sans font
//! embedded in the binary (`experiments/assets/`), so no system fonts are needed.

use anyhow::{anyhow, bail, Result};
use moonlab_sim::replay::ReplayResult;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = moonlab_experiments::figures::style::FONT;

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TTF; a failure would only lose text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum Kind {
    Png,
    Svg,
}

fn kind(path: &Path) -> Result<Kind> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("png") => Ok(Kind::Png),
        Some("svg") => Ok(Kind::Svg),
        _ => bail!(
            "--plot {}: expected a file name ending in .png or .svg",
            path.display()
        ),
    }
}

pub fn check_extension(path: &Path) -> Result<()> {
    kind(path).map(|_| ())
}

const W: u32 = 960;
/// Width of the legend column right of each panel.
const LEGEND_W: u32 = 140;

/// Tableau 10: distinct, colour-blind-friendlier line colours.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const H_PANEL: u32 = 520;

/// Hit rate against capacity (log scale), one line per policy and one panel
/// per trace and cache mode; unbounded runs are drawn as a dashed level.
/// Returns the encoded file (PNG or SVG) for `path`'s extension.
pub fn hit_rate_vs_capacity(
    results: &[ReplayResult],
    block_tokens: u32,
    path: &Path,
) -> Result<Vec<u8>> {
    register_font();
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
    let height = H_PANEL * panels.len().max(1) as u32;
    match kind(path)? {
        Kind::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, (W, height)).into_drawing_area();
                draw(&root, &panels, block_tokens)?;
                root.present().map_err(|e| anyhow!("drawing failed: {e}"))?;
            }
            Ok(svg.into_bytes())
        }
        Kind::Png => {
            let mut rgb = vec![0u8; (W * height * 3) as usize];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, (W, height)).into_drawing_area();
                draw(&root, &panels, block_tokens)?;
                root.present().map_err(|e| anyhow!("drawing failed: {e}"))?;
            }
            encode_png(&rgb, W, height)
        }
    }
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>> {
    let img =
        image::RgbImage::from_raw(w, h, rgb.to_vec()).ok_or_else(|| anyhow!("bad image buffer"))?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    panels: &[(String, Vec<&ReplayResult>)],
    block_tokens: u32,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for ((title, runs), panel) in panels.iter().zip(areas.iter()) {
        let (area, legend) = panel.split_horizontally(W - LEGEND_W);
        let bounded: Vec<u64> = runs.iter().filter_map(|r| r.capacity_blocks).collect();
        let lo = bounded.iter().copied().min().unwrap_or(1).max(1) as f64 * block_tokens as f64;
        let hi = bounded.iter().copied().max().unwrap_or(10).max(2) as f64 * block_tokens as f64;
        let (lo, hi) = if lo >= hi {
            (lo / 2.0, hi * 2.0)
        } else {
            (lo / 1.5, hi * 1.5)
        };
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..1f64)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("Cache capacity (tokens)")
            .y_desc("Prefix cache hit rate")
            .x_label_formatter(&|v| format_tokens(*v))
            .light_line_style(RGBColor(238, 238, 238))
            .axis_desc_style(("sans-serif", 16))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        let mut names: Vec<&str> = Vec::new();
        for r in runs {
            if !names.contains(&r.policy.as_str()) {
                names.push(&r.policy);
            }
        }
        for (i, name) in names.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let mut pts: Vec<(f64, f64)> = runs
                .iter()
                .filter(|r| r.policy == *name)
                .filter_map(|r| {
                    r.capacity_blocks
                        .map(|c| ((c.max(1) * block_tokens as u64) as f64, r.hit_rate))
                })
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow!("{e}"))?
                .label(name.to_string())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| anyhow!("{e}"))?;
        }
        if let Some(inf) = runs.iter().find(|r| r.capacity_blocks.is_none()) {
            let level = inf.hit_rate;
            let style = BLACK.mix(0.6).stroke_width(1);
            let dashes: Vec<(f64, f64)> = dash_points(lo, hi, 40);
            for pair in dashes.chunks(2) {
                if let [a, b] = pair {
                    chart
                        .draw_series(LineSeries::new(vec![(a.0, level), (b.0, level)], style))
                        .map_err(|e| anyhow!("{e}"))?;
                }
            }
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("unbounded: {:.1} %", 100.0 * level),
                    (lo * 1.1, (level + 0.03).min(0.97)),
                    ("sans-serif", 13),
                )))
                .map_err(|e| anyhow!("{e}"))?;
        }
        // The legend gets its own column, so it never hides a line.
        for (i, name) in names.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let y = 60 + 24 * i as i32;
            legend
                .draw(&PathElement::new(
                    vec![(8, y), (36, y)],
                    color.stroke_width(3),
                ))
                .map_err(|e| anyhow!("{e}"))?;
            legend
                .draw(&Text::new(
                    name.to_string(),
                    (44, y - 8),
                    ("sans-serif", 15),
                ))
                .map_err(|e| anyhow!("{e}"))?;
        }
    }
    Ok(())
}

/// Points spaced evenly on a log axis, paired into dashes.
fn dash_points(lo: f64, hi: f64, n: usize) -> Vec<(f64, f64)> {
    let (a, b) = (lo.ln(), hi.ln());
    (0..n)
        .map(|i| ((a + (b - a) * i as f64 / (n - 1) as f64).exp(), 0.0))
        .collect()
}

fn format_tokens(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.0}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.0}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}
