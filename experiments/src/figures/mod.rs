//! Paper-style figures from plain data, rendered to PNG bytes and SVG text
//! (the caller writes the files, atomically).
//!
//! One style for every figure: labelled axes with units, a legend, the
//! Okabe–Ito colour-blind-safe palette with markers, dash patterns and
//! hatches that keep series apart in greyscale, log axes with decade ticks,
//! and the embedded DejaVu Sans font. Every input is checked before drawing:
//! a bad one is a [`FigureError`] naming the figure, series and value.
//!
//! ```
//! use moonlab_experiments::figures::{render, Axis, Chart, Figure, Series};
//! let fig = Figure::new(
//!     Chart::Lines(vec![Series::new("LRU", [(1e3, 0.2), (1e4, 0.5), (1e5, 0.7)])]),
//!     Axis::new("Cache capacity").unit("tokens").log(),
//!     Axis::new("Hit rate").unit("%").format(moonlab_experiments::figures::TickFormat::Percent),
//! );
//! let out = render(&fig).unwrap();
//! assert!(out.png.starts_with(b"\x89PNG") && out.svg.contains("LRU"));
//! ```
//!
//! Modules: [`model`] (the figure description), `prepare` (checks, and
//! chart kinds turned into polylines, markers and bars), `scale` (ranges,
//! ticks, tick labels), `layout` (plot area, legend placement), `paint`
//! (drawing a laid-out figure), `canvas` (primitives over plotters'
//! backends), [`style`] (palette, markers, fonts, sizes), [`error`].

mod canvas;
pub mod error;
mod layout;
pub mod model;
mod paint;
mod prepare;
mod scale;
pub mod style;

pub use error::FigureError;
pub use model::{
    Axis, BarSeries, Chart, Figure, Format, Grid, IntervalStyle, LegendPos, Marks, Point, RefLine,
    Rendered, Samples, Scale, Series, TickFormat,
};

use canvas::{Canvas, HAlign, Rect, Target, VAlign};
use plotters::prelude::*;
use prepare::Prepared;

/// Renders one figure as PNG and SVG.
pub fn render(fig: &Figure) -> Result<Rendered, FigureError> {
    let page = Page::single(fig)?;
    Ok(Rendered {
        png: page.png()?,
        svg: page.svg()?,
    })
}

/// Renders one figure in one format.
pub fn render_as(fig: &Figure, format: Format) -> Result<Vec<u8>, FigureError> {
    Page::single(fig)?.encode(format)
}

/// Renders panels as one image, as PNG and SVG.
pub fn render_grid(grid: &Grid) -> Result<Rendered, FigureError> {
    let page = Page::grid(grid)?;
    Ok(Rendered {
        png: page.png()?,
        svg: page.svg()?,
    })
}

/// Renders panels as one image in one format.
pub fn render_grid_as(grid: &Grid, format: Format) -> Result<Vec<u8>, FigureError> {
    Page::grid(grid)?.encode(format)
}

/// A checked figure or grid, ready to draw on any backend.
struct Page<'a> {
    title: Option<&'a str>,
    panels: Vec<(&'a Figure, Prepared, Rect)>,
    size: (u32, u32),
    scale: f64,
}

const TITLE_BAND: f64 = 36.0;

fn check_scale(scale: f64) -> Result<(), FigureError> {
    if scale.is_finite() && (0.25..=8.0).contains(&scale) {
        Ok(())
    } else {
        Err(FigureError::BadScale(scale))
    }
}

fn check_size(fig: &Figure) -> Result<(), FigureError> {
    let (w, h) = fig.size;
    if !(240..=8000).contains(&w) || !(160..=8000).contains(&h) {
        return Err(FigureError::BadSize {
            figure: fig.display_name(),
            width: w,
            height: h,
        });
    }
    Ok(())
}

impl<'a> Page<'a> {
    fn single(fig: &'a Figure) -> Result<Self, FigureError> {
        check_size(fig)?;
        check_scale(fig.png_scale)?;
        let prep = prepare::prepare(fig)?;
        let (w, h) = fig.size;
        Ok(Page {
            title: None,
            panels: vec![(fig, prep, Rect::new(0.0, 0.0, w as f64, h as f64))],
            size: fig.size,
            scale: fig.png_scale,
        })
    }

    fn grid(grid: &'a Grid) -> Result<Self, FigureError> {
        if grid.panels.is_empty() || grid.columns == 0 {
            return Err(FigureError::EmptyGrid);
        }
        check_scale(grid.png_scale)?;
        let cw = grid.panels.iter().map(|f| f.size.0).max().unwrap_or(0);
        let ch = grid.panels.iter().map(|f| f.size.1).max().unwrap_or(0);
        let cols = grid.columns.min(grid.panels.len());
        let rows = grid.panels.len().div_ceil(cols);
        let title = grid.title.as_deref().filter(|t| !t.is_empty());
        let top = if title.is_some() { TITLE_BAND } else { 0.0 };
        let mut panels = Vec::new();
        for (i, fig) in grid.panels.iter().enumerate() {
            check_size(fig)?;
            let prep = prepare::prepare(fig)?;
            let (c, r) = ((i % cols) as f64, (i / cols) as f64);
            let (x0, y0) = (c * cw as f64, top + r * ch as f64);
            panels.push((fig, prep, Rect::new(x0, y0, x0 + cw as f64, y0 + ch as f64)));
        }
        let width = cw.saturating_mul(cols as u32);
        let height = (ch as f64 * rows as f64 + top) as u32;
        if width > 16000 || height > 16000 {
            return Err(FigureError::BadSize {
                figure: title.unwrap_or("grid").to_string(),
                width,
                height,
            });
        }
        Ok(Page {
            title,
            panels,
            size: (width, height),
            scale: grid.png_scale,
        })
    }

    fn encode(&self, format: Format) -> Result<Vec<u8>, FigureError> {
        match format {
            Format::Png => self.png(),
            Format::Svg => self.svg().map(String::into_bytes),
        }
    }

    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, plotters::coord::Shift>,
        k: f64,
        target: Target,
    ) -> Result<(), FigureError> {
        let cv = Canvas::new(area, k, target);
        cv.fill(WHITE)?;
        if let Some(t) = self.title {
            let w = self.size.0 as f64;
            let t = layout::fit_text(t, style::TITLE_SIZE + 2.0, w - 2.0 * style::PAD);
            cv.text(
                &t,
                (w / 2.0, style::PAD),
                style::TITLE_SIZE + 2.0,
                HAlign::Center,
                VAlign::Top,
                false,
                style::INK,
            )?;
        }
        for (fig, prep, cell) in &self.panels {
            let l = layout::layout(fig, prep, *cell);
            paint::paint(&cv, fig, prep, &l)?;
        }
        Ok(())
    }

    fn svg(&self) -> Result<String, FigureError> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, self.size).into_drawing_area();
            self.draw(&root, 1.0, Target::Svg)?;
            root.present()
                .map_err(|e| FigureError::Drawing(e.to_string()))?;
        }
        Ok(svg)
    }

    fn png(&self) -> Result<Vec<u8>, FigureError> {
        let w = (self.size.0 as f64 * self.scale).round() as u32;
        let h = (self.size.1 as f64 * self.scale).round() as u32;
        // At most 100 megapixels (300 MB of RGB) per image.
        if w as u64 * h as u64 > 100_000_000 {
            return Err(FigureError::TooManyPixels {
                width: w,
                height: h,
            });
        }
        let mut rgb = vec![0u8; w as usize * h as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
            self.draw(&root, self.scale, Target::Bitmap)?;
            root.present()
                .map_err(|e| FigureError::Drawing(e.to_string()))?;
        }
        let img = image::RgbImage::from_raw(w, h, rgb)
            .ok_or_else(|| FigureError::Png("buffer size mismatch".into()))?;
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .map_err(|e| FigureError::Png(e.to_string()))?;
        Ok(out.into_inner())
    }
}
