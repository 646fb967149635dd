"""docs/flow_handoff.png: 16 digits a row, all rows from the same noise: a student's one call, its two
calls, its one call plus the teacher's last call from ``--sigma`` (``dk.sampling.Handoff``), and the
teacher with DPM-Solver++ 3M in 8 calls.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/handoff_picture.py runs/digits-flow-2step-ph-5k runs/digits-flow
"""
from __future__ import annotations

import argparse

import torch

import ddpmkit as dk
from ddpmkit.runs import data_record, load_checkpoint
from ddpmkit.viz import save_sample_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("student")
    parser.add_argument("teacher")
    parser.add_argument("--sigma", type=float, default=0.3, help="the hand-off level (default 0.3)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="docs/flow_handoff.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    student, teacher = load_checkpoint(args.student), load_checkpoint(args.teacher)
    data = data_record(student.config)
    z = torch.randn(16, *data.shape, generator=torch.Generator().manual_seed(args.seed))
    common = dict(x_T=z, clip_x0=True, progress=False)
    handoff = dk.sampling.Handoff(teacher.process, teacher.ema_model, args.sigma)
    rows = [dk.sample(student.process, student.ema_model, None, "euler", 1, **common),
            dk.sample(student.process, student.ema_model, None, "euler", 2, **common),
            dk.sample(student.process, student.ema_model, None, "euler", 1, handoff=handoff, **common),
            dk.sample(teacher.process, teacher.ema_model, None, "dpmpp3m", 8, **common)]
    print(f"wrote {save_sample_grid(torch.cat(rows), args.out, data.levels, nrow=16, kind=data.kind)}")


if __name__ == "__main__":
    main()
