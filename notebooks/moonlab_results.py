"""Reading a `moonlab run` results folder, for the notebooks beside this file.

A results folder (`moonlab run SPEC.yaml --results DIR`) holds `table.parquet`
(and the same rows as `table.csv`): one row per point — `point_id`, `trace`,
the spec's varying parameters, `seed`, then every number of the point's
`summary.json` but its wall time — and one run folder per point,
`DIR/<point_id>/`, with `requests.parquet` (one row per request, the columns
of `core/src/metrics.rs` REQUEST_COLUMNS), `timeseries.csv`, `replicas.csv`,
`summary.json`, `config.yaml` and `point.json`.

Nothing here computes a simulation result: it only reads files and joins each
run's rows to its point's parameters. The notebooks do the analysis.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib
import polars as pl

# Okabe & Ito (2008), the colour-blind-safe qualitative palette, ordered so
# that the first colours are the most distinct on white (yellow and black
# last).
OKABE_ITO = [
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#56B4E9",  # sky blue
    "#CC79A7",  # reddish purple
    "#F0E442",  # yellow
    "#000000",  # black
]
# Markers and dash patterns to tell lines apart without colour too.
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
DASHES = ["-", "--", "-.", ":"]

# TTFT's parts (§5.4.3), in the order they happen, each with one colour.
TTFT_PARTS = ["queue_s", "prefill_s", "transfer_s", "load_s"]
PART_LABELS = {
    "queue_s": "queueing (incl. prefix fetch)",
    "prefill_s": "prefill",
    "transfer_s": "KV transfer to decode",
    "load_s": "KV load into HBM",
}
PART_COLOURS = dict(zip(TTFT_PARTS, [OKABE_ITO[3], OKABE_ITO[0], OKABE_ITO[1], OKABE_ITO[2]]))

# The table's own columns; the parameters sit between `trace` and `seed`.
POINT_ID, TRACE, SEED = "point_id", "trace", "seed"

DEFAULT_RESULTS = "results/tiny-sweep"


def setup_matplotlib() -> None:
    """Agg (no display needed), the Okabe–Ito cycle, readable sizes."""
    matplotlib.use("Agg")
    from cycler import cycler

    matplotlib.rcParams.update(
        {
            "axes.prop_cycle": cycler(color=OKABE_ITO),
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "figure.constrained_layout.use": True,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "legend.frameon": False,
            "image.cmap": "viridis",
        }
    )


def results_dir(default: str = DEFAULT_RESULTS) -> Path:
    """The results folder: $MOONLAB_RESULTS, else `default`.

    A relative path is taken from the working folder, or else from the
    repository root (Jupyter runs a notebook in its own folder, notebooks/,
    while `moonlab run` writes `results/<spec name>` under the root).
    """
    raw = os.environ.get("MOONLAB_RESULTS") or default
    path = Path(raw).expanduser()
    if not path.is_absolute() and not path.exists():
        for base in (Path.cwd().parent, Path(__file__).resolve().parent.parent):
            if (base / path).exists():
                path = base / path
                break
    if not (path / "table.parquet").is_file():
        raise FileNotFoundError(
            f"{raw}: no table.parquet there. Make the results with "
            f"`moonlab run experiments/tests/tiny-sweep.yaml --results {raw}` "
            "(from the repository root), or point MOONLAB_RESULTS at a results folder."
        )
    return path.resolve()


def figures_dir() -> Path | None:
    """$MOONLAB_FIGURES, where figures are also saved as PNG (None: not saved)."""
    raw = os.environ.get("MOONLAB_FIGURES")
    if not raw:
        return None
    path = Path(raw).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def show(fig, name: str) -> None:
    """Show a figure in the notebook (as a PNG, whatever the backend), save
    it as `<name>.png` under $MOONLAB_FIGURES if set, and close it."""
    import io

    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    png = io.BytesIO()
    fig.savefig(png, format="png")
    out = figures_dir()
    if out is not None:
        (out / f"{name}.png").write_bytes(png.getvalue())
    display(Image(data=png.getvalue(), format="png"))
    plt.close(fig)


def load_table(results: Path) -> pl.DataFrame:
    return pl.read_parquet(results / "table.parquet")


def parameter_columns(table: pl.DataFrame) -> list[str]:
    """The spec's varying parameters: the columns between `trace` and `seed`."""
    cols = table.columns
    if cols[:2] != [POINT_ID, TRACE] or SEED not in cols:
        raise ValueError(f"not a moonlab results table: columns {cols[:4]}...")
    return cols[2 : cols.index(SEED)]


def metric_columns(table: pl.DataFrame) -> list[str]:
    cols = table.columns
    return cols[cols.index(SEED) + 1 :]


def point_label(row: dict, keys: list[str]) -> str:
    """`scheduler=random, rate_scale=2` style, short for one key."""
    if len(keys) == 1:
        return str(row[keys[0]])
    return ", ".join(f"{k}={row[k]}" for k in keys)


def _read_requests(run: Path) -> pl.DataFrame:
    if (run / "requests.parquet").is_file():
        return pl.read_parquet(run / "requests.parquet")
    return pl.read_csv(run / "requests.csv", infer_schema_length=None)


def load_per_point(
    results: Path, table: pl.DataFrame, read, what: str
) -> pl.DataFrame:
    """Every point's frame from `read(run_folder)`, each row tagged with its
    point's id, trace, parameters and seed (the table's first columns)."""
    keys = [POINT_ID, TRACE, *parameter_columns(table), SEED]
    frames = []
    for point in table.select(keys).iter_rows(named=True):
        run = results / point[POINT_ID]
        if not run.is_dir():
            raise FileNotFoundError(f"{run}: the table lists point {point[POINT_ID]} but its run folder is missing")
        frame = read(run)
        tags = [pl.lit(point[k]).alias(k) for k in keys]
        frames.append(frame.select(*tags, pl.all()))
    if not frames:
        raise ValueError(f"{results}: the table has no points, so no {what}")
    # Parameter columns keep the table's types (a null literal would not).
    out = pl.concat(frames, how="vertical_relaxed")
    return out.with_columns(pl.col(k).cast(table.schema[k]) for k in keys)


def load_requests(results: Path, table: pl.DataFrame) -> pl.DataFrame:
    """All points' per-request tables, one frame."""
    return load_per_point(results, table, _read_requests, "requests")


TIMESERIES_SCHEMA = {
    "time_s": pl.Float64,
    "instance": pl.Int64,
    "role": pl.String,
    "utilization": pl.Float64,
    "queued": pl.Int64,
    "batch": pl.Int64,
    "cache_blocks": pl.Int64,
}


def load_timeseries(results: Path, table: pl.DataFrame) -> pl.DataFrame:
    """All points' timeseries.csv (time_s, instance, role, utilization,
    queued, batch, cache_blocks), one frame."""
    return load_per_point(
        results,
        table,
        lambda run: pl.read_csv(run / "timeseries.csv", schema_overrides=TIMESERIES_SCHEMA),
        "time series",
    )


def load_summaries(results: Path, table: pl.DataFrame) -> list[dict]:
    """Each point's summary.json, in the table's order."""
    return [
        json.loads((results / pid / "summary.json").read_text())
        for pid in table[POINT_ID].to_list()
    ]


def load_points(results: Path, table: pl.DataFrame) -> list[dict]:
    """Each point's point.json, in the table's order."""
    return [
        json.loads((results / pid / "point.json").read_text())
        for pid in table[POINT_ID].to_list()
    ]


# Two-sided 97.5 % quantiles of Student's t for 1..=30 degrees of freedom,
# the same table as experiments/src/aggregate.rs (so the notebooks' intervals
# are `moonlab table`'s).
T975 = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
]


def t975(df: int) -> float:
    """t(0.975, df); beyond 30, interpolated in 1/df as aggregate.rs does."""
    if df <= 0:
        return float("nan")
    if df <= 30:
        return T975[df - 1]
    x = 1.0 / df
    knots = [(1 / 30, 2.042), (1 / 60, 2.000), (1 / 120, 1.980), (0.0, 1.960)]
    for (x0, y0), (x1, y1) in zip(knots, knots[1:]):
        if x1 <= x <= x0:
            return y1 + (y0 - y1) * (x - x1) / (x0 - x1)
    return 1.960


def nearest_rank_expr(values: pl.Expr, q: float) -> pl.Expr:
    """The same quantile as a polars expression over `values` (nulls
    ignored; null if none), usable in `group_by(...).agg(...)`."""
    v = values.drop_nulls().sort()
    rank = (v.len().cast(pl.Float64) * q).ceil().cast(pl.Int64).clip(1)
    return v.get(rank - 1, null_on_oob=True)


def nearest_rank(values, q: float) -> float:
    """Nearest-rank quantile, the definition summary.json uses
    (core/src/metrics.rs `quantile`): the ceil(q·n)-th smallest value."""
    import math

    v = sorted(values)
    if not v:
        return 0.0
    rank = min(max(math.ceil(q * len(v)), 1), len(v))
    return v[rank - 1]


def log_axis(ax, which: str = "y") -> None:
    """A logarithmic axis labelled in plain numbers (0.5, 2, 30, not 3×10¹);
    over at most two decades, the 2s and 5s (and 3s, over at most one and
    a half) between the powers of ten are labelled too. Call after plotting (it reads the axis' limits)."""
    import math

    from matplotlib import ticker

    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    lo, hi = ax.get_ylim() if which == "y" else ax.get_xlim()
    decades = math.log10(hi / lo) if lo > 0 and hi > 0 else 99
    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(plain)
    if decades <= 2:
        subs = (2.0, 3.0, 5.0) if decades <= 1.5 else (2.0, 5.0)
        axis.set_minor_locator(ticker.LogLocator(base=10, subs=subs))
        axis.set_minor_formatter(plain)
    else:
        axis.set_minor_formatter(ticker.NullFormatter())


def sweep_axes(table: pl.DataFrame) -> tuple[str | None, list[str], list[str]]:
    """How to draw a sweep: (x, series, varying).

    `varying`: the parameters with more than one value. `x`: `rate_scale`
    if it varies, else the first numeric varying parameter, else None.
    `series`: what tells the lines apart — the trace if there are several,
    and every varying parameter but `x`.
    """
    params = parameter_columns(table)
    varying = [p for p in params if table[p].n_unique() > 1]
    numeric = [p for p in varying if table.schema[p].is_numeric()]
    x = "rate_scale" if "rate_scale" in numeric else (numeric[0] if numeric else None)
    series = ([TRACE] if table[TRACE].n_unique() > 1 else []) + [p for p in varying if p != x]
    return x, series, varying


def series_of(frame: pl.DataFrame, series: list[str]) -> list[tuple[str, pl.DataFrame]]:
    """The lines of a frame, in its order: (label, the frame's rows of that
    line); one line, "all points", without series."""
    if not series:
        return [("all points", frame)]
    keys = frame.select(series).unique(maintain_order=True)
    return [
        (
            point_label(k, series),
            frame.join(pl.DataFrame([k], schema=keys.schema), on=series, how="semi", nulls_equal=True),
        )
        for k in keys.iter_rows(named=True)
    ]


X_LABELS = {
    "rate_scale": "arrival rate (× the trace's rate)",
    "prefill.instances": "prefill instances",
    "decode.instances": "decode instances",
}


def x_label(x: str | None) -> str:
    return X_LABELS.get(x, x or "point")
