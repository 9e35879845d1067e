//! The drawing layer over plotters' backends: primitives in logical pixels
//! (scaled to device pixels here), dash patterns, markers, hatches, clipping
//! to the plot area, and text placed by the glyphs, so that the PNG and the
//! SVG put text in the same place. PNG text is rasterised here with
//! ab_glyph at fractional positions with kerning (plotters' bitmap text
//! rounds every glyph to a whole pixel, which spaces letters unevenly); SVG
//! text is left to the viewer, sized and anchored to match.

use super::error::FigureError;
use super::style::{self, metrics, Hatch, Marker};
use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontDesc, FontFamily, FontStyle, FontTransform};
use std::sync::OnceLock;

/// An axis-aligned rectangle in logical pixels.
#[derive(Copy, Clone, Debug, PartialEq)]
pub(crate) struct Rect {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

impl Rect {
    pub fn new(x0: f64, y0: f64, x1: f64, y1: f64) -> Self {
        Rect {
            x0: x0.min(x1),
            y0: y0.min(y1),
            x1: x0.max(x1),
            y1: y0.max(y1),
        }
    }
    pub fn w(&self) -> f64 {
        self.x1 - self.x0
    }
    pub fn h(&self) -> f64 {
        self.y1 - self.y0
    }
    pub fn contains(&self, (x, y): (f64, f64)) -> bool {
        x >= self.x0 && x <= self.x1 && y >= self.y0 && y <= self.y1
    }
    pub fn intersect(&self, o: &Rect) -> Option<Rect> {
        let r = Rect {
            x0: self.x0.max(o.x0),
            y0: self.y0.max(o.y0),
            x1: self.x1.min(o.x1),
            y1: self.y1.min(o.y1),
        };
        (r.x0 < r.x1 && r.y0 < r.y1).then_some(r)
    }
    pub fn inflate(&self, d: f64) -> Rect {
        Rect {
            x0: self.x0 - d,
            y0: self.y0 - d,
            x1: self.x1 + d,
            y1: self.y1 + d,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum HAlign {
    Left,
    Center,
    Right,
}

/// Vertical placement of text, by the glyphs: capital tops, the middle of
/// the capitals, or the descenders' bottom.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum VAlign {
    Top,
    Middle,
    Bottom,
}

fn font() -> Option<&'static FontRef<'static>> {
    static FONT: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(style::FONT).ok())
        .as_ref()
}

/// The width (advances with kerning) and height (capitals to descenders)
/// of `text` at `size`.
pub(crate) fn measure(text: &str, size: f64) -> (f64, f64) {
    let h = (metrics::CAP + metrics::DESCENT) * size;
    let Some(font) = font() else {
        return (0.0, h);
    };
    let sf = font.as_scaled(PxScale::from(size as f32));
    let mut w = 0f32;
    let mut prev = None;
    for c in text.chars() {
        let id = sf.glyph_id(c);
        if let Some(p) = prev {
            w += sf.kern(p, id);
        }
        w += sf.h_advance(id);
        prev = Some(id);
    }
    (w as f64, h)
}

/// Which backend a canvas draws on: they anchor and size text differently.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Bitmap,
    Svg,
}

pub(crate) struct Canvas<'a, DB: DrawingBackend> {
    area: &'a DrawingArea<DB, Shift>,
    /// Device pixels per logical pixel.
    k: f64,
    target: Target,
}

type R = Result<(), FigureError>;

fn drawing<E: std::fmt::Display>(e: E) -> FigureError {
    FigureError::Drawing(e.to_string())
}

impl<'a, DB: DrawingBackend> Canvas<'a, DB> {
    pub fn new(area: &'a DrawingArea<DB, Shift>, k: f64, target: Target) -> Self {
        Canvas { area, k, target }
    }

    fn p(&self, (x, y): (f64, f64)) -> (i32, i32) {
        ((x * self.k).round() as i32, (y * self.k).round() as i32)
    }

    fn width(&self, w: f64) -> u32 {
        ((w * self.k).round() as u32).max(1)
    }

    pub fn fill(&self, c: RGBColor) -> R {
        self.area.fill(&c).map_err(drawing)
    }

    /// A polyline, solid or dashed (`dash`: on, off, ... lengths).
    pub fn polyline(&self, pts: &[(f64, f64)], c: RGBAColor, w: f64, dash: &[f64]) -> R {
        if pts.len() < 2 {
            return Ok(());
        }
        let style = ShapeStyle::from(c).stroke_width(self.width(w));
        for piece in dashes(pts, dash) {
            let path: Vec<(i32, i32)> = piece.iter().map(|&p| self.p(p)).collect();
            self.area
                .draw(&PathElement::new(path, style))
                .map_err(drawing)?;
        }
        Ok(())
    }

    pub fn line(&self, a: (f64, f64), b: (f64, f64), c: RGBAColor, w: f64) -> R {
        self.polyline(&[a, b], c, w, &[])
    }

    pub fn polygon(&self, pts: &[(f64, f64)], c: RGBAColor) -> R {
        if pts.len() < 3 {
            return Ok(());
        }
        let path: Vec<(i32, i32)> = pts.iter().map(|&p| self.p(p)).collect();
        self.area
            .draw(&Polygon::new(path, ShapeStyle::from(c).filled()))
            .map_err(drawing)
    }

    pub fn fill_rect(&self, r: Rect, c: RGBAColor) -> R {
        self.area
            .draw(&Rectangle::new(
                [self.p((r.x0, r.y0)), self.p((r.x1, r.y1))],
                ShapeStyle::from(c).filled(),
            ))
            .map_err(drawing)
    }

    pub fn stroke_rect(&self, r: Rect, c: RGBAColor, w: f64) -> R {
        let pts = [
            (r.x0, r.y0),
            (r.x1, r.y0),
            (r.x1, r.y1),
            (r.x0, r.y1),
            (r.x0, r.y0),
        ];
        self.polyline(&pts, c, w, &[])
    }

    /// A bar: filled, hatched, outlined.
    pub fn bar(&self, r: Rect, fill: RGBColor, hatch: Hatch) -> R {
        self.fill_rect(r, fill.to_rgba())?;
        let ink = if style::luminance(fill) < 0.3 {
            WHITE.mix(0.7)
        } else {
            BLACK.mix(0.55)
        };
        let spacing = 6.0;
        let mut segs: Vec<((f64, f64), (f64, f64))> = Vec::new();
        // Diagonals x + y = c ("/") or x − y = c ("\\"), on multiples of
        // the spacing, so that hatches line up across stacked bars.
        let diag = |forward: bool, segs: &mut Vec<_>| {
            let step = spacing * 1.3;
            let (lo, hi) = if forward {
                (r.x0 + r.y0, r.x1 + r.y1)
            } else {
                (r.x0 - r.y1, r.x1 - r.y0)
            };
            let mut c = (lo / step).ceil() * step;
            while c <= hi {
                let (a, b) = if forward {
                    ((c - r.y1, r.y1), (c - r.y0, r.y0))
                } else {
                    ((c + r.y0, r.y0), (c + r.y1, r.y1))
                };
                if let Some(s) = clip_segment(a, b, &r) {
                    segs.push(s);
                }
                c += step;
            }
        };
        match hatch {
            Hatch::None => {}
            Hatch::Forward => diag(true, &mut segs),
            Hatch::Back => diag(false, &mut segs),
            Hatch::Cross => {
                diag(true, &mut segs);
                diag(false, &mut segs);
            }
            Hatch::Horizontal => {
                let mut y = r.y1 - spacing / 2.0;
                while y > r.y0 {
                    segs.push(((r.x0, y), (r.x1, y)));
                    y -= spacing;
                }
            }
            Hatch::Vertical => {
                let mut x = r.x0 + spacing / 2.0;
                while x < r.x1 {
                    segs.push(((x, r.y0), (x, r.y1)));
                    x += spacing;
                }
            }
            Hatch::Dots => {
                let mut y = r.y1 - spacing / 2.0;
                let mut row = 0;
                while y > r.y0 + 1.0 {
                    let mut x =
                        r.x0 + spacing / 2.0 + if row % 2 == 1 { spacing / 2.0 } else { 0.0 };
                    while x < r.x1 - 1.0 {
                        self.fill_rect(Rect::new(x - 0.9, y - 0.9, x + 0.9, y + 0.9), ink)?;
                        x += spacing;
                    }
                    y -= spacing;
                    row += 1;
                }
            }
        }
        for (a, b) in segs {
            self.line(a, b, ink, 1.0)?;
        }
        self.stroke_rect(r, style::INK.mix(0.85), 0.8)
    }

    pub fn marker(&self, m: Marker, (x, y): (f64, f64), r: f64, c: RGBColor) -> R {
        let poly = |pts: Vec<(f64, f64)>| self.polygon(&pts, c.to_rgba());
        let star = |n: usize, rot: f64, rad: f64| -> Vec<(f64, f64)> {
            (0..n)
                .map(|i| {
                    let a = rot + std::f64::consts::TAU * i as f64 / n as f64;
                    (x + rad * a.cos(), y - rad * a.sin())
                })
                .collect()
        };
        use std::f64::consts::FRAC_PI_2;
        match m {
            Marker::Circle => {
                let (cx, cy) = self.p((x, y));
                self.area
                    .draw(&Circle::new(
                        (cx, cy),
                        ((r * self.k).round() as i32).max(1),
                        ShapeStyle::from(c).filled(),
                    ))
                    .map_err(drawing)
            }
            Marker::Square => {
                let s = r * 0.88;
                self.fill_rect(Rect::new(x - s, y - s, x + s, y + s), c.to_rgba())
            }
            Marker::TriangleUp => poly(star(3, FRAC_PI_2, r * 1.25)),
            Marker::TriangleDown => poly(star(3, -FRAC_PI_2, r * 1.25)),
            Marker::Diamond => poly(star(4, FRAC_PI_2, r * 1.2)),
            Marker::Pentagon => poly(star(5, FRAC_PI_2, r * 1.08)),
            Marker::Cross => {
                let s = r * 0.95;
                self.line((x - s, y - s), (x + s, y + s), c.to_rgba(), 2.2)?;
                self.line((x - s, y + s), (x + s, y - s), c.to_rgba(), 2.2)
            }
            Marker::Plus => {
                let s = r * 1.15;
                self.line((x - s, y), (x + s, y), c.to_rgba(), 2.2)?;
                self.line((x, y - s), (x, y + s), c.to_rgba(), 2.2)
            }
        }
    }

    /// Text at (x, y): `h` says which end of the text is at x, `v` which
    /// part of the glyphs is at y. `vertical` text reads bottom to top; its
    /// `h` is along the text (Center: centred on y) and `v` across it
    /// (Top: the glyphs' tops, which point left, at x).
    #[allow(clippy::too_many_arguments)]
    pub fn text(
        &self,
        s: &str,
        (x, y): (f64, f64),
        size: f64,
        h: HAlign,
        v: VAlign,
        vertical: bool,
        c: RGBColor,
    ) -> R {
        if s.is_empty() {
            return Ok(());
        }
        // The baseline's offset below y (across the text when vertical).
        let below = match v {
            VAlign::Top => metrics::CAP * size,
            VAlign::Middle => metrics::CAP * size / 2.0,
            VAlign::Bottom => -metrics::DESCENT * size,
        };
        let along = match h {
            HAlign::Left => 0.0,
            HAlign::Center => -measure(s, size).0 / 2.0,
            HAlign::Right => -measure(s, size).0,
        };
        match self.target {
            Target::Bitmap => self.raster_text(s, (x, y), size, along, below, vertical, c),
            Target::Svg => {
                style::register_font();
                // The SVG backend writes `font-size: size / 1.24` and puts
                // the baseline 0.76 em below a top-anchored position; ask
                // for the size whose em is the raster's (which scales the
                // font to ascender − descender = size: em = 2048 / 2384).
                let ask = size * (2048.0 / 2384.0) * 1.24;
                let shift = below - 0.76 / 1.24 * ask;
                let hpos = match h {
                    HAlign::Left => HPos::Left,
                    HAlign::Center => HPos::Center,
                    HAlign::Right => HPos::Right,
                };
                let (px, py) = if vertical {
                    (x + shift, y)
                } else {
                    (x, y + shift)
                };
                let font = FontDesc::new(
                    FontFamily::Name(style::FAMILY),
                    ask * self.k,
                    FontStyle::Normal,
                );
                let mut ts = TextStyle::from(font)
                    .color(&c)
                    .pos(Pos::new(hpos, VPos::Top));
                if vertical {
                    ts = ts.transform(FontTransform::Rotate270);
                }
                self.area
                    .draw(&Text::new(s.to_string(), self.p((px, py)), ts))
                    .map_err(drawing)
            }
        }
    }

    /// Rasterises `s` glyph by glyph: the text starts `along` from (x, y)
    /// along its direction, with the baseline `below` under y (logical).
    #[allow(clippy::too_many_arguments)]
    fn raster_text(
        &self,
        s: &str,
        (x, y): (f64, f64),
        size: f64,
        along: f64,
        below: f64,
        vertical: bool,
        c: RGBColor,
    ) -> R {
        let Some(font) = font() else {
            return Ok(());
        };
        let k = self.k;
        let scale = PxScale::from((size * k) as f32);
        let sf = font.as_scaled(scale);
        // Device anchor, split into whole pixels and the fraction that the
        // glyphs carry.
        let (ax, ay) = (x * k, y * k);
        let (ix, iy) = (ax.floor(), ay.floor());
        let (fx, fy) = if vertical {
            (0.0, 0.0)
        } else {
            (ax - ix, ay - iy)
        };
        let mut caret = (along * k + fx) as f32;
        let base = (below * k + fy) as f32;
        let mut prev = None;
        let mut pixels: Vec<((i32, i32), f32)> = Vec::new();
        for ch in s.chars() {
            let id = sf.glyph_id(ch);
            if let Some(p) = prev {
                caret += sf.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(scale, ab_glyph::point(caret, base));
            caret += sf.h_advance(id);
            if let Some(og) = font.outline_glyph(glyph) {
                let b = og.px_bounds();
                og.draw(|gx, gy, cov| {
                    if cov > 0.0 {
                        let (tx, ty) = (b.min.x as i32 + gx as i32, b.min.y as i32 + gy as i32);
                        let p = if vertical {
                            (ix as i32 + ty, iy as i32 - tx)
                        } else {
                            (ix as i32 + tx, iy as i32 + ty)
                        };
                        pixels.push((p, cov.min(1.0)));
                    }
                });
            }
        }
        for (p, cov) in pixels {
            self.area
                .draw_pixel(p, &c.mix(cov as f64))
                .map_err(drawing)?;
        }
        Ok(())
    }
}

/// Splits a polyline into its dashes (the whole line when `dash` is empty).
pub(crate) fn dashes(pts: &[(f64, f64)], dash: &[f64]) -> Vec<Vec<(f64, f64)>> {
    if dash.is_empty() {
        return vec![pts.to_vec()];
    }
    let mut out = Vec::new();
    let mut idx = 0;
    let mut left = dash[0];
    let mut on = true;
    let mut cur: Vec<(f64, f64)> = vec![pts[0]];
    for w in pts.windows(2) {
        let (mut a, b) = (w[0], w[1]);
        let mut len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
        while len > left {
            let t = left / len;
            let m = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
            if on {
                cur.push(m);
                out.push(std::mem::take(&mut cur));
            } else {
                cur = vec![m];
            }
            on = !on;
            len -= left;
            a = m;
            idx = (idx + 1) % dash.len();
            left = dash[idx];
        }
        left -= len;
        if on {
            cur.push(b);
        }
    }
    if on && cur.len() >= 2 {
        out.push(cur);
    }
    out
}

/// The part of segment a–b inside `r` (Liang–Barsky), if any.
pub(crate) fn clip_segment(
    a: (f64, f64),
    b: (f64, f64),
    r: &Rect,
) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0f64, 1f64);
    for (p, q) in [
        (-dx, a.0 - r.x0),
        (dx, r.x1 - a.0),
        (-dy, a.1 - r.y0),
        (dy, r.y1 - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
        }
    }
    (t0 <= t1).then_some((
        (a.0 + t0 * dx, a.1 + t0 * dy),
        (a.0 + t1 * dx, a.1 + t1 * dy),
    ))
}

/// A polyline clipped to `r`: the runs of it inside.
pub(crate) fn clip_polyline(pts: &[(f64, f64)], r: &Rect) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut cur: Vec<(f64, f64)> = Vec::new();
    for w in pts.windows(2) {
        match clip_segment(w[0], w[1], r) {
            Some((a, b)) => {
                if cur.last() != Some(&a) {
                    if cur.len() >= 2 {
                        out.push(std::mem::take(&mut cur));
                    }
                    cur = vec![a];
                }
                cur.push(b);
            }
            None => {
                if cur.len() >= 2 {
                    out.push(std::mem::take(&mut cur));
                }
                cur.clear();
            }
        }
    }
    if cur.len() >= 2 {
        out.push(cur);
    }
    out
}

/// A polygon clipped to `r` (Sutherland–Hodgman).
pub(crate) fn clip_polygon(pts: &[(f64, f64)], r: &Rect) -> Vec<(f64, f64)> {
    type Edge = (
        fn(&Rect, (f64, f64)) -> bool,
        fn(&Rect, (f64, f64), (f64, f64)) -> (f64, f64),
    );
    fn at_x(a: (f64, f64), b: (f64, f64), x: f64) -> (f64, f64) {
        (x, a.1 + (b.1 - a.1) * (x - a.0) / (b.0 - a.0))
    }
    fn at_y(a: (f64, f64), b: (f64, f64), y: f64) -> (f64, f64) {
        (a.0 + (b.0 - a.0) * (y - a.1) / (b.1 - a.1), y)
    }
    let edges: [Edge; 4] = [
        (|r, p| p.0 >= r.x0, |r, a, b| at_x(a, b, r.x0)),
        (|r, p| p.0 <= r.x1, |r, a, b| at_x(a, b, r.x1)),
        (|r, p| p.1 >= r.y0, |r, a, b| at_y(a, b, r.y0)),
        (|r, p| p.1 <= r.y1, |r, a, b| at_y(a, b, r.y1)),
    ];
    let mut poly = pts.to_vec();
    for (inside, cross) in edges {
        if poly.is_empty() {
            break;
        }
        let input = std::mem::take(&mut poly);
        let mut prev = *input.last().unwrap_or(&(0.0, 0.0));
        for &p in &input {
            match (inside(r, p), inside(r, prev)) {
                (true, true) => poly.push(p),
                (true, false) => {
                    poly.push(cross(r, prev, p));
                    poly.push(p);
                }
                (false, true) => poly.push(cross(r, prev, p)),
                (false, false) => {}
            }
            prev = p;
        }
    }
    poly
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashes_follow_the_pattern_across_vertices() {
        let d = dashes(&[(0.0, 0.0), (5.0, 0.0), (10.0, 0.0)], &[3.0, 2.0]);
        assert_eq!(
            d,
            vec![vec![(0.0, 0.0), (3.0, 0.0)], vec![(5.0, 0.0), (8.0, 0.0)]]
        );
        assert_eq!(dashes(&[(0.0, 0.0), (1.0, 1.0)], &[]).len(), 1);
    }

    #[test]
    fn font_metrics_match_the_embedded_font() {
        let f = font().expect("the embedded font parses");
        let size = 2384.0;
        let g = f
            .glyph_id('H')
            .with_scale_and_position(PxScale::from(size), ab_glyph::point(0.0, 0.0));
        let b = f.outline_glyph(g).expect("H has an outline").px_bounds();
        assert!(
            ((-b.min.y) as f64 - metrics::CAP * size as f64).abs() < 3.0,
            "{b:?}"
        );
        let g = f
            .glyph_id('p')
            .with_scale_and_position(PxScale::from(size), ab_glyph::point(0.0, 0.0));
        let b = f.outline_glyph(g).expect("p has an outline").px_bounds();
        // Descenders reach into the font's descent, not past it.
        let depth = b.max.y as f64 / (metrics::DESCENT * size as f64);
        assert!((0.8..=1.0).contains(&depth), "{b:?}");
        assert!(measure("Hello", 16.0).0 > 30.0);
        assert_eq!(measure("", 16.0).0, 0.0);
    }

    #[test]
    fn clipping() {
        let r = Rect::new(0.0, 0.0, 10.0, 10.0);
        assert_eq!(
            clip_segment((-5.0, 5.0), (15.0, 5.0), &r),
            Some(((0.0, 5.0), (10.0, 5.0)))
        );
        assert_eq!(clip_segment((-5.0, -5.0), (-1.0, 20.0), &r), None);
        let runs = clip_polyline(&[(-5.0, 5.0), (5.0, 5.0), (5.0, 20.0), (6.0, 5.0)], &r);
        assert_eq!(runs.len(), 2);
        let p = clip_polygon(&[(-5.0, -5.0), (5.0, -5.0), (5.0, 5.0), (-5.0, 5.0)], &r);
        assert!(p.iter().all(|&q| r.contains(q)) && p.len() == 4, "{p:?}");
    }
}
