//! The paper style, in one place: the Okabe–Ito palette, the markers, dash
//! patterns and bar hatches that keep series apart in greyscale, font sizes,
//! line widths and margins, and the embedded DejaVu Sans font (registered
//! with plotters once, so no system fonts are needed).
//!
//! Every length here is in logical pixels: the SVG's own units, multiplied
//! by the PNG's scale when rasterised.

use plotters::style::{FontStyle, RGBColor};
use std::sync::Once;

/// DejaVu Sans, embedded so that text renders the same on every machine
/// (license: `experiments/assets/DejaVuSans-LICENSE.txt`).
pub static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// The family name the font is registered under. It doubles as the SVG's
/// `font-family` list: viewers use DejaVu Sans where installed, else their
/// own sans-serif face.
pub(crate) const FAMILY: &str = "DejaVu Sans, sans-serif";

/// Registers [`FONT`] with plotters (once per process).
pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TTF; a failure would only lose text,
        // and the tests render text.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// DejaVu Sans' vertical metrics as fractions of a plotters font size
/// (plotters scales the font so that ascender − descender = size; the font
/// has 2048 units per em, ascender 1901, descender −483, capitals 1493).
pub(crate) mod metrics {
    /// Height of a capital letter above the baseline.
    pub const CAP: f64 = 1493.0 / 2384.0;
    /// Depth of descenders below the baseline.
    pub const DESCENT: f64 = 483.0 / 2384.0;
}

/// The Okabe–Ito colour-blind-safe palette (Okabe & Ito, 2008) as RGB, in
/// the order series take them: blue, vermillion, bluish green, reddish
/// purple, orange, sky blue, black, yellow (last: it is faint on white).
pub const PALETTE: [(u8, u8, u8); 8] = [
    (0x00, 0x72, 0xB2),
    (0xD5, 0x5E, 0x00),
    (0x00, 0x9E, 0x73),
    (0xCC, 0x79, 0xA7),
    (0xE6, 0x9F, 0x00),
    (0x56, 0xB4, 0xE9),
    (0x00, 0x00, 0x00),
    (0xF0, 0xE4, 0x42),
];

/// The colour of the `i`-th series (cycling after eight).
pub fn series_color(i: usize) -> (u8, u8, u8) {
    PALETTE[i % PALETTE.len()]
}

pub(crate) fn color(i: usize) -> RGBColor {
    let (r, g, b) = series_color(i);
    RGBColor(r, g, b)
}

/// Marker shapes, in the order series take them.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Marker {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
    Cross,
    Plus,
    Pentagon,
}

const MARKERS: [Marker; 8] = [
    Marker::Circle,
    Marker::Square,
    Marker::TriangleUp,
    Marker::Diamond,
    Marker::TriangleDown,
    Marker::Cross,
    Marker::Plus,
    Marker::Pentagon,
];

/// The `i`-th series' marker: after each round of the palette the markers
/// shift by one, so that a colour comes back with another marker.
pub(crate) fn marker(i: usize) -> Marker {
    MARKERS[(i + i / PALETTE.len()) % MARKERS.len()]
}

/// Dash patterns (on, off, on, off, ... in logical pixels; empty = solid).
/// They cycle at a different period from the palette, so that a series
/// differs from the one eight places away.
const DASHES: [&[f64]; 6] = [
    &[],
    &[7.0, 3.5],
    &[1.6, 2.6],
    &[8.0, 3.0, 1.6, 3.0],
    &[13.0, 4.0],
    &[5.0, 2.5, 1.6, 2.5, 1.6, 2.5],
];

pub(crate) fn dash(i: usize) -> &'static [f64] {
    DASHES[i % DASHES.len()]
}

/// Bar hatches, so bars stay apart in greyscale.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Hatch {
    None,
    Forward,
    Back,
    Cross,
    Horizontal,
    Vertical,
    Dots,
}

const HATCHES: [Hatch; 7] = [
    Hatch::None,
    Hatch::Forward,
    Hatch::Back,
    Hatch::Horizontal,
    Hatch::Cross,
    Hatch::Vertical,
    Hatch::Dots,
];

pub(crate) fn hatch(i: usize) -> Hatch {
    HATCHES[i % HATCHES.len()]
}

/// Relative luminance (sRGB, Rec. 709 weights, 0..1).
pub(crate) fn luminance(c: RGBColor) -> f64 {
    let lin = |v: u8| {
        let v = v as f64 / 255.0;
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * lin(c.0) + 0.7152 * lin(c.1) + 0.0722 * lin(c.2)
}

/// Text and line colours of the frame.
pub(crate) const INK: RGBColor = RGBColor(0x1A, 0x1A, 0x1A);
pub(crate) const MUTED: RGBColor = RGBColor(0x55, 0x55, 0x55);
pub(crate) const GRID: RGBColor = RGBColor(0xE3, 0xE3, 0xE3);
pub(crate) const LEGEND_EDGE: RGBColor = RGBColor(0xBB, 0xBB, 0xBB);

/// Font sizes (plotters sizes: ascender to descender, about 1.16 em).
pub(crate) const TITLE_SIZE: f64 = 20.0;
pub(crate) const LABEL_SIZE: f64 = 18.0;
pub(crate) const TICK_SIZE: f64 = 16.0;
pub(crate) const LEGEND_SIZE: f64 = 16.0;
pub(crate) const NOTE_SIZE: f64 = 15.0;

/// Line widths.
pub(crate) const SERIES_WIDTH: f64 = 2.0;
pub(crate) const FRAME_WIDTH: f64 = 1.0;
pub(crate) const ERROR_WIDTH: f64 = 1.2;

/// Marker radius, tick lengths, the error bars' cap half-width.
pub(crate) const MARKER_RADIUS: f64 = 4.2;
pub(crate) const TICK_LEN: f64 = 5.0;
pub(crate) const MINOR_TICK_LEN: f64 = 3.0;
pub(crate) const CAP_HALF: f64 = 4.0;

/// Space around a figure and between its parts.
pub(crate) const PAD: f64 = 10.0;
pub(crate) const GAP: f64 = 6.0;

/// Default figure size (logical pixels) and PNG scale: 640 × 400 is about
/// a column's width at paper font sizes; the PNG is rasterised at twice that.
pub const DEFAULT_SIZE: (u32, u32) = (640, 400);
pub const DEFAULT_PNG_SCALE: f64 = 2.0;
