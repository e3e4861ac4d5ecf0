"""Parameters, dense FLOPs and a one-thread forward + backward of zoo models beside DCNv2.

    python benchmarks/ctr_zoo.py --model-input data/09_benchmarks/ctr/recflow_dcnv2/kedro/05_model_input
    python benchmarks/bench_ctr.py --render-only     # the table joins the CTR section

On the feature spec a `bench_ctr.py` run wrote (26 categorical + 13 numeric fields, its
vocabularies), each entry of ENTRIES is built as the pipeline builds it, at `bench_ctr.py`'s
configuration (MLP 400-400-400). `ctr_profile.model_figures` gives its parameters (all, and
outside the embedding tables) and dense FLOPs per sample (Linear layers plus the
`matmul_flops` of blocks with input-dependent matmuls, forward + backward); `ctr_ab.timed`
the median wall and CPU (`process_time`) ms of forward + backward of one 4096-row batch of
random valid inputs (ids drawn within each vocabulary), the models alternating round by
round. No optimiser step and no batch assembly: this is not `bench_ctr.py`'s training run.
The 1-minute load average is recorded before and after (a busy machine slows every model).

Writes `--out` (default benchmarks/results/ctr_zoo.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import torch

import ctr_ab
import ctr_kedro
import ctr_profile
from recflow.export.onnx_export import example_inputs
from recflow.features import FeatureSpec
from recflow.pipelines.ranking.params import ModelEntry
from recflow.registry import MODELS
from recflow.serving.schema import input_schema

REPO = Path(__file__).resolve().parents[1]
BATCH = 4096
_MLCC = {"heads": 4, "cross_dims": [4, 1], "out_dim": 8, "hidden": [400, 400, 400]}
#: dcnv2 as bench_ctr trains it; MLCC at the reference code's Criteo settings (4 heads, levels
#: 4 -> 1, 8 per field after the local compressor); MC-MLCC with 4 channels split from the
#: same 16-wide embedding, and as the reference's S=4 (a 64-wide embedding, 16 per channel)
ENTRIES: dict[str, dict[str, Any]] = {
    "dcnv2": ctr_kedro.MODELS["dcnv2"],
    "mlcc": {"name": "mlcc", "params": {"embed_dim": 16, **_MLCC}},
    "mc-mlcc C=4, d=16": {"name": "mlcc", "params": {"embed_dim": 16, "channels": 4, **_MLCC}},
    "mc-mlcc C=4, d=64": {"name": "mlcc", "params": {"embed_dim": 64, "channels": 4, **_MLCC}},
}


def measure(model_input: Path, rounds: int, threads: int) -> dict[str, Any]:
    """Figures and timings of every entry (one warm-up call each before the timed rounds)."""
    torch.set_num_threads(threads)
    spec = FeatureSpec.from_dict(json.loads((model_input / "feature_spec.json").read_text()))
    figures, steps = {}, {}
    for name, entry in ENTRIES.items():
        figures[name] = ctr_profile.model_figures(model_input, entry)
        typed = ModelEntry.model_validate(entry)
        torch.manual_seed(0)
        model = MODELS.create(typed.name, spec, params=typed.typed_params()).train()
        batch = example_inputs(input_schema(spec, model.input_names), batch=BATCH, seed=0)
        steps[name] = ctr_ab._backward(model, lambda batch=batch: batch)
        steps[name]()
    timings = ctr_ab.timed(steps, rounds)
    return {name: {**figures[name], **timings[name], "params_config": ENTRIES[name]["params"]}
            for name in ENTRIES}


def markdown(record: dict[str, Any]) -> list[str]:
    """The table `bench_ctr.py` puts in its section (after the hot-path table)."""
    lines = ["", f"Zoo models beside DCNv2 (`python benchmarks/ctr_zoo.py`, {record['date']}): "
             "the same feature spec (26 categorical + 13 numeric fields), MLP 400-400-400; "
             f"forward + backward of one {record['batch_size']}-row batch of random valid ids, "
             f"no optimiser step, {record['threads']} torch thread(s), median of "
             f"{record['rounds']} rounds with the models alternated; the machine was busy "
             f"(1-minute load average {record['load_before']:.2f} before, "
             f"{record['load_after']:.2f} after, on {record['cores']} cores), so read the times "
             "against each other, not as this model's speed. MLCC: Yu et al., "
             "arXiv:2602.12041 (`mlcc`, `channels` > 1 is MC-MLCC).", "",
             "| model | config (and the MLP) | params | params outside embeddings | "
             "dense MFLOP/sample (fwd+bwd) | fwd+bwd ms CPU | fwd+bwd ms wall |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, row in record["models"].items():
        config = ", ".join(f"{k} {v}" for k, v in row["params_config"].items() if k != "hidden")
        lines.append(f"| {name} | {config} | {row['params']:,} | "
                     f"{row['params_outside_embeddings']:,} | "
                     f"{row['flops_per_sample']['total'] / 1e6:.2f} | {row['cpu_ms']:.0f} | "
                     f"{row['wall_ms']:.0f} |")
    return lines + ["", "*dense MFLOP* counts matmuls only (`ctr_profile.dense_flops`): MC-MLCC's "
                    "channels are narrow (k_0 = d/C) and their element-wise work (concatenations, "
                    "the later crossing levels) grows with C, so on a CPU its time follows the "
                    "channel count more than its FLOPs."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-input", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/ctr_zoo.json")
    args = parser.parse_args()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    load_before = os.getloadavg()[0]
    models = measure(args.model_input, args.rounds, args.threads)
    record = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="minutes"),
              "uptime_before": uptime, "load_before": load_before,
              "load_after": os.getloadavg()[0], "cores": os.cpu_count(), "rounds": args.rounds, "threads": args.threads,
              "batch_size": BATCH, "models": models}
    args.out.write_text(json.dumps(record, indent=2))
    print("\n".join(markdown(record)))


if __name__ == "__main__":
    main()
