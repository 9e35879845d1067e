#!/usr/bin/env python3
"""Markdown tables of the simulator studies from the specs' tables
(experiments/studies/*.yaml, run by experiments/studies/run_studies.sh): a
row is found by its spec and its `label`."""
import csv
import os
import sys

SPECS = {"fig5": "studies-fig5", "lvg": "studies-local-vs-global",
         "pd": "studies-pd-ratio", "bw": "studies-bandwidth"}


def load(out, name):
    """The table row of run `name`: fig5-<label>, lvg-<label>, pd-<label>, bw-<g>."""
    prefix, label = name.split("-", 1)
    if prefix == "bw":
        label = name
    with open(os.path.join(out, SPECS[prefix], "table.csv")) as f:
        for row in csv.DictReader(f):
            if row["label"] == label:
                return {k: (float(v) if v not in ("",) and k not in ("point_id", "trace", "label", "scheduler", "deployment") and _num(v) else v)
                        for k, v in row.items()}
    raise SystemExit(f"{out}/{SPECS[prefix]}: no row labelled {label}")


def _num(v):
    try:
        float(v)
        return True
    except ValueError:
        return False


def fig5(out):
    print("| scheduler | TTFT mean (s) | TTFT p90 (s) | TBT mean (ms) | TBT p90 (ms) | hit rate "
          "| effective request capacity (TTFT ≤ 30 s, TBT ≤ 100 ms) | prefill GPU s / request "
          "| prefix fetched (GB) | events |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = [(s, f"fig5-{s}") for s in
            ["random", "round-robin", "least-loaded", "local-cache-aware", "kvcache-centric"]]
    rows.append(("kvcache-centric, 16 colocated nodes", "fig5-colocated-16"))
    for label, name in rows:
        s = load(out, name)
        print(f"| {label} | {s['ttft_mean_s']:.2f} | {s['ttft_p90_s']:.2f} | "
              f"{1e3 * s['tbt_mean_s']:.1f} | {1e3 * s['tbt_p90_s']:.1f} | "
              f"{100 * s['hit_rate']:.1f} % | {100 * s['effective_request_capacity']:.1f} % | "
              f"{s['prefill_gpu_s_per_request']:.3f} | {s['fetch_bytes'] / 1e9:,.0f} | "
              f"{int(s['events']):,} |")


def studies(out):
    print("| setup | TTFT mean (s) | TTFT p90 (s) | TBT mean (ms) | TBT p90 (ms) | hit rate "
          "| effective request capacity |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, name in [("§5.3.2 conversation, local cache (local-cache-aware)", "lvg-local"),
                        ("§5.3.2 conversation, global cache (kvcache-centric)", "lvg-global")]:
        s = load(out, name)
        print(f"| {label} | {s['ttft_mean_s']:.2f} | {s['ttft_p90_s']:.2f} | – | – | "
              f"{100 * s['hit_rate']:.1f} % (prefill GPU {s['prefill_gpu_s_per_request']:.3f} s "
              f"per request) | – |")
    for p in range(5, 12):
        name = f"pd-{p}P{16 - p}D"
        s = load(out, name)
        print(f"| §5.5 synthetic, {p}P{16 - p}D | {s['ttft_mean_s']:.2f} | {s['ttft_p90_s']:.2f} | "
              f"{1e3 * s['tbt_mean_s']:.1f} | {1e3 * s['tbt_p90_s']:.1f} | "
              f"{100 * s['hit_rate']:.1f} % | {100 * s['effective_request_capacity']:.1f} % |")
    for g in [25, 50, 100, 200, 400, 800]:
        s = load(out, f"bw-{g}")
        print(f"| §5.4.2 synthetic, NIC {g} Gbps | {s['ttft_mean_s']:.2f} | {s['ttft_p90_s']:.2f} | "
              f"{1e3 * s['tbt_mean_s']:.1f} | {1e3 * s['tbt_p90_s']:.1f} | "
              f"{100 * s['hit_rate']:.1f} % | {100 * s['effective_request_capacity']:.1f} % |")


def breakdown(out):
    print("| run | queue (s) | prefill (s) | transfer (s) | load (s) | TTFT (s) | decode (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = [("Figure 5, local-cache-aware", "fig5-local-cache-aware"),
            ("Figure 5, kvcache-centric", "fig5-kvcache-centric")]
    rows += [(f"§5.4.2, NIC {g} Gbps", f"bw-{g}") for g in [25, 50, 100, 200, 400, 800]]
    for label, name in rows:
        s = load(out, name)
        print(f"| {label} | {s['queue_mean_s']:.3f} | {s['prefill_mean_s']:.3f} | "
              f"{s['transfer_mean_s']:.3f} | {s['load_mean_s']:.3f} | {s['ttft_mean_s']:.3f} | "
              f"{s['decode_mean_s']:.3f} |")


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "results/studies"
    print("## Figure 5 (reports/fig5-scheduling.md)\n")
    fig5(out)
    print("\n## Studies (reports/simulator-studies.md)\n")
    studies(out)
    print("\n## TTFT's parts, §5.4.3 (means over served requests)\n")
    breakdown(out)
