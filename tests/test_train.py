"""The training loop: it learns, it is deterministic, it resumes bit for bit after SIGKILL, it
checkpoints on SIGTERM, it stops on NaN, micro-batches add up, the EMA follows its formula."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from ddpmkit.io.checkpoint import read_checkpoint
from ddpmkit.runs import load_checkpoint
from ddpmkit.training.config import TrainConfig, load_config
from ddpmkit.training.ema import EMA, ema_decay
from ddpmkit.training.train import Trainer, TrainingDiverged, train

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "num_threads=1", "network.channels=8", "network.channel_mult=[1]", "network.num_res_blocks=1",
    "network.attention_resolutions=[]", "network.mid_attention=false", "network.norm_groups=4",
    "network.dropout=0", "diffusion.T=50", "optim.batch_size=16", "optim.steps=40", "optim.lr=2e-3",
    "optim.warmup=5", "ema_rates=0.9,0.99", "ema_warmup=true", "log_every=5", "checkpoint_every=10",
    "sample_every=0", "keep_last=0",
]
# Every piece of state a resume must restore: dropout (global RNG), flips and label dropout
# (data stream), importance-sampled t (sampler history), learned variance, two EMAs.
FULL_STATE = [
    "network.dropout=0.1", "data.flip=true", "network.num_classes=10", "class_dropout=0.2",
    "diffusion.T=8", "diffusion.timestep_sampler=importance", "diffusion.variance=learned_range",
    "diffusion.objective=hybrid", "optim.decay=cosine",
]


def tiny_config(out: Path, *overrides: str) -> TrainConfig:
    """A ~5k-parameter U-Net on the 8x8 digits: a few milliseconds per step."""
    return load_config("digits", [f"out={out}", *TINY, *overrides])


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)[0]


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def run_script(code: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, **popen)


def test_loss_decreases_and_ema_tracks(tmp_path):
    result = train(tiny_config(tmp_path / "run", "optim.steps=60", "optim.decay=constant"), progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(5, 65, 5))
    first, last = lines[0]["loss"], min(x["loss"] for x in lines[-3:])
    assert last < 0.6 * first, (first, last)
    assert lines[1]["lr"] == pytest.approx(2e-3) and lines[0]["lr"] == pytest.approx(2e-3)
    assert result.step == 60 and result.stopped_by is None
    assert result.checkpoint.name == "step_00000060.json"


def test_same_seed_same_weights_and_other_seed_differs(tmp_path):
    a = train(tiny_config(tmp_path / "a", "optim.steps=10"), progress=False)
    b = train(tiny_config(tmp_path / "b", "optim.steps=10"), progress=False)
    c = train(tiny_config(tmp_path / "c", "optim.steps=10", "seed=1"), progress=False)
    assert_same_tensors(weights(a.checkpoint), weights(b.checkpoint))
    assert not torch.equal(weights(a.checkpoint)["model.conv_out.weight"],
                           weights(c.checkpoint)["model.conv_out.weight"])


def test_micro_batches_add_up_to_the_full_batch(tmp_path):
    full = train(tiny_config(tmp_path / "a", "optim.steps=6"), progress=False)
    micro = train(tiny_config(tmp_path / "b", "optim.steps=6", "optim.micro_batch=5"), progress=False)
    a, b = weights(full.checkpoint), weights(micro.checkpoint)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_bf16_autocast_on_cpu_learns(tmp_path):
    result = train(tiny_config(tmp_path / "run", "precision=bf16", "optim.steps=30"), progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(x["loss"]) for x in lines) and lines[-1]["loss"] < lines[0]["loss"]
    assert all(p.dtype == torch.float32 for p in result.ema_model.parameters())


def test_sigkill_then_resume_is_bit_exact(tmp_path):
    """A subprocess is SIGKILLed mid-run (maybe mid-write); resuming from its latest checkpoint
    must give the uninterrupted run's tensors exactly. No clock decides the outcome: the child
    cannot finish (from step 40 on it waits to be killed), and the parent waits for checkpoint 14
    however long a loaded machine takes to get there, so the kill lands anywhere in steps 14-40."""
    cfg = tiny_config(tmp_path / "run", *FULL_STATE, "optim.steps=50", "checkpoint_every=7")
    cfg_path = cfg.save(tmp_path / "cfg.json")
    code = ("import time; from ddpmkit.training.config import load_config; from ddpmkit.training.train import train; "
            f"train(load_config({str(cfg_path)!r}), progress=False, "
            "on_step=lambda tr: time.sleep(0.02 if tr.step < 40 else 1e6))")
    proc = run_script(code)
    latest = tmp_path / "run" / "checkpoints" / "latest"
    try:
        while proc.poll() is None and not (latest.exists() and int(latest.read_text().strip()[5:] or 0) >= 14):
            time.sleep(0.005)
        assert proc.poll() is None, f"the child ended (exit {proc.returncode}) before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    killed_at = int(latest.read_text().strip()[5:])
    assert 14 <= killed_at <= 35
    resumed = train(cfg, resume=True, progress=False)
    straight = train(cfg.replace(out=str(tmp_path / "ref")), progress=False)
    assert resumed.step == straight.step == 50
    assert_same_tensors(weights(resumed.checkpoint), weights(straight.checkpoint))
    state = read_checkpoint(resumed.checkpoint)[1]["state"]
    assert sum(state["timestep_sampler"]["counts"]) == 50 * 16   # the sampler saw every example
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))    # the replayed steps were not logged twice


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
    cfg = tiny_config(tmp_path / "run", "optim.steps=100000", "checkpoint_every=0")
    cfg_path = cfg.save(tmp_path / "cfg.json")
    code = ("import time, sys; from ddpmkit.training.config import load_config; from ddpmkit.training.train import train; "
            f"r = train(load_config({str(cfg_path)!r}), progress=False, on_step=lambda tr: time.sleep(0.005)); "
            "print('STOPPED', r.stopped_by, r.step); sys.stdout.flush()")
    proc = run_script(code, stdout=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    try:
        # the first log line (step 5) is written before the signal, however loaded the machine is
        while proc.poll() is None and not (metrics.exists() and metrics.stat().st_size > 0):
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=600)   # a hang guard only: the child stops at its next step
    finally:
        proc.kill()
    assert proc.returncode == 0
    word, signame, step = out.split()[-3:]
    assert (word, signame) == ("STOPPED", "SIGTERM") and 5 <= int(step) < 100000
    loaded = load_checkpoint(tmp_path / "run")
    assert loaded.state["step"] == int(step)


def test_nan_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path / "run", "checkpoint_every=4", "log_every=100")

    def poison(trainer: Trainer) -> None:
        if trainer.step == 6:
            with torch.no_grad():
                trainer.model.conv_out.bias.fill_(float("nan"))

    with pytest.raises(TrainingDiverged) as info:
        train(cfg, progress=False, on_step=poison)
    message = str(info.value)
    assert "nan" in message and "step_00000004.json" in message and "\n" not in message
    loaded = load_checkpoint(tmp_path / "run")
    assert loaded.state["step"] == 4
    assert all(torch.isfinite(p).all() for p in loaded.model.parameters())


def test_fresh_run_refuses_a_used_directory_and_resume_checks_the_config(tmp_path):
    cfg = tiny_config(tmp_path / "run", "optim.steps=3")
    train(cfg, progress=False)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        Trainer(cfg, progress=False)
    with pytest.raises(ValueError, match="config.network differs"):
        Trainer(tiny_config(tmp_path / "run", "network.channels=12"), resume=True, progress=False)


def test_load_checkpoint_rebuilds_the_trained_networks(tmp_path):
    result = train(tiny_config(tmp_path / "run", "optim.steps=5"), progress=False)
    loaded = load_checkpoint(tmp_path / "run", ema_rate=0.99)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 10, 49])
    with torch.no_grad():
        assert torch.equal(loaded.model(x, t), result.model.eval()(x, t))
    tensors = weights(result.checkpoint)
    for name, value in loaded.ema_model.state_dict().items():
        assert torch.equal(value, tensors[f"ema.1.{name}"])             # the 0.99 average
    first = load_checkpoint(tmp_path / "run").ema_model.state_dict()
    assert all(torch.equal(v, result.ema_model.state_dict()[k]) for k, v in first.items())
    assert loaded.config == result.config and loaded.process.T == 50 and loaded.state["step"] == 5


def test_vector_data_with_an_mlp_and_preview_pictures(tmp_path):
    """The MLP gets its in/out sizes from the data (2x out for learned variance); previews are
    PNG files: a scatter plot for points, a grid for images."""
    toy = load_config("toy2d", [f"out={tmp_path / 'toy'}", "num_threads=1", "data.n=400", "network.hidden=16",
                                "network.depth=1", "diffusion.T=20", "diffusion.variance=learned_range",
                                "diffusion.objective=hybrid", "optim.batch_size=32", "optim.steps=4",
                                "sample_every=4", "sample_count=50", "sample_steps=5"])
    result = train(toy, progress=False)
    assert (result.config.network.in_dim, result.config.network.out_dim) == (2, 4)
    digits = train(tiny_config(tmp_path / "img", "optim.steps=2", "sample_every=2", "sample_count=6",
                               "sample_steps=3"), progress=False)
    from PIL import Image

    assert Image.open(tmp_path / "toy" / "samples" / "step_00000004.png").size == (384, 384)
    grid = Image.open(tmp_path / "img" / "samples" / "step_00000002.png")
    assert grid.size == (3 * 64 + 4 * 8, 2 * 64 + 3 * 8) and digits.step == 2


def test_folder_images_without_data_image_size_move_the_attention(tmp_path):
    """Without data.image_size the U-Net takes the images' size (28) from the data, and the
    preset's attention (at 4 of 8, the second level) moves to the same level (14 of 28); a side
    the U-Net's levels cannot halve is one line naming data.image_size."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for side in (28, 27):
        folder = tmp_path / f"pngs{side}"
        folder.mkdir()
        for k in range(4):
            Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(folder / f"{k}.png")
    base = ["num_threads=1", "network.channels=8", "network.norm_groups=4", "network.dropout=0",
            "diffusion.T=20", "optim.batch_size=2", "optim.steps=2", "log_every=1", "checkpoint_every=0",
            "data.name=folder", "data.test_fraction=0.25"]
    cfg = load_config("digits", [*base, f"data.path={tmp_path / 'pngs28'}", f"out={tmp_path / 'run'}"])
    assert (cfg.data.image_size, cfg.network.image_size, cfg.network.attention_resolutions) == (None, 8, (4,))
    result = train(cfg, progress=False)
    net = load_checkpoint(tmp_path / "run").config.network
    assert result.step == 2 and (net.image_size, net.attention_resolutions) == (28, (14,))
    odd = load_config("digits", [*base, f"data.path={tmp_path / 'pngs27'}", f"out={tmp_path / 'odd'}"])
    with pytest.raises(ValueError, match=r"27x27 images.*data\.image_size"):
        train(odd, progress=False)


# ---------------------------------------------------------------------------- EMA
def test_ema_matches_its_closed_form_with_warmup():
    """With the weights held at w, after n updates ema = w + (w0 - w) prod_k decay_k."""
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    w0 = [p.detach().clone() for p in net.parameters()]
    ema = EMA(net, (0.9, 0.999), warmup=True)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    for _ in range(25):
        ema.update()
    for rate, model in zip(ema.rates, ema.models):
        keep = math.prod(ema_decay(rate, k, True) for k in range(25))
        for p, start, now in zip(model.parameters(), w0, net.parameters()):
            torch.testing.assert_close(p, now + (start - now) * keep, rtol=1e-6, atol=1e-6)
    assert ema_decay(0.999, 0, True) == pytest.approx(0.1) and ema_decay(0.9, 10 ** 6, True) == 0.9


def test_ema_of_a_bf16_model_stays_float32():
    net = nn.Linear(4, 4).to(torch.bfloat16)
    ema = EMA(net, (0.5,))
    ema.update()
    assert all(p.dtype == torch.float32 for p in ema.model().parameters())
    with pytest.raises(ValueError, match="ema_rates"):
        EMA(net, (0.9, 0.9))


def test_compiled_training_matches_eager(tmp_path, monkeypatch):
    """compile=true trains through torch.compile (inductor; here on the CPU) and lands on the same
    weights as eager execution, up to float rounding; the checkpoint keys are the plain ones."""
    pytest.importorskip("torch._inductor")
    compiled_modules = []

    def recording_compile(module, *args, **kwargs):
        compiled_modules.append(module)
        return real_compile(module, *args, **kwargs)

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", recording_compile)
    steps = ["optim.steps=3", "checkpoint_every=0", "ema_rates=0.9"]
    eager = train(tiny_config(tmp_path / "eager", *steps), progress=False)
    assert not compiled_modules
    compiled = train(tiny_config(tmp_path / "compiled", *steps, "compile=true"), progress=False)
    assert len(compiled_modules) == 1
    a, b = weights(eager.checkpoint), weights(compiled.checkpoint)
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            assert torch.allclose(a[key], b[key], rtol=1e-3, atol=1e-5), key


def test_sample_command_compiled_matches_eager(tmp_path):
    """`ddpmkit sample --compile` draws the same samples as the eager network, up to rounding."""
    import numpy as np

    from ddpmkit.cli.main import main

    pytest.importorskip("torch._inductor")
    run = train(tiny_config(tmp_path / "run", "optim.steps=2", "checkpoint_every=0"), progress=False)
    draws = {}
    for flag in ([], ["--compile"]):
        out = tmp_path / f"samples{len(flag)}.npz"
        assert main(["sample", str(run.run_dir), "--steps", "4", "--n", "6", "--out", str(out), "--quiet",
                     "--device", "cpu", *flag]) == 0
        draws[len(flag)] = np.load(out)["x"]
    assert np.allclose(draws[0], draws[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("preset", ["digits-ncsn", "digits-edm"])
def test_continuous_micro_batches_add_up_and_the_seed_decides(tmp_path, preset):
    """A continuous process draws the whole batch's t and noise first, so micro-batches (and DDP
    ranks) split the same numbers: the weights match the full batch's to rounding."""
    def run(name: str, *extra: str) -> dict[str, torch.Tensor]:
        cfg = load_config(preset, [f"out={tmp_path / name}", *TINY, "optim.steps=6", *extra])
        return weights(train(cfg, progress=False).checkpoint)

    full, micro, again = run("a"), run("b", "optim.micro_batch=5"), run("c")
    assert_same_tensors(full, again)
    for key in full:
        assert torch.allclose(full[key], micro[key], atol=1e-5, rtol=1e-4), key
    other = run("d", "seed=1")
    assert any(not torch.equal(full[k], other[k]) for k in full if k.startswith("model."))
