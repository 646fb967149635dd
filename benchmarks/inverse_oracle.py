"""Inverse-problem methods against the exact conditional of a correlated Gaussian (issue 14).

x_0 ~ N(0, Sigma) in d = 8 (AR(1) rho = 0.9, rotated), 4 coordinates observed; the exact denoiser
as the network of the discrete linear-schedule process (T = 1000, ancestral steps) or of EDM
(Karras grid). For each method and budget of network calls per returned sample: the Gaussian KL of
the samples' fitted moments to p(x_unknown | x_known), beside the floor (exact samples, same count).

    nice -n 5 .venv/bin/python benchmarks/inverse_oracle.py [--n 2000] [--process discrete|edm]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import ddpmkit as dk
from ddpmkit.inverse import GaussianOracle, Mask, gaussian_kl, solve_inverse
from ddpmkit.inverse.oracle import fit_gaussian
from ddpmkit.io.files import write_json

BUDGETS = (20, 50, 100, 250)


def plans(budget: int) -> dict[str, dict]:
    """Method parameters that spend about ``budget`` network calls per returned sample."""
    rp_steps = max(2, budget // 5)
    length = max(1, rp_steps // 10)
    return {"replace": dict(steps=budget),
            "repaint": dict(steps=rp_steps, jump_length=length, jump_n_sample=5),
            "dps": dict(steps=budget, step_size=1.0),
            "smc (4 particles)": dict(steps=max(1, budget // 4), particles=4),
            "smc (16 particles)": dict(steps=max(1, budget // 16), particles=16)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--process", choices=("discrete", "edm"), default="discrete")
    parser.add_argument("--out", default="benchmarks/out/inverse_oracle.json")
    args = parser.parse_args()
    oracle = GaussianOracle.correlated(8, 0.9)
    known = torch.tensor([1, 0, 1, 0, 1, 0, 0, 1], dtype=torch.bool)
    x_true = oracle.sample(1, torch.Generator().manual_seed(5))
    y = x_true * known
    mean, cov = oracle.conditional_moments(known, x_true[0, known])
    exact = mean + torch.randn(args.n, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64) \
        @ torch.linalg.cholesky(cov).T
    floor = gaussian_kl(*fit_gaussian(exact), mean, cov)
    process = dk.GaussianDiffusion(dk.Schedule.linear(1000)) if args.process == "discrete" else dk.EDM()
    net = oracle.model(process)
    rows_seen = [0]

    def counted(x, t, **cond):
        rows_seen[0] += x.shape[0]
        return net(x, t, **cond)

    results = []
    for budget in BUDGETS:
        for name, kw in plans(budget).items():
            rows_seen[0] = 0
            start = time.perf_counter()
            method = name.split()[0]
            x = solve_inverse(process, counted, y, Mask(known.double()), shape=(args.n, 8), method=method,
                              seed=0, progress=False, **kw)
            mu, c = fit_gaussian(x[:, ~known])
            results.append(dict(budget=budget, method=name, params=kw, calls=rows_seen[0] / args.n,
                                kl=gaussian_kl(mu, c, mean, cov), mean_error=float((mu - mean).norm()),
                                residual=float((x - y)[:, known].norm(dim=1).mean()),
                                seconds=time.perf_counter() - start))
            print(f"{budget:4d} {name:20s} calls={results[-1]['calls']:.0f} kl={results[-1]['kl']:.4f}", flush=True)
    methods = list(plans(20))
    lines = [f"KL to the exact conditional ({args.process} process, d = 8, 4 observed, n = {args.n}; "
             f"floor {floor:.4f}); cells: KL (network calls per sample)", "",
             "| method | " + " | ".join(f"~{b} calls" for b in BUDGETS) + " |",
             "|---|" + "---|" * len(BUDGETS)]
    for name in methods:
        cells = [f"{r['kl']:.4f} ({r['calls']:.0f})" for b in BUDGETS for r in results
                 if r["budget"] == b and r["method"] == name]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| floor (exact samples) | " + " | ".join(f"{floor:.4f}" for _ in BUDGETS) + " |")
    print("\n".join(lines))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, dict(process=args.process, n=args.n, floor=floor, results=results))


if __name__ == "__main__":
    main()
