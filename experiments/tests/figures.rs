//! The figures library from outside: every chart kind renders to a PNG that
//! decodes at the expected size with the series' colours in it, and to SVG
//! text that is well formed and names every series and axis; bad data is an
//! error that names the series and the value; rendering is deterministic.

use moonlab_experiments::figures::{
    render, render_as, render_grid, style, Axis, BarSeries, Chart, Figure, FigureError, Format,
    Grid, IntervalStyle, LegendPos, Marks, Point, RefLine, Samples, Series, TickFormat,
};

fn rising(name: &str, k: f64) -> Series {
    Series::new(name, (1..=8).map(|i| (i as f64 * 10.0, k * i as f64)))
}

/// One figure of each chart kind, with the names a reader must find.
fn kinds() -> Vec<(&'static str, Figure, Vec<&'static str>)> {
    let lines = Figure::new(
        Chart::Lines(vec![
            Series::new(
                "LRU",
                [1e3, 1e4, 1e5, 1e6].iter().enumerate().map(|(i, &c)| {
                    Point::with_interval(
                        c,
                        0.2 * i as f64 + 0.1,
                        0.05 + 0.2 * i as f64,
                        0.15 + 0.2 * i as f64,
                    )
                }),
            ),
            Series::new("Belady", [(1e3, 0.2), (1e4, 0.45), (1e5, 0.7), (1e6, 0.8)])
                .intervals(IntervalStyle::Band),
        ]),
        Axis::new("Cache capacity").unit("tokens").log(),
        Axis::new("Hit rate").unit("%").format(TickFormat::Percent),
    )
    .title("Hit rate")
    .reference(RefLine::new(0.85, "unbounded"));
    let scatter = Figure::new(
        Chart::Lines(vec![
            rising("prefill", 1.0).marks(Marks::Markers),
            rising("decode", 2.0).marks(Marks::Markers),
        ]),
        Axis::new("Input length").unit("tokens"),
        Axis::new("TTFT").unit("s").log(),
    );
    let cdf = Figure::new(
        Chart::Cdf(vec![
            Samples::new("Mooncake", (1..500).map(|i| i as f64 * 0.01)),
            Samples::new("vLLM", (1..500).map(|i| i as f64 * 0.03)),
        ]),
        Axis::new("TTFT").unit("s").log(),
        Axis::new("CDF"),
    );
    let grouped = Figure::new(
        Chart::GroupedBars {
            categories: vec![
                "random".into(),
                "least-loaded".into(),
                "KVCache-centric".into(),
            ],
            series: vec![
                BarSeries::new("mean TTFT", [9.0, 6.0, 3.0]).with_intervals([
                    (8.0, 10.0),
                    (5.5, 6.5),
                    (2.5, 3.5),
                ]),
                BarSeries::new("P90 TTFT", [20.0, 13.0, 6.0]),
            ],
        },
        Axis::new("Scheduler"),
        Axis::new("TTFT").unit("s"),
    )
    .reference(RefLine::new(15.0, "SLO"));
    let stacked = Figure::new(
        Chart::StackedBars {
            categories: vec!["short".into(), "long".into()],
            components: vec![
                BarSeries::new("queue", [0.5, 1.0]),
                BarSeries::new("prefill", [1.0, 6.0]),
                BarSeries::new("decode", [4.0, 5.0]),
            ],
        },
        Axis::new("Input length"),
        Axis::new("Latency").unit("s"),
    );
    let steps = Figure::new(
        Chart::Steps(vec![
            Series::new("top-1", (0..50).map(|i| (i as f64, 10.0 + (i % 7) as f64))),
            Series::new("top-10", (0..50).map(|i| (i as f64, 1.0 + (i % 3) as f64))),
        ]),
        Axis::new("Time").unit("s"),
        Axis::new("Replicas").log(),
    );
    vec![
        (
            "lines",
            lines,
            vec![
                "LRU",
                "Belady",
                "Cache capacity (tokens)",
                "Hit rate (%)",
                "unbounded",
            ],
        ),
        (
            "scatter",
            scatter,
            vec!["prefill", "decode", "Input length (tokens)", "TTFT (s)"],
        ),
        ("cdf", cdf, vec!["Mooncake", "vLLM", "TTFT (s)", "CDF"]),
        (
            "grouped",
            grouped,
            vec![
                "mean TTFT",
                "P90 TTFT",
                "KVCache-centric",
                "Scheduler",
                "TTFT (s)",
                "SLO",
            ],
        ),
        (
            "stacked",
            stacked,
            vec![
                "queue",
                "prefill",
                "decode",
                "short",
                "Input length",
                "Latency (s)",
            ],
        ),
        (
            "steps",
            steps,
            vec!["top-1", "top-10", "Time (s)", "Replicas"],
        ),
    ]
}

/// Well-formed enough: tags balance, attributes are quoted, text has no
/// stray `<` or unescaped `&`.
fn check_svg(svg: &str) {
    assert!(svg.trim_start().starts_with("<svg"), "{}", &svg[..60]);
    assert!(svg.trim_end().ends_with("</svg>"));
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(open) = rest.find('<') {
        check_text(&rest[..open]);
        let close = rest[open..].find('>').expect("every tag closes") + open;
        let tag = &rest[open + 1..close];
        assert!(!tag.contains('<'), "tag inside a tag: {tag}");
        assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes: {tag}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name.trim()), "closing {name}");
        } else if !tag.ends_with('/') && !tag.starts_with('?') && !tag.starts_with('!') {
            let name = tag.split_whitespace().next().unwrap_or_default();
            stack.push(name.to_string());
        }
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

/// The contents of the SVG's text elements.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..t.find("</text>")?];
            Some(body.trim().to_string())
        })
        .collect()
}

fn check_text(t: &str) {
    for (i, _) in t.match_indices('&') {
        let entity = &t[i..t[i..].find(';').map_or(t.len(), |e| i + e + 1)];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity)
                || entity.starts_with("&#"),
            "unescaped & in {t:?}"
        );
    }
}

fn decode(png: &[u8]) -> image::RgbImage {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .expect("the PNG decodes")
        .to_rgb8()
}

fn count_color(img: &image::RgbImage, (r, g, b): (u8, u8, u8)) -> usize {
    img.pixels().filter(|p| p.0 == [r, g, b]).count()
}

#[test]
fn every_chart_kind_renders_to_png_and_svg() {
    for (kind, fig, names) in kinds() {
        let out = render(&fig).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let img = decode(&out.png);
        let (w, h) = fig.size;
        assert_eq!(
            img.dimensions(),
            (
                (w as f64 * fig.png_scale) as u32,
                (h as f64 * fig.png_scale) as u32
            ),
            "{kind}"
        );
        // Not blank: both series' colours are drawn, plenty of them.
        for i in 0..2 {
            let n = count_color(&img, style::series_color(i));
            assert!(n > 200, "{kind}: series {i}'s colour has only {n} pixels");
        }
        let white = count_color(&img, (255, 255, 255));
        assert!(white > img.pixels().len() / 3, "{kind}: mostly white");
        check_svg(&out.svg);
        let texts = svg_texts(&out.svg);
        for name in names {
            assert!(
                texts.iter().any(|t| t == name),
                "{kind}: no text {name:?} in {texts:?}"
            );
        }
        assert_eq!(render_as(&fig, Format::Png).unwrap(), out.png, "{kind}");
        assert_eq!(
            render_as(&fig, Format::Svg).unwrap(),
            out.svg.as_bytes(),
            "{kind}"
        );
    }
}

#[test]
fn rendering_is_deterministic() {
    for (kind, fig, _) in kinds() {
        let a = render(&fig).unwrap();
        let b = render(&fig.clone()).unwrap();
        assert!(a.png == b.png, "{kind}: PNG bytes differ");
        assert!(a.svg == b.svg, "{kind}: SVG text differs");
    }
}

#[test]
fn sizes_and_scales_are_honoured() {
    let fig = kinds().remove(0).1.size(500, 300).png_scale(1.0);
    let img = decode(&render(&fig).unwrap().png);
    assert_eq!(img.dimensions(), (500, 300));
    let svg = render(&fig).unwrap().svg;
    assert!(
        svg.contains("width=\"500\"") && svg.contains("height=\"300\""),
        "{}",
        &svg[..200]
    );
    let grid = Grid::new(kinds().into_iter().map(|k| k.1).take(3).collect(), 2)
        .title("Panels")
        .png_scale(1.0);
    let out = render_grid(&grid).unwrap();
    let img = decode(&out.png);
    assert_eq!(img.width(), 2 * 640);
    assert!(img.height() > 2 * 400, "{}", img.height());
    check_svg(&out.svg);
    assert!(out.svg.contains("Panels") && out.svg.contains("Mooncake") && out.svg.contains("LRU"));
}

#[test]
fn text_is_escaped_in_svg() {
    let fig = Figure::new(
        Chart::Lines(vec![rising("a < b & \"c\"", 1.0), rising("x > y", 2.0)]),
        Axis::new("<x>"),
        Axis::new("y & z"),
    )
    .title("Q&A");
    let svg = render(&fig).unwrap().svg;
    check_svg(&svg);
    assert!(svg.contains("a &lt; b &amp;"), "{svg}");
}

fn err(fig: &Figure) -> String {
    match render(fig) {
        Ok(_) => panic!("rendered: {fig:?}"),
        Err(e) => e.to_string(),
    }
}

fn has(msg: &str, words: &[&str]) {
    for w in words {
        assert!(msg.contains(w), "{msg:?} lacks {w:?}");
    }
}

#[test]
fn log_axes_reject_non_positive_values_by_name() {
    let lines = |x: f64, y: f64| {
        Chart::Lines(vec![
            rising("fine", 1.0),
            Series::new("LRU", [(1.0, 1.0), (x, y)]),
        ])
    };
    let fig = Figure::new(
        lines(0.0, 1.0),
        Axis::new("capacity").log(),
        Axis::new("hit rate"),
    );
    has(&err(&fig), &["series `LRU`", "x 0", "log x axis"]);
    let fig = Figure::new(
        lines(2.0, -0.5),
        Axis::new("capacity"),
        Axis::new("TTFT").log(),
    );
    has(
        &err(&fig),
        &["series `LRU`", "y -0.5", "log y axis", "positive"],
    );
    let fig = Figure::new(
        Chart::Lines(vec![Series::new(
            "band",
            [Point::with_interval(1.0, 1.0, 0.0, 2.0)],
        )]),
        Axis::new("x"),
        Axis::new("y").log(),
    );
    has(&err(&fig), &["series `band`", "interval low 0"]);
    let fig = Figure::new(
        Chart::Cdf(vec![Samples::new("TTFT", [1.0, 0.0, 2.0])]),
        Axis::new("TTFT").log(),
        Axis::new("CDF"),
    );
    has(&err(&fig), &["series `TTFT`", "sample 0", "log x axis"]);
    let fig = Figure::new(
        Chart::GroupedBars {
            categories: vec!["a".into(), "b".into()],
            series: vec![BarSeries::new("hits", [1.0, 0.0])],
        },
        Axis::new("x"),
        Axis::new("y").log(),
    );
    has(&err(&fig), &["series `hits`", "value 0"]);
    let fig = Figure::new(lines(2.0, 2.0), Axis::new("x"), Axis::new("y").log())
        .reference(RefLine::new(0.0, "SLO"));
    has(&err(&fig), &["`SLO`", "y 0"]);
    let fig = Figure::new(
        lines(2.0, 2.0),
        Axis::new("x").log().range(0.0, 10.0),
        Axis::new("y"),
    );
    has(&err(&fig), &["x axis range 0..10", "positive"]);
}

#[test]
fn bad_data_is_an_error_never_a_panic() {
    let x = || Axis::new("x");
    let y = || Axis::new("y");
    let cases: Vec<(Figure, Vec<&str>)> = vec![
        (
            Figure::new(Chart::Lines(vec![]), x(), y()),
            vec!["nothing to draw"],
        ),
        (
            Figure::new(
                Chart::Lines(vec![Series::new("empty", Vec::<(f64, f64)>::new())]),
                x(),
                y(),
            ),
            vec!["series `empty` has no data"],
        ),
        (
            Figure::new(
                Chart::Lines(vec![Series::new("nan", [(1.0, f64::NAN)])]),
                x(),
                y(),
            ),
            vec!["series `nan`", "y NaN is not a finite number"],
        ),
        (
            Figure::new(
                Chart::Steps(vec![Series::new("inf", [(f64::INFINITY, 1.0)])]),
                x(),
                y(),
            ),
            vec!["series `inf`", "x inf"],
        ),
        (
            Figure::new(Chart::Cdf(vec![Samples::new("none", [])]), x(), y()),
            vec!["series `none` has no data"],
        ),
        (
            Figure::new(
                Chart::Lines(vec![Series::new(
                    "ci",
                    [Point::with_interval(1.0, 5.0, 6.0, 7.0)],
                )]),
                x(),
                y(),
            ),
            vec![
                "series `ci`",
                "interval [6, 7] does not contain its value 5",
            ],
        ),
        (
            Figure::new(
                Chart::GroupedBars {
                    categories: vec!["a".into(), "b".into()],
                    series: vec![BarSeries::new("short", [1.0])],
                },
                x(),
                y(),
            ),
            vec!["series `short` has 1 values for 2 categories"],
        ),
        (
            Figure::new(
                Chart::GroupedBars {
                    categories: vec![],
                    series: vec![BarSeries::new("s", [])],
                },
                x(),
                y(),
            ),
            vec!["at least one category"],
        ),
        (
            Figure::new(
                Chart::StackedBars {
                    categories: vec!["a".into()],
                    components: vec![BarSeries::new("neg", [-1.0])],
                },
                x(),
                y(),
            ),
            vec!["series `neg`", "negative"],
        ),
        (
            Figure::new(
                Chart::StackedBars {
                    categories: vec!["a".into()],
                    components: vec![BarSeries::new("s", [1.0])],
                },
                x(),
                y().log(),
            ),
            vec!["stacked bars need a linear y axis"],
        ),
        (
            Figure::new(
                Chart::GroupedBars {
                    categories: vec!["a".into()],
                    series: vec![BarSeries::new("s", [1.0])],
                },
                x().log(),
                y(),
            ),
            vec!["categories and cannot be log"],
        ),
        (
            Figure::new(
                Chart::Lines(vec![rising("a", 1.0)]),
                x().range(5.0, 5.0),
                y(),
            ),
            vec!["x axis range 5..5 is empty"],
        ),
        (
            Figure::new(
                Chart::Lines(vec![rising("a", 1.0)]),
                x(),
                y().range(0.0, f64::NAN),
            ),
            vec!["y axis range", "not finite"],
        ),
        (
            Figure::new(Chart::Lines(vec![rising("a", 1.0)]), x(), y()).size(10, 10),
            vec!["size 10×10 is out of range"],
        ),
        (
            Figure::new(
                Chart::Lines(vec![Series::new("huge", [(-1e308, 1.0), (1.0, 2.0)])]),
                x(),
                y(),
            ),
            vec!["series `huge`: x -1e308 is too large to draw"],
        ),
        (
            Figure::new(
                Chart::Lines(vec![Series::new("tiny", [(1.0, 1e-310)])]),
                x(),
                y().log(),
            ),
            vec!["series `tiny`: y 1e-310 is too large"],
        ),
        (
            Figure::new(Chart::Lines(vec![rising("a", 1.0)]), x(), y()).png_scale(0.0),
            vec!["PNG scale 0"],
        ),
        (
            Figure::new(Chart::Lines(vec![rising("a", 1.0)]), x(), y())
                .size(8000, 8000)
                .png_scale(8.0),
            vec!["64000×64000 pixels"],
        ),
    ];
    for (fig, words) in cases {
        has(&err(&fig), &words);
    }
    assert_eq!(
        render_grid(&Grid::new(vec![], 1)).unwrap_err(),
        FigureError::EmptyGrid
    );
}

#[test]
fn odd_but_valid_data_renders() {
    let x = || Axis::new("x");
    let y = || Axis::new("y");
    let figs = vec![
        // One point; all values equal; negative values; a huge range.
        Figure::new(
            Chart::Lines(vec![Series::new("one", [(3.0, 3.0)])]),
            x(),
            y(),
        ),
        Figure::new(
            Chart::Lines(vec![Series::new("flat", [(0.0, 0.0), (1.0, 0.0)])]),
            x(),
            y(),
        ),
        Figure::new(
            Chart::Lines(vec![Series::new("neg", [(-5.0, -3.0), (-1.0, -10.0)])]),
            x(),
            y(),
        ),
        Figure::new(
            Chart::Lines(vec![Series::new("wide", [(1e-9, 1e-6), (1e12, 1e15)])]),
            x().log(),
            y().log(),
        ),
        Figure::new(
            Chart::Cdf(vec![Samples::new("same", [2.0; 50])]),
            x().log(),
            y(),
        ),
        Figure::new(
            Chart::Cdf(vec![Samples::new(
                "big",
                (0..100_000).map(|i| (i % 977) as f64),
            )]),
            x(),
            y(),
        ),
        // Values spanning 600 decades.
        Figure::new(
            Chart::Lines(vec![Series::new(
                "span",
                [(-1e300, 1e-300), (1e300, 1e300)],
            )]),
            x(),
            y().log(),
        ),
        // Long names.
        Figure::new(
            Chart::GroupedBars {
                categories: vec!["a category name far too long to fit in its slot".repeat(3)],
                series: vec![BarSeries::new(
                    "a legend entry far too long ".repeat(10),
                    [1.0],
                )],
            },
            x(),
            y(),
        ),
        // Data outside a fixed range is clipped, not drawn outside.
        Figure::new(
            Chart::Lines(vec![rising("clipped", 5.0)]),
            x().range(20.0, 50.0),
            y().range(0.0, 10.0),
        ),
        // A reference line alone, with an x range.
        Figure::new(Chart::Lines(vec![]), x().range(1.0, 100.0).log(), y())
            .reference(RefLine::new(0.5, "level")),
        // Names, many series, and a legend in each position.
        Figure::new(
            Chart::Lines(
                (0..12)
                    .map(|i| rising(&format!("series {i}"), i as f64 + 1.0))
                    .collect(),
            ),
            x(),
            y(),
        ),
        Figure::new(Chart::Lines(vec![rising("r", 1.0)]), x(), y()).legend(LegendPos::Right),
        Figure::new(Chart::Lines(vec![rising("a", 1.0)]), x(), y()).legend(LegendPos::Above),
        Figure::new(Chart::Lines(vec![rising("n", 1.0)]), x(), y()).legend(LegendPos::None),
        Figure::new(
            Chart::Lines(vec![rising("", 1.0)]),
            Axis::new(""),
            Axis::new(""),
        ),
        Figure::new(Chart::Lines(vec![rising("t", 1.0)]), x(), y())
            .title("a very long title ".repeat(20)),
    ];
    for fig in figs {
        let out = render(&fig).unwrap_or_else(|e| panic!("{e}: {fig:?}"));
        decode(&out.png);
        check_svg(&out.svg);
    }
}
