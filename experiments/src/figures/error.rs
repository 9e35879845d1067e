//! Why a figure cannot be drawn. Every check happens before drawing, so a
//! bad input is an error naming the figure, the series and the value, never
//! a panic or a half-drawn image.

/// The error of [`render`](super::render) and friends. `figure` is the
/// figure's title, or its chart kind when it has none.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FigureError {
    #[error("figure `{figure}`: nothing to draw (no series)")]
    NoSeries { figure: String },
    #[error("figure `{figure}`: series `{series}` has no data")]
    EmptySeries { figure: String, series: String },
    #[error("figure `{figure}`: a bar chart needs at least one category")]
    NoCategories { figure: String },
    #[error("figure `{figure}`: series `{series}` has {got} {what} for {want} categories")]
    Length {
        figure: String,
        series: String,
        what: &'static str,
        got: usize,
        want: usize,
    },
    #[error("figure `{figure}`: series `{series}`: {what} {value} is not a finite number")]
    NotFinite {
        figure: String,
        series: String,
        what: String,
        value: f64,
    },
    #[error(
        "figure `{figure}`: series `{series}`: {what} {value} cannot be drawn on the log {axis} axis (values must be positive)"
    )]
    NonPositive {
        figure: String,
        series: String,
        what: String,
        value: f64,
        axis: char,
    },
    #[error(
        "figure `{figure}`: series `{series}`: {what} {value:e} is too large to draw (magnitudes up to 1e300, and on a log axis from 1e-300)"
    )]
    OutOfRange {
        figure: String,
        series: String,
        what: String,
        value: f64,
    },
    #[error(
        "figure `{figure}`: series `{series}`: interval [{low}, {high}] does not contain its value {value}"
    )]
    BadInterval {
        figure: String,
        series: String,
        value: f64,
        low: f64,
        high: f64,
    },
    #[error("figure `{figure}`: series `{series}`: stacked value {value} is negative")]
    NegativeStack {
        figure: String,
        series: String,
        value: f64,
    },
    #[error("figure `{figure}`: {axis} axis range {low}..{high} {why}")]
    BadRange {
        figure: String,
        axis: char,
        low: f64,
        high: f64,
        why: &'static str,
    },
    #[error("figure `{figure}`: {what}")]
    Unsupported { figure: String, what: String },
    #[error("figure `{figure}`: size {width}×{height} is out of range (240×160 to 8000×8000)")]
    BadSize {
        figure: String,
        width: u32,
        height: u32,
    },
    #[error("the PNG would have {width}×{height} pixels (at most 100 million): lower the size or the PNG scale")]
    TooManyPixels { width: u32, height: u32 },
    #[error("PNG scale {0} must be a number from 0.25 to 8")]
    BadScale(f64),
    #[error("a grid needs at least one panel and one column")]
    EmptyGrid,
    #[error("drawing failed: {0}")]
    Drawing(String),
    #[error("PNG encoding failed: {0}")]
    Png(String),
}
