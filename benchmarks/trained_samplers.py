"""FD-proxy of every sampler at few steps on a trained run (e.g. the demo's: cosine, v-prediction).

    .venv/bin/python benchmarks/trained_samplers.py runs/digits

Prints one line per (sampler, steps): network calls and FD-proxy (450 samples, seed 0) in the
features `pick_extractor` chooses; compare with the floor the demo reports (0.248 on the digits).
"""
import sys, warnings, time
warnings.simplefilter("ignore")
import torch
from ddpmkit.io.checkpoint import load_checkpoint
from ddpmkit.data import load_dataset
from ddpmkit.evaluation.evaluate import pick_extractor, sample_quality
torch.set_num_threads(2)
ck = load_checkpoint(sys.argv[1])
cfg = ck.config
test, train = load_dataset(cfg.data, "test"), load_dataset(cfg.data, "train")
model, process = ck.ema_model.eval(), ck.process
ex = pick_extractor(test)
rows = [("ddim", 10), ("euler", 10), ("heun", 10), ("heun", 20), ("dpmpp2m", 10), ("dpmpp3m", 10),
        ("sde", 100), ("pc", 50), ("ddpm", 50), ("dpmpp2m_sde", 20), ("heun_churn", 10), ("rk45", 1)]
for name, steps in rows:
    t0 = time.perf_counter()
    q = sample_quality(process, model, test.shape, ex, train.x, test.x, [name], [steps], seed=0, progress=False)
    r = q["rows"][0]
    print(f"{name:12s} steps {steps:4d} nfe {r.get('nfe', '?')!s:>5}  FD {r['fd']:.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
