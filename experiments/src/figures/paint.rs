//! Painting a laid-out figure: grid, bands, bars, reference lines, series
//! lines, error bars, markers, then the frame with its ticks and labels,
//! the titles and the legend — the same calls for the PNG and the SVG.

use super::canvas::{
    clip_polygon, clip_polyline, clip_segment, measure, Canvas, HAlign, Rect, VAlign,
};
use super::error::FigureError;
use super::layout::{Layout, Legend, Swatch, SWATCH_W};
use super::model::Figure;
use super::prepare::{Body, Prepared, XySeries};
use super::style;
use plotters::prelude::*;

type R = Result<(), FigureError>;

/// Each bar's rectangle (clipped to the plot), series and category.
pub(crate) fn bar_rects(l: &Layout, prep: &Prepared) -> Vec<(Rect, usize, usize)> {
    let Body::Bars {
        series, stacked, ..
    } = &prep.body
    else {
        return Vec::new();
    };
    let slot = l.slot();
    let base = if l.yd.log {
        l.plot.y1
    } else {
        l.py(0.0).clamp(l.plot.y0, l.plot.y1)
    };
    let mut out = Vec::new();
    for c in 0..l.cats.len() {
        let cx = l.cat_x(c);
        if *stacked {
            let bw = (0.6 * slot).min(96.0);
            let mut acc = 0.0;
            for (j, s) in series.iter().enumerate() {
                let (from, to) = (acc, acc + s.values[c]);
                acc = to;
                let r = Rect::new(cx - bw / 2.0, l.py(from), cx + bw / 2.0, l.py(to));
                if let Some(r) = r.intersect(&l.plot) {
                    out.push((r, j, c));
                }
            }
        } else {
            let n = series.len() as f64;
            let gw = (0.8 * slot).min(n * 64.0);
            let bw = gw / n;
            for (j, s) in series.iter().enumerate() {
                let x0 = cx - gw / 2.0 + j as f64 * bw;
                let r = Rect::new(x0, base, x0 + bw, l.py(s.values[c]));
                if let Some(r) = r.intersect(&l.plot) {
                    out.push((r, j, c));
                }
            }
        }
    }
    out
}

const REF_DASH: [f64; 2] = [6.0, 4.0];

pub(crate) fn paint<DB: DrawingBackend>(
    cv: &Canvas<DB>,
    fig: &Figure,
    prep: &Prepared,
    l: &Layout,
) -> R {
    let p = l.plot;
    // Grid under everything.
    let grid = style::GRID.to_rgba();
    for t in &l.yt.major {
        let y = l.py(t.value);
        cv.line((p.x0, y), (p.x1, y), grid, 1.0)?;
    }
    if l.xd.is_some() {
        for t in &l.xt.major {
            let x = l.px(t.value);
            cv.line((x, p.y0), (x, p.y1), grid, 1.0)?;
        }
    }
    match &prep.body {
        Body::Xy(series) => {
            for s in series.iter().filter(|s| s.band) {
                band(cv, l, s)?;
            }
            refs(cv, fig, l)?;
            for s in series {
                let runs = clip_polyline(&s.line.iter().map(|&q| l.map(q)).collect::<Vec<_>>(), &p);
                for run in runs {
                    cv.polyline(
                        &run,
                        style::color(s.index).to_rgba(),
                        style::SERIES_WIDTH,
                        style::dash(s.index),
                    )?;
                }
            }
            for s in series.iter().filter(|s| !s.band) {
                let c = style::color(s.index).to_rgba();
                for &(x, lo, hi) in &s.intervals {
                    error_bar(cv, l, l.px(x), lo, hi, c, style::CAP_HALF)?;
                }
            }
            for s in series {
                for &m in &s.markers {
                    let q = l.map(m);
                    if p.inflate(0.5).contains(q) {
                        cv.marker(
                            style::marker(s.index),
                            q,
                            style::MARKER_RADIUS,
                            style::color(s.index),
                        )?;
                    }
                }
            }
        }
        Body::Bars { series, .. } => {
            let rects = bar_rects(l, prep);
            for &(r, j, _) in &rects {
                cv.bar(r, style::color(j), style::hatch(j))?;
            }
            for &(r, j, c) in &rects {
                if let Some(iv) = &series[j].intervals {
                    let (lo, hi) = iv[c];
                    let half = (r.w() / 4.0).min(style::CAP_HALF);
                    error_bar(
                        cv,
                        l,
                        (r.x0 + r.x1) / 2.0,
                        lo,
                        hi,
                        style::INK.to_rgba(),
                        half,
                    )?;
                }
            }
            refs(cv, fig, l)?;
        }
    }
    frame(cv, fig, l)?;
    for (r, lr) in fig.refs.iter().zip(&l.refs) {
        if let Some(lr) = lr {
            cv.text(
                &r.label,
                (lr.x1, lr.y1),
                style::NOTE_SIZE,
                HAlign::Right,
                VAlign::Bottom,
                false,
                style::MUTED,
            )?;
        }
    }
    if let Some(lg) = &l.legend {
        legend(cv, lg)?;
    }
    Ok(())
}

fn band<DB: DrawingBackend>(cv: &Canvas<DB>, l: &Layout, s: &XySeries) -> R {
    if s.intervals.len() < 2 {
        return Ok(());
    }
    let mut iv = s.intervals.clone();
    iv.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut poly: Vec<(f64, f64)> = iv.iter().map(|&(x, _, hi)| (l.px(x), l.py(hi))).collect();
    poly.extend(iv.iter().rev().map(|&(x, lo, _)| (l.px(x), l.py(lo))));
    let poly = clip_polygon(&poly, &l.plot);
    cv.polygon(&poly, style::color(s.index).mix(0.2))
}

fn error_bar<DB: DrawingBackend>(
    cv: &Canvas<DB>,
    l: &Layout,
    x: f64,
    lo: f64,
    hi: f64,
    c: RGBAColor,
    half: f64,
) -> R {
    let (y0, y1) = (l.py(lo), l.py(hi));
    if let Some((a, b)) = clip_segment((x, y0), (x, y1), &l.plot) {
        cv.line(a, b, c, style::ERROR_WIDTH)?;
    }
    for y in [y0, y1] {
        if l.plot.inflate(0.5).contains((x, y)) {
            cv.line((x - half, y), (x + half, y), c, style::ERROR_WIDTH)?;
        }
    }
    Ok(())
}

fn refs<DB: DrawingBackend>(cv: &Canvas<DB>, fig: &Figure, l: &Layout) -> R {
    for r in &fig.refs {
        let y = l.py(r.y);
        if y >= l.plot.y0 - 0.5 && y <= l.plot.y1 + 0.5 {
            cv.polyline(
                &[(l.plot.x0, y), (l.plot.x1, y)],
                style::MUTED.to_rgba(),
                1.4,
                &REF_DASH,
            )?;
        }
    }
    Ok(())
}

fn frame<DB: DrawingBackend>(cv: &Canvas<DB>, fig: &Figure, l: &Layout) -> R {
    let p = l.plot;
    let ink = style::INK.to_rgba();
    cv.stroke_rect(p, ink, style::FRAME_WIDTH)?;
    // y ticks and labels.
    for t in &l.yt.major {
        let y = l.py(t.value);
        cv.line(
            (p.x0 - style::TICK_LEN, y),
            (p.x0, y),
            ink,
            style::FRAME_WIDTH,
        )?;
        if let Some(label) = &t.label {
            cv.text(
                label,
                (p.x0 - style::TICK_LEN - 4.0, y),
                style::TICK_SIZE,
                HAlign::Right,
                VAlign::Middle,
                false,
                style::INK,
            )?;
        }
    }
    for &v in &l.yt.minor {
        let y = l.py(v);
        cv.line(
            (p.x0 - style::MINOR_TICK_LEN, y),
            (p.x0, y),
            ink,
            style::FRAME_WIDTH,
        )?;
    }
    let label_top = p.y1 + style::TICK_LEN + 4.0;
    if l.xd.is_some() {
        for t in &l.xt.major {
            let x = l.px(t.value);
            cv.line(
                (x, p.y1),
                (x, p.y1 + style::TICK_LEN),
                ink,
                style::FRAME_WIDTH,
            )?;
            if let Some(label) = &t.label {
                cv.text(
                    label,
                    (x, label_top),
                    style::TICK_SIZE,
                    HAlign::Center,
                    VAlign::Top,
                    false,
                    style::INK,
                )?;
            }
        }
        for &v in &l.xt.minor {
            let x = l.px(v);
            cv.line(
                (x, p.y1),
                (x, p.y1 + style::MINOR_TICK_LEN),
                ink,
                style::FRAME_WIDTH,
            )?;
        }
    } else {
        for (i, lines) in l.cats.iter().enumerate() {
            let x = l.cat_x(i);
            for (j, line) in lines.iter().enumerate() {
                let y = label_top + j as f64 * style::TICK_SIZE * 1.2;
                cv.text(
                    line,
                    (x, y),
                    style::TICK_SIZE,
                    HAlign::Center,
                    VAlign::Top,
                    false,
                    style::INK,
                )?;
            }
        }
    }
    // Axis titles.
    let xt = fig.x.title();
    if !xt.is_empty() {
        let y = l.cell.y1 - style::PAD;
        cv.text(
            &xt,
            ((p.x0 + p.x1) / 2.0, y),
            style::LABEL_SIZE,
            HAlign::Center,
            VAlign::Bottom,
            false,
            style::INK,
        )?;
    }
    let yt = fig.y.title();
    if !yt.is_empty() {
        let yt = super::layout::fit_text(&yt, style::LABEL_SIZE, p.h() + 40.0);
        cv.text(
            &yt,
            (l.cell.x0 + style::PAD, (p.y0 + p.y1) / 2.0),
            style::LABEL_SIZE,
            HAlign::Center,
            VAlign::Top,
            true,
            style::INK,
        )?;
    }
    if let Some((title, y)) = &l.title {
        // Centred on the plot, unless that would push it off the cell.
        let w = measure(title, style::TITLE_SIZE).0;
        let lo = l.cell.x0 + style::PAD + w / 2.0;
        let hi = l.cell.x1 - style::PAD - w / 2.0;
        let cx = ((p.x0 + p.x1) / 2.0).clamp(lo.min(hi), hi.max(lo));
        cv.text(
            title,
            (cx, *y),
            style::TITLE_SIZE,
            HAlign::Center,
            VAlign::Top,
            false,
            style::INK,
        )?;
    }
    Ok(())
}

fn legend<DB: DrawingBackend>(cv: &Canvas<DB>, lg: &Legend) -> R {
    if lg.framed {
        cv.fill_rect(lg.rect, WHITE.mix(0.92))?;
        cv.stroke_rect(lg.rect, style::LEGEND_EDGE.to_rgba(), 1.0)?;
    }
    for (item, (x, y)) in &lg.items {
        let (x, y) = (*x, *y);
        let c = style::color(item.index);
        match item.swatch {
            Swatch::Line { line, marker, band } => {
                if band {
                    cv.fill_rect(Rect::new(x, y - 6.0, x + SWATCH_W, y + 6.0), c.mix(0.2))?;
                }
                if line {
                    cv.polyline(
                        &[(x, y), (x + SWATCH_W, y)],
                        c.to_rgba(),
                        style::SERIES_WIDTH,
                        style::dash(item.index),
                    )?;
                }
                if marker {
                    cv.marker(
                        style::marker(item.index),
                        (x + SWATCH_W / 2.0, y),
                        style::MARKER_RADIUS,
                        c,
                    )?;
                }
            }
            Swatch::Bar => {
                let h = style::LEGEND_SIZE * 0.8;
                cv.bar(
                    Rect::new(x + 4.0, y - h / 2.0, x + SWATCH_W - 4.0, y + h / 2.0),
                    c,
                    style::hatch(item.index),
                )?;
            }
        }
        cv.text(
            &item.name,
            (x + SWATCH_W + 7.0, y),
            style::LEGEND_SIZE,
            HAlign::Left,
            VAlign::Middle,
            false,
            style::INK,
        )?;
    }
    Ok(())
}
