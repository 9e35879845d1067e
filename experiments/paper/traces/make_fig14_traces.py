#!/usr/bin/env python3
"""Figure 14's single-request traces (Mooncake JSONL, 512-token blocks).

For each prompt length (8k ... 128k = 8192 ... 131072 tokens) two traces:
- `fig14-<len>-cold.jsonl`: one request, nothing cached (Figure 14a);
- `fig14-<len>-warm.jsonl`: a warm-up request holding the first 95 % of the
  prompt (whole blocks: floor(0.95 * blocks)), then, 600 s later when the
  warm-up is long done, the measured request with the full prompt, whose
  prefix is in the prefill node's DRAM cache (Figure 14b).
Every measured request decodes 128 tokens (the caption's "Decode represents
the time to decode 128 tokens"); the warm-up decodes 1.

Run from this folder: python3 make_fig14_traces.py (deterministic output).
"""
import json

BLOCK = 512
for k in (8, 16, 32, 64, 128):
    n = k * 1024
    blocks = -(-n // BLOCK)
    ids = list(range(blocks))
    measured = {"timestamp": 0, "input_length": n, "output_length": 128, "hash_ids": ids}
    with open(f"fig14-{k}k-cold.jsonl", "w") as f:
        f.write(json.dumps(measured) + "\n")
    cached = (95 * blocks) // 100
    warm = {"timestamp": 0, "input_length": cached * BLOCK, "output_length": 1, "hash_ids": ids[:cached]}
    later = dict(measured, timestamp=600_000)
    with open(f"fig14-{k}k-warm.jsonl", "w") as f:
        f.write(json.dumps(warm) + "\n" + json.dumps(later) + "\n")
