"""Prints the screening records (`screening_cpu.jsonl`) as a Markdown table."""

import json
import os

ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
PATH = os.path.join(ROOT, "benchmarks", "results", "screening_cpu.jsonl")

print(
    "| tag | mode | ep/blk (E2E ep) | bs | head | final head | train/val | "
    "val acc | best block val | test acc | train wall s | process wall s "
    "| process CPU s | load |"
)
print("|" + "---|" * 14)
for line in open(PATH):
    r = json.loads(line)
    s = r["settings"]
    blocks = r.get("block_validation_accuracy") or []
    best = max(blocks) if blocks else None
    ep = s["epochs"] if s["mode"] == "end_to_end" else s["epochs_per_block"]
    val = r["validation_accuracy"]
    print(
        f"| {r['tag']} | {s['mode']} | {ep} | {s['batch_size']} | "
        f"conv{s['head_conv_filters']} | {s['final_head']} | "
        f"{r['train_images']}/{r['validation_images']} | "
        f"{'' if val is None else f'{val:.4f}'} | "
        f"{'' if best is None else best} | {r['test_accuracy'] or ''} | "
        f"{r['training_wall_s']} | {r['total_process_wall_s']} | "
        f"{r.get('process_cpu_s', '')} | {r['load1_at_end']} |"
    )
