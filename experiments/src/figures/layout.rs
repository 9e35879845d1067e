//! Where everything goes in a figure's cell: the title, the plot area left
//! after the axis titles and tick labels have been measured, the axes'
//! ranges and ticks (thinned until their labels keep apart), wrapped
//! category labels, and the legend — inside the plot in the corner where it
//! covers no data, else above the plot.

use super::canvas::{clip_segment, measure, Rect};
use super::model::{Figure, LegendPos, Scale};
use super::prepare::{Body, Prepared};
use super::scale::{self, Domain, Extent, Ticks};
use super::style::{self, metrics};

/// What a legend entry shows beside its name.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Swatch {
    Line {
        line: bool,
        marker: bool,
        band: bool,
    },
    Bar,
}

#[derive(Clone, Debug)]
pub(crate) struct LegendItem {
    pub name: String,
    /// Style index (colour, marker, dash or hatch).
    pub index: usize,
    pub swatch: Swatch,
}

#[derive(Clone, Debug)]
pub(crate) struct Legend {
    /// The box; framed (white, with an edge) inside the plot.
    pub rect: Rect,
    pub framed: bool,
    /// Each item with the left end of its swatch and its row's middle.
    pub items: Vec<(LegendItem, (f64, f64))>,
}

pub(crate) const SWATCH_W: f64 = 30.0;
const SWATCH_GAP: f64 = 7.0;
const ITEM_GAP: f64 = 22.0;
const BOX_PAD_X: f64 = 8.0;
const BOX_PAD_Y: f64 = 5.0;
const INSET: f64 = 8.0;

fn row_h() -> f64 {
    style::LEGEND_SIZE * 1.32
}

fn text_h(size: f64) -> f64 {
    (metrics::CAP + metrics::DESCENT) * size
}

#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub cell: Rect,
    pub plot: Rect,
    /// `None` for bars: x holds categories.
    pub xd: Option<Domain>,
    pub yd: Domain,
    pub xt: Ticks,
    pub yt: Ticks,
    /// Category labels, wrapped into lines.
    pub cats: Vec<Vec<String>>,
    pub legend: Option<Legend>,
    /// Where the title's capitals start, and the title itself (shortened
    /// to fit, if need be).
    pub title: Option<(String, f64)>,
    /// Each reference line's label box (`None`: no label, or off the plot).
    pub refs: Vec<Option<Rect>>,
    /// The plot area is too small (by the legend, or a tiny figure).
    pub cramped: bool,
}

impl Layout {
    pub fn px(&self, x: f64) -> f64 {
        match self.xd {
            Some(d) => self.plot.x0 + d.frac(x) * self.plot.w(),
            None => self.plot.x0,
        }
    }
    pub fn py(&self, y: f64) -> f64 {
        self.plot.y1 - self.yd.frac(y) * self.plot.h()
    }
    pub fn map(&self, (x, y): (f64, f64)) -> (f64, f64) {
        (self.px(x), self.py(y))
    }
    /// The width of one category's slot.
    pub fn slot(&self) -> f64 {
        self.plot.w() / self.cats.len().max(1) as f64
    }
    pub fn cat_x(&self, i: usize) -> f64 {
        self.plot.x0 + (i as f64 + 0.5) * self.slot()
    }
}

pub(crate) fn legend_items(prep: &Prepared) -> Vec<LegendItem> {
    let mut items: Vec<LegendItem> = match &prep.body {
        Body::Xy(series) => series
            .iter()
            .map(|s| LegendItem {
                name: s.name.clone(),
                index: s.index,
                swatch: Swatch::Line {
                    line: !s.line.is_empty(),
                    marker: !s.markers.is_empty(),
                    band: s.band && !s.intervals.is_empty(),
                },
            })
            .collect(),
        Body::Bars { series, .. } => series
            .iter()
            .enumerate()
            .map(|(index, s)| LegendItem {
                name: s.name.clone(),
                index,
                swatch: Swatch::Bar,
            })
            .collect(),
    };
    // A stack's legend reads top to bottom, like the stack.
    if let Body::Bars { stacked: true, .. } = prep.body {
        items.reverse();
    }
    items.retain(|i| !i.name.is_empty());
    items
}

fn item_w(item: &LegendItem) -> f64 {
    SWATCH_W + SWATCH_GAP + measure(&item.name, style::LEGEND_SIZE).0
}

/// A framed column of items with its top-left corner at (x, y).
fn column(items: &[LegendItem], (x, y): (f64, f64), framed: bool) -> Legend {
    let w = items.iter().map(item_w).fold(0.0, f64::max) + 2.0 * BOX_PAD_X;
    let h = items.len() as f64 * row_h() + 2.0 * BOX_PAD_Y;
    let placed = items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            (
                it.clone(),
                (x + BOX_PAD_X, y + BOX_PAD_Y + (i as f64 + 0.5) * row_h()),
            )
        })
        .collect();
    Legend {
        rect: Rect::new(x, y, x + w, y + h),
        framed,
        items: placed,
    }
}

fn column_size(items: &[LegendItem]) -> (f64, f64) {
    let r = column(items, (0.0, 0.0), true).rect;
    (r.w(), r.h())
}

/// Items in rows of at most `width`, centred on `cx`, from `top` down.
fn rows(items: &[LegendItem], cx: f64, top: f64, width: f64) -> Legend {
    let mut lines: Vec<Vec<(LegendItem, f64)>> = vec![Vec::new()];
    let mut used = 0.0;
    for it in items {
        let w = item_w(it);
        let need = if used > 0.0 { used + ITEM_GAP + w } else { w };
        if need > width && used > 0.0 {
            lines.push(Vec::new());
            used = w;
        } else {
            used = need;
        }
        if let Some(l) = lines.last_mut() {
            l.push((it.clone(), w));
        }
    }
    let mut placed = Vec::new();
    let mut x_min = f64::INFINITY;
    let mut x_max = f64::NEG_INFINITY;
    for (r, line) in lines.iter().enumerate() {
        let total: f64 =
            line.iter().map(|(_, w)| w).sum::<f64>() + ITEM_GAP * (line.len().max(1) - 1) as f64;
        let mut x = cx - total / 2.0;
        x_min = x_min.min(x);
        x_max = x_max.max(x + total);
        for (it, w) in line {
            placed.push((it.clone(), (x, top + (r as f64 + 0.5) * row_h())));
            x += w + ITEM_GAP;
        }
    }
    Legend {
        rect: Rect::new(x_min, top, x_max, top + lines.len() as f64 * row_h()),
        framed: false,
        items: placed,
    }
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Mode {
    Inside,
    Above,
    Right,
    None,
}

pub(crate) fn layout(fig: &Figure, prep: &Prepared, cell: Rect) -> Layout {
    let mut items = legend_items(prep);
    // A name longer than the figure is wide is shortened.
    let room = cell.w() - 2.0 * style::PAD - SWATCH_W - SWATCH_GAP;
    for it in &mut items {
        it.name = fit_text(&it.name, style::LEGEND_SIZE, room);
    }
    let mode = match fig.legend {
        _ if items.is_empty() => Mode::None,
        LegendPos::None => Mode::None,
        LegendPos::Above => Mode::Above,
        LegendPos::Right => Mode::Right,
        LegendPos::Auto => Mode::Inside,
    };
    let mut l = compute(fig, prep, cell, &items, mode);
    if mode == Mode::Inside {
        place_ref_labels(&mut l, prep, fig);
        match best_corner(&l, prep, fig, &items) {
            Some(legend) => l.legend = Some(legend),
            None => l = compute(fig, prep, cell, &items, Mode::Above),
        }
    }
    // A legend that leaves the plot no room (a small figure, many or long
    // names) goes beside it, or, failing that, is left out.
    for fallback in [Mode::Right, Mode::None] {
        if l.legend.is_some() && l.cramped {
            l = compute(fig, prep, cell, &items, fallback);
        }
    }
    place_ref_labels(&mut l, prep, fig);
    l
}

/// Puts each reference line's label at the end of the line, above or
/// below it, where it covers the least data (right and above preferred).
fn place_ref_labels(l: &mut Layout, prep: &Prepared, fig: &Figure) {
    l.refs.clear();
    let mut occ = occupied(l, prep, fig);
    let p = l.plot;
    for r in &fig.refs {
        let y = l.py(r.y);
        if r.label.is_empty() || y < p.y0 - 0.5 || y > p.y1 + 0.5 {
            l.refs.push(None);
            continue;
        }
        let (w, h) = measure(&r.label, style::NOTE_SIZE);
        let (left, right) = (p.x0 + 6.0, p.x1 - 6.0 - w);
        let (above, below) = (y - 4.0 - h, y + 4.0);
        let spots = [(right, above), (left, above), (right, below), (left, below)];
        let best = spots
            .iter()
            .map(|&(x, top)| Rect::new(x, top, x + w, top + h))
            .filter(|q| q.y0 >= p.y0 + 2.0 && q.y1 <= p.y1 - 2.0)
            .map(|q| (overlap(&occ, &q), q))
            .fold(None, |best: Option<(f64, Rect)>, (s, q)| match best {
                Some((b, _)) if b <= s => best,
                _ => Some((s, q)),
            })
            .map(|(_, q)| q);
        if let Some(q) = best {
            occ.rects.push(q);
        }
        l.refs.push(best);
    }
}

/// Shortens `s` with an ellipsis until it is at most `w` wide at `size`.
pub(crate) fn fit_text(s: &str, size: f64, w: f64) -> String {
    if measure(s, size).0 <= w {
        return s.to_string();
    }
    // The longest prefix that fits with the ellipsis (binary search).
    let chars: Vec<char> = s.chars().collect();
    let with = |n: usize| chars[..n].iter().collect::<String>() + "…";
    let (mut lo, mut hi) = (0, chars.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if measure(&with(mid), size).0 <= w {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    with(lo)
}

fn compute(fig: &Figure, prep: &Prepared, cell: Rect, items: &[LegendItem], mode: Mode) -> Layout {
    let mut top = cell.y0 + style::PAD;
    let title = fig.title.as_ref().filter(|t| !t.is_empty()).map(|t| {
        let t = fit_text(t, style::TITLE_SIZE, cell.w() - 2.0 * style::PAD);
        let y = top;
        top += text_h(style::TITLE_SIZE) + 1.5 * style::GAP;
        (t, y)
    });
    let mut legend = None;
    if mode == Mode::Above {
        let lg = rows(
            items,
            cell.x0 + cell.w() / 2.0,
            top,
            cell.w() - 2.0 * style::PAD,
        );
        top = lg.rect.y1 + style::GAP;
        legend = Some(lg);
    }
    // Half a tick label sticks out above the top tick.
    top += text_h(style::TICK_SIZE) / 2.0;
    let right_legend = if mode == Mode::Right {
        column_size(items).0 + style::GAP
    } else {
        0.0
    };
    let x_title = fig.x.title();
    let y_title = fig.y.title();
    let x_title_h = if x_title.is_empty() {
        0.0
    } else {
        text_h(style::LABEL_SIZE) + style::GAP
    };
    let y_title_w = if y_title.is_empty() {
        0.0
    } else {
        text_h(style::LABEL_SIZE) + style::GAP + 2.0
    };
    let bars = prep.x.is_none();
    let categories: Vec<String> = match &prep.body {
        Body::Bars { categories, .. } => categories.clone(),
        Body::Xy(_) => Vec::new(),
    };
    let tick_line = style::TICK_SIZE * 1.2;
    let mut x_lines = 1usize;
    let mut out = None;
    for _ in 0..3 {
        let bottom = cell.y1
            - style::PAD
            - x_title_h
            - text_h(style::TICK_SIZE)
            - (x_lines - 1) as f64 * tick_line
            - style::TICK_LEN
            - 4.0;
        let (yd, yt) = y_ticks(fig, prep, bottom - top);
        let ytw = yt
            .major
            .iter()
            .filter_map(|t| t.label.as_ref())
            .map(|s| measure(s, style::TICK_SIZE).0)
            .fold(0.0, f64::max);
        let left = cell.x0 + style::PAD + y_title_w + ytw + 4.0 + style::TICK_LEN;
        let mut right = cell.x1 - style::PAD - right_legend;
        let (xd, xt, cats) = if bars {
            let slot = (right - left) / categories.len().max(1) as f64;
            let cats: Vec<Vec<String>> = categories
                .iter()
                .map(|c| wrap(c, style::TICK_SIZE, slot - 6.0))
                .collect();
            (None, Ticks::default(), cats)
        } else {
            let (mut xd, mut xt) = x_ticks(fig, prep, right - left);
            // The last label may stick out past the plot's right end.
            let last_x = xt
                .major
                .iter()
                .rev()
                .find_map(|t| t.label.as_ref().map(|l| (t.value, l)))
                .map(|(v, l)| {
                    left + xd.frac(v) * (right - left) + measure(l, style::TICK_SIZE).0 / 2.0
                });
            if let Some(end) = last_x {
                let limit = cell.x1 - 3.0 - right_legend;
                if end > limit {
                    right -= (end - limit).min(0.3 * (right - left));
                    (xd, xt) = x_ticks(fig, prep, right - left);
                }
            }
            (Some(xd), xt, Vec::new())
        };
        let lines = cats.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let cramped = right - left < 80.0 || bottom - top < 60.0;
        let plot = Rect::new(left, top, right.max(left + 1.0), bottom.max(top + 1.0));
        let done = lines == x_lines;
        x_lines = lines;
        out = Some(Layout {
            cell,
            plot,
            xd,
            yd,
            xt,
            yt,
            cats,
            legend: legend.clone(),
            title: title.clone(),
            refs: Vec::new(),
            cramped,
        });
        if done {
            break;
        }
    }
    let mut l = out.expect("the loop runs at least once");
    if mode == Mode::Right {
        l.legend = Some(column(items, (l.plot.x1 + style::GAP, l.plot.y0), false));
    }
    l
}

/// Words of `s` in at most three lines no wider than `w` (a word longer
/// than `w` gets a line of its own; a third line that is not the last ends
/// in an ellipsis).
fn wrap(s: &str, size: f64, w: f64) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in s.split_whitespace() {
        match lines.last_mut() {
            Some(last) if measure(&format!("{last} {word}"), size).0 <= w => {
                last.push(' ');
                last.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    if lines.is_empty() {
        lines.push(String::new());
    }
    if lines.len() > 3 {
        let rest = lines[2..].join(" ");
        lines.truncate(2);
        lines.push(fit_text(&format!("{rest}…"), size, w.max(size)));
    }
    lines
}

fn extent_for(prep: &Prepared, x: bool) -> Extent {
    if x {
        prep.x.unwrap_or(Extent {
            min: 0.0,
            max: 1.0,
            from_zero: false,
            pad: false,
            zero: false,
        })
    } else {
        prep.y
    }
}

fn y_ticks(fig: &Figure, prep: &Prepared, h: f64) -> (Domain, Ticks) {
    let fixed = fig.y.range.or(prep.y_fixed);
    let min_gap = style::TICK_SIZE * 1.6;
    axis_ticks(
        &fig.y,
        extent_for(prep, false),
        fixed,
        h,
        50.0,
        &|ticks, d| spaced(ticks, d, h, &|_| min_gap),
    )
}

fn x_ticks(fig: &Figure, prep: &Prepared, w: f64) -> (Domain, Ticks) {
    axis_ticks(
        &fig.x,
        extent_for(prep, true),
        fig.x.range,
        w,
        80.0,
        &|ticks, d| spaced(ticks, d, w, &|l| measure(l, style::TICK_SIZE).0 + 14.0),
    )
}

/// Whether consecutive labels are at least `need` apart (half of each
/// one's need on either side of its tick).
fn spaced(t: &Ticks, d: Domain, len: f64, need: &dyn Fn(&str) -> f64) -> bool {
    let mut prev: Option<(f64, f64)> = None;
    for tick in &t.major {
        if let Some(l) = &tick.label {
            let pos = d.frac(tick.value) * len;
            let half = need(l) / 2.0;
            if let Some((p, ph)) = prev {
                if pos - p < ph + half {
                    return false;
                }
            }
            prev = Some((pos, half));
        }
    }
    true
}

fn axis_ticks(
    axis: &super::model::Axis,
    ext: Extent,
    fixed: Option<(f64, f64)>,
    len: f64,
    per_tick: f64,
    fits: &dyn Fn(&Ticks, Domain) -> bool,
) -> (Domain, Ticks) {
    match axis.scale {
        Scale::Log => {
            let d = scale::fit_log(ext, fixed);
            let mut last = None;
            for stride in 1..=6 {
                let t = scale::log_ticks(d, stride, axis.format);
                if fits(&t, d) {
                    return (d, t);
                }
                last = Some(t);
            }
            // Still crowded (1-2-5 ticks in a short range): keep labels
            // greedily, each clear of the last kept.
            let mut t = last.unwrap_or_default();
            thin(&mut t, d, fits);
            (d, t)
        }
        Scale::Linear => {
            // Among tick counts near the target (one per `per_tick` of
            // length) whose labels fit, the one whose range wastes least
            // around the data, traded against the distance to the target.
            let target = ((len / per_tick) as usize).clamp(2, 10);
            let data = (ext.max - ext.min).max(0.0);
            let mut best: Option<(f64, Domain, Ticks)> = None;
            for n in 2..=2 * target + 2 {
                let (d, step) = scale::fit_linear(ext, fixed, n);
                let t = scale::linear_ticks(d, step, axis.format);
                if t.major.len() < 2 || !fits(&t, d) {
                    continue;
                }
                let cover = if fixed.is_some() || data == 0.0 {
                    1.0
                } else {
                    data / (d.hi - d.lo)
                };
                let score = cover - 0.03 * (t.major.len() as f64 - (target + 1) as f64).abs();
                if best.as_ref().is_none_or(|(b, _, _)| score > *b + 1e-9) {
                    best = Some((score, d, t));
                }
            }
            match best {
                Some((_, d, t)) => (d, t),
                None => {
                    let (d, step) = scale::fit_linear(ext, fixed, 2);
                    let mut t = scale::linear_ticks(d, step, axis.format);
                    thin(&mut t, d, fits);
                    (d, t)
                }
            }
        }
    }
}

/// Drops labels until the rest fit, keeping the first and each one clear
/// of the last kept.
fn thin(t: &mut Ticks, d: Domain, fits: &dyn Fn(&Ticks, Domain) -> bool) {
    let mut kept = Ticks {
        major: Vec::new(),
        minor: t.minor.clone(),
    };
    for tick in &t.major {
        let mut trial = kept.clone();
        trial.major.push(tick.clone());
        if tick.label.is_none() || fits(&trial, d) {
            kept = trial;
        } else {
            let mut bare = tick.clone();
            bare.label = None;
            kept.major.push(bare);
        }
    }
    *t = kept;
}

/// Where the data lies, for the legend to avoid: points along lines and
/// error bars, markers, bars, reference lines and their labels.
struct Occupied {
    points: Vec<(f64, f64)>,
    rects: Vec<Rect>,
}

fn occupied(l: &Layout, prep: &Prepared, fig: &Figure) -> Occupied {
    let mut points = Vec::new();
    let mut rects = Vec::new();
    let plot = l.plot;
    let sample = |a: (f64, f64), b: (f64, f64), points: &mut Vec<(f64, f64)>| {
        if let Some((a, b)) = clip_segment(a, b, &plot) {
            let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
            let n = (len / 3.0).ceil().max(1.0) as usize;
            for i in 0..=n {
                let t = i as f64 / n as f64;
                points.push((a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t));
            }
        }
    };
    match &prep.body {
        Body::Xy(series) => {
            for s in series {
                for w in s.line.windows(2) {
                    sample(l.map(w[0]), l.map(w[1]), &mut points);
                }
                for &m in &s.markers {
                    let (x, y) = l.map(m);
                    let r = style::MARKER_RADIUS + 1.0;
                    rects.push(Rect::new(x - r, y - r, x + r, y + r));
                }
                for &(x, lo, hi) in &s.intervals {
                    let x = l.px(x);
                    if s.band {
                        let (y0, y1) = (l.py(lo), l.py(hi));
                        rects.push(Rect::new(x - 1.0, y0, x + 1.0, y1));
                    } else {
                        sample((x, l.py(lo)), (x, l.py(hi)), &mut points);
                    }
                }
            }
            // Bands: the area between consecutive intervals.
            for s in series.iter().filter(|s| s.band) {
                for w in s.intervals.windows(2) {
                    let (x0, x1) = (l.px(w[0].0), l.px(w[1].0));
                    let top = l.py(w[0].2.max(w[1].2));
                    let bot = l.py(w[0].1.min(w[1].1));
                    rects.push(Rect::new(x0, top, x1, bot));
                }
            }
        }
        Body::Bars { .. } => {
            for (r, _, _) in super::paint::bar_rects(l, prep) {
                rects.push(r);
            }
        }
    }
    for r in &fig.refs {
        let y = l.py(r.y);
        sample((plot.x0, y), (plot.x1, y), &mut points);
    }
    rects.extend(l.refs.iter().flatten());
    Occupied { points, rects }
}

fn overlap(o: &Occupied, r: &Rect) -> f64 {
    let zone = r.inflate(3.0);
    let pts = o.points.iter().filter(|&&p| zone.contains(p)).count() as f64;
    let area: f64 = o
        .rects
        .iter()
        .filter_map(|q| q.intersect(&zone))
        .map(|q| q.w() * q.h())
        .sum();
    pts + area / 9.0
}

/// The inside position covering no data: top right, top left, bottom
/// right, bottom left, top centre, bottom centre, in that order of
/// preference. `None` when each covers some, or the legend does not fit.
fn best_corner(l: &Layout, prep: &Prepared, fig: &Figure, items: &[LegendItem]) -> Option<Legend> {
    let (w, h) = column_size(items);
    let p = l.plot;
    if w > p.w() - 2.0 * INSET || h > p.h() - 2.0 * INSET {
        return None;
    }
    let occ = occupied(l, prep, fig);
    let (left, right) = (p.x0 + INSET, p.x1 - INSET - w);
    let (top, bottom) = (p.y0 + INSET, p.y1 - INSET - h);
    let centre = p.x0 + (p.w() - w) / 2.0;
    let spots = [
        (right, top),
        (left, top),
        (right, bottom),
        (left, bottom),
        (centre, top),
        (centre, bottom),
    ];
    spots
        .iter()
        .map(|&(x, y)| column(items, (x, y), true))
        .find(|lg| overlap(&occ, &lg.rect) == 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_words_whole() {
        let w = measure("cache-aware", style::TICK_SIZE).0 + 1.0;
        assert_eq!(
            wrap("KVCache-centric cache-aware", style::TICK_SIZE, w),
            ["KVCache-centric", "cache-aware"]
        );
        assert_eq!(wrap("a b", style::TICK_SIZE, 500.0), ["a b"]);
    }

    fn laid_out(fig: &Figure) -> Layout {
        let prep = super::super::prepare::prepare(fig).unwrap();
        let (w, h) = fig.size;
        layout(fig, &prep, Rect::new(0.0, 0.0, w as f64, h as f64))
    }

    #[test]
    fn the_legend_goes_where_the_data_is_not() {
        use super::super::model::{Axis, Chart, Series};
        // Rising from bottom left to top right: the top left is free.
        let rising = |k: f64| {
            Series::new(
                format!("s{k}"),
                (0..20).map(move |i| (i as f64, k * i as f64)),
            )
        };
        let fig = Figure::new(
            Chart::Lines(vec![rising(1.0), rising(1.2)]),
            Axis::new("x"),
            Axis::new("y"),
        );
        let l = laid_out(&fig);
        let lg = l.legend.as_ref().expect("a legend");
        assert!(lg.framed, "inside the plot");
        assert!(
            lg.rect.x1 < (l.plot.x0 + l.plot.x1) / 2.0,
            "left: {:?} in {:?}",
            lg.rect,
            l.plot
        );
        assert!(
            lg.rect.y1 < (l.plot.y0 + l.plot.y1) / 2.0,
            "top: {:?} in {:?}",
            lg.rect,
            l.plot
        );
        for s in [1.0, 1.2] {
            for i in 0..20 {
                let p = l.map((i as f64, s * i as f64));
                assert!(!lg.rect.contains(p), "covers {p:?}");
            }
        }
        // Data everywhere: the legend goes above the plot.
        let noise = |k: usize| {
            Series::new(
                format!("n{k}"),
                (0..200).map(move |i| (i as f64, ((i * 7919 + k * 104729) % 97) as f64)),
            )
            .marks(super::super::model::Marks::Markers)
        };
        let fig = Figure::new(
            Chart::Lines(vec![noise(1), noise(2)]),
            Axis::new("x"),
            Axis::new("y"),
        );
        let l = laid_out(&fig);
        let lg = l.legend.as_ref().expect("a legend");
        assert!(
            !lg.framed && lg.rect.y1 <= l.plot.y0,
            "{:?} above {:?}",
            lg.rect,
            l.plot
        );
    }

    #[test]
    fn tick_labels_keep_apart() {
        use super::super::model::{Axis, Chart, Series};
        let fig = Figure::new(
            Chart::Lines(vec![Series::new("big", [(1e6, 1.0), (9.87654e9, 2.0)])]),
            Axis::new("x").format(super::super::model::TickFormat::Auto),
            Axis::new("y"),
        )
        .size(260, 200);
        let l = laid_out(&fig);
        let mut last_end = f64::NEG_INFINITY;
        for t in &l.xt.major {
            if let Some(label) = &t.label {
                let w = measure(label, style::TICK_SIZE).0;
                let x = l.px(t.value);
                assert!(x - w / 2.0 > last_end, "{label} overlaps its neighbour");
                last_end = x + w / 2.0;
            }
        }
        assert!(l.xt.major.iter().filter(|t| t.label.is_some()).count() >= 2);
    }

    #[test]
    fn long_titles_are_shortened() {
        let t = fit_text(&"long ".repeat(40), style::TITLE_SIZE, 200.0);
        assert!(t.ends_with('…') && measure(&t, style::TITLE_SIZE).0 <= 200.0);
    }
}
