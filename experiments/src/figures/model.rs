//! The figure description: plain data in, no drawing. A [`Figure`] is one
//! chart (its [`Chart`] kind with the series, two [`Axis`]es, optional
//! reference lines); a [`Grid`] lays several figures out as panels of one
//! image.

use super::style::{DEFAULT_PNG_SCALE, DEFAULT_SIZE};

/// How an axis maps values to positions.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Scale {
    #[default]
    Linear,
    /// Base-10 logarithmic, with decade ticks; every value drawn on it must
    /// be positive.
    Log,
}

/// How tick labels are written.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum TickFormat {
    /// Plain numbers; large ones with a k/M/G suffix, tiny decades on a log
    /// axis as powers of ten.
    #[default]
    Auto,
    /// k/M/G/T suffixes (`500k`, `1.5M`).
    Si,
    /// Fractions shown as percentages: 0.25 is labelled `25` (put `%` in
    /// the axis unit).
    Percent,
    /// Powers of ten (`10³`); for log axes.
    Power,
}

/// One axis: its label and unit (drawn as `label (unit)`), scale, an
/// optional fixed range, and the tick label format.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Axis {
    pub label: String,
    pub unit: Option<String>,
    pub scale: Scale,
    /// `Some((lo, hi))` fixes the range; `None` fits the data.
    pub range: Option<(f64, f64)>,
    pub format: TickFormat,
}

impl Axis {
    pub fn new(label: impl Into<String>) -> Self {
        Axis {
            label: label.into(),
            ..Axis::default()
        }
    }
    pub fn unit(mut self, unit: impl Into<String>) -> Self {
        self.unit = Some(unit.into());
        self
    }
    pub fn log(mut self) -> Self {
        self.scale = Scale::Log;
        self
    }
    pub fn scale(mut self, scale: Scale) -> Self {
        self.scale = scale;
        self
    }
    pub fn range(mut self, lo: f64, hi: f64) -> Self {
        self.range = Some((lo, hi));
        self
    }
    pub fn format(mut self, format: TickFormat) -> Self {
        self.format = format;
        self
    }
    /// The title drawn beside the axis: `label (unit)`.
    pub fn title(&self) -> String {
        match &self.unit {
            Some(u) if !u.is_empty() => format!("{} ({u})", self.label),
            _ => self.label.clone(),
        }
    }
}

/// One (x, y) point, with an optional interval around y (a 95 % confidence
/// interval, say): `(low, high)`, which must contain y.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub interval: Option<(f64, f64)>,
}

impl Point {
    pub fn new(x: f64, y: f64) -> Self {
        Point {
            x,
            y,
            interval: None,
        }
    }
    pub fn with_interval(x: f64, y: f64, low: f64, high: f64) -> Self {
        Point {
            x,
            y,
            interval: Some((low, high)),
        }
    }
}

impl From<(f64, f64)> for Point {
    fn from((x, y): (f64, f64)) -> Self {
        Point::new(x, y)
    }
}

/// What a line series draws at its points.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Marks {
    /// Lines through the points, with markers (on every point up to 40
    /// points, on about 20 evenly spaced ones beyond).
    #[default]
    LinesAndMarkers,
    Lines,
    /// Markers only: a scatter plot.
    Markers,
}

/// How a point's interval is drawn.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum IntervalStyle {
    /// A vertical error bar with caps.
    #[default]
    ErrorBars,
    /// A shaded band between the lows and highs.
    Band,
}

/// A named series of points (a line, a scatter or a step function).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend entry (an empty name has none).
    pub name: String,
    pub points: Vec<Point>,
    pub marks: Marks,
    pub intervals: IntervalStyle,
}

impl Series {
    pub fn new<P: Into<Point>>(
        name: impl Into<String>,
        points: impl IntoIterator<Item = P>,
    ) -> Self {
        Series {
            name: name.into(),
            points: points.into_iter().map(Into::into).collect(),
            marks: Marks::default(),
            intervals: IntervalStyle::default(),
        }
    }
    pub fn marks(mut self, marks: Marks) -> Self {
        self.marks = marks;
        self
    }
    pub fn intervals(mut self, style: IntervalStyle) -> Self {
        self.intervals = style;
        self
    }
}

/// Raw samples of one series, for a CDF.
#[derive(Clone, Debug, PartialEq)]
pub struct Samples {
    pub name: String,
    pub values: Vec<f64>,
}

impl Samples {
    pub fn new(name: impl Into<String>, values: impl IntoIterator<Item = f64>) -> Self {
        Samples {
            name: name.into(),
            values: values.into_iter().collect(),
        }
    }
}

/// One bar per category for one series (a component, when stacked), with
/// optional intervals `(low, high)` per category (grouped bars only).
#[derive(Clone, Debug, PartialEq)]
pub struct BarSeries {
    pub name: String,
    pub values: Vec<f64>,
    pub intervals: Option<Vec<(f64, f64)>>,
}

impl BarSeries {
    pub fn new(name: impl Into<String>, values: impl IntoIterator<Item = f64>) -> Self {
        BarSeries {
            name: name.into(),
            values: values.into_iter().collect(),
            intervals: None,
        }
    }
    pub fn with_intervals(mut self, intervals: impl IntoIterator<Item = (f64, f64)>) -> Self {
        self.intervals = Some(intervals.into_iter().collect());
        self
    }
}

/// What a figure draws.
#[derive(Clone, Debug, PartialEq)]
pub enum Chart {
    /// Lines and/or markers through (x, y) points, with optional intervals.
    /// (No series at all is allowed where the figure has reference lines
    /// and an x range.)
    Lines(Vec<Series>),
    /// Empirical CDFs of raw samples (y from 0 to 1).
    Cdf(Vec<Samples>),
    /// Bars side by side within each category (x is categorical).
    GroupedBars {
        categories: Vec<String>,
        series: Vec<BarSeries>,
    },
    /// Each category's bar stacks the series' values, bottom to top.
    StackedBars {
        categories: Vec<String>,
        components: Vec<BarSeries>,
    },
    /// Step functions over time: each value holds until the next point.
    Steps(Vec<Series>),
}

impl Chart {
    pub fn name(&self) -> &'static str {
        match self {
            Chart::Lines(_) => "line chart",
            Chart::Cdf(_) => "CDF",
            Chart::GroupedBars { .. } => "grouped bar chart",
            Chart::StackedBars { .. } => "stacked bar chart",
            Chart::Steps(_) => "step chart",
        }
    }
}

/// A labelled horizontal reference line (an SLO threshold, say).
#[derive(Clone, Debug, PartialEq)]
pub struct RefLine {
    pub y: f64,
    pub label: String,
}

impl RefLine {
    pub fn new(y: f64, label: impl Into<String>) -> Self {
        RefLine {
            y,
            label: label.into(),
        }
    }
}

/// Where the legend goes.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum LegendPos {
    /// Inside the plot, in the corner where it covers no data; above the
    /// plot where every corner would cover some.
    #[default]
    Auto,
    /// Above the plot, in rows.
    Above,
    /// Right of the plot, in a column.
    Right,
    None,
}

/// One chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub title: Option<String>,
    pub x: Axis,
    pub y: Axis,
    pub chart: Chart,
    pub refs: Vec<RefLine>,
    pub legend: LegendPos,
    /// Width and height in logical pixels (the SVG's size).
    pub size: (u32, u32),
    /// The PNG has `size × png_scale` pixels.
    pub png_scale: f64,
}

impl Figure {
    pub fn new(chart: Chart, x: Axis, y: Axis) -> Self {
        Figure {
            title: None,
            x,
            y,
            chart,
            refs: Vec::new(),
            legend: LegendPos::Auto,
            size: DEFAULT_SIZE,
            png_scale: DEFAULT_PNG_SCALE,
        }
    }
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }
    pub fn reference(mut self, line: RefLine) -> Self {
        self.refs.push(line);
        self
    }
    pub fn legend(mut self, pos: LegendPos) -> Self {
        self.legend = pos;
        self
    }
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }
    pub fn png_scale(mut self, scale: f64) -> Self {
        self.png_scale = scale;
        self
    }
    /// The name errors use: the title, else the chart kind.
    pub(crate) fn display_name(&self) -> String {
        match &self.title {
            Some(t) if !t.is_empty() => t.clone(),
            _ => self.chart.name().to_string(),
        }
    }
}

/// Several figures as panels of one image, filled row by row; each cell is
/// as large as the largest panel's `size`. The panels' own `png_scale`s are
/// ignored in favour of the grid's.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    pub title: Option<String>,
    pub panels: Vec<Figure>,
    pub columns: usize,
    pub png_scale: f64,
}

impl Grid {
    pub fn new(panels: Vec<Figure>, columns: usize) -> Self {
        Grid {
            title: None,
            panels,
            columns,
            png_scale: DEFAULT_PNG_SCALE,
        }
    }
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }
    pub fn png_scale(mut self, scale: f64) -> Self {
        self.png_scale = scale;
        self
    }
}

/// Output formats.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
}

impl Format {
    /// The format a file name asks for by its extension (`.png`, `.svg`,
    /// any case).
    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("png") => Some(Format::Png),
            Some("svg") => Some(Format::Svg),
            _ => None,
        }
    }
}

/// A figure in both formats: PNG bytes and SVG text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub png: Vec<u8>,
    pub svg: String,
}
