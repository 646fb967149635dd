"""The score-based presets (digits-ncsn, digits-subvp, digits-edm, toy2d-ve) from the command line:
each trains a few steps with a tiny network, samples through ``ddpmkit sample`` with the run's own
sampler, and its checkpoint reloads into the same process; the trainer's loss is ``process.loss``
on the same draws; ``eval`` gives ODE bits/dim and no bound; bad keys are one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpmkit.cli.main import main
from ddpmkit.core.edm import EDM
from ddpmkit.core.sde_vp import SubVP
from ddpmkit.core.ve import VE, ncsn_sigmas
from ddpmkit.data import load_dataset
from ddpmkit.runs import load_checkpoint
from ddpmkit.training.config import TrainConfig, load_config
from ddpmkit.training.train import Trainer
from test_train import TINY

TOY = ["num_threads=1", "data.n=200", "network.hidden=16", "network.depth=1", "optim.batch_size=32",
       "log_every=5", "checkpoint_every=0", "sample_every=0"]
PRESETS = {   # preset: (process class, tiny overrides, sample shape)
    "digits-ncsn": (VE, TINY, (1, 8, 8)),
    "digits-subvp": (SubVP, TINY, (1, 8, 8)),
    "digits-edm": (EDM, TINY, (1, 8, 8)),
    "toy2d-ve": (VE, TOY, (2,)),
}


def train_cli(preset: str, out: Path, *extra: str) -> TrainConfig:
    """``ddpmkit train preset`` for 6 steps of a tiny network; the config it was given."""
    overrides = [*PRESETS[preset][1], "optim.steps=6", "sample_steps=4", f"out={out}", *extra]
    assert main(["train", preset, *overrides, "--quiet"]) == 0
    return load_config(preset, overrides)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_trains_samples_and_reloads_into_its_process(preset, tmp_path, capsys):
    cls, _, shape = PRESETS[preset]
    run = tmp_path / "run"
    config = train_cli(preset, run)
    out = tmp_path / "x.npz"
    assert main(["sample", str(run), "--n", "5", "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    assert f"({config.sample_sampler}, 4 steps)" in capsys.readouterr().out   # the run's sampler and steps
    x = np.load(out)["x"]
    assert x.shape == (5, *shape) and np.isfinite(x).all()
    ckpt = load_checkpoint(run)
    assert type(ckpt.process) is cls
    assert repr(ckpt.process) == repr(config.diffusion.build())
    assert ckpt.config.diffusion == config.diffusion and ckpt.config.sample_sampler == load_config(preset).sample_sampler
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())) == ckpt.config


def test_ncsn_preset_samples_with_annealed_langevin_and_holds_ncsnv2_levels(tmp_path):
    config = load_config("digits-ncsn")
    choice = ncsn_sigmas(load_dataset(config.data, "train").x, config.diffusion.sigma_min)
    assert config.diffusion.sigma_max == pytest.approx(choice.sigma_max, rel=1e-6)   # technique 1, as the comment says
    assert choice.levels == 24
    run = tmp_path / "run"
    train_cli("digits-ncsn", run)
    out = tmp_path / "ald.npz"
    assert main(["sample", str(run), "--sampler", "ald", "--steps", "3", "--n", "3", "--out", str(out),
                 "--device", "cpu", "--quiet"]) == 0
    assert np.isfinite(np.load(out)["x"]).all()
    assert main(["sample", str(run), "--sampler", "ddpm", "--out", str(out), "--quiet"]) == 2   # discrete only


def test_trainer_loss_is_process_loss_on_the_same_draws(tmp_path):
    """The trainer draws t (EDM: sigma) then the noise from its noise stream, as ``process.loss``
    does from a generator, and hands them to ``process.loss`` (``draws=``): on one process without
    micro-batches the numbers are those of ``process.loss`` drawing for itself."""
    config = load_config("digits-edm", [*TINY, f"out={tmp_path}", "optim.batch_size=8"])
    trainer = Trainer(config, progress=False)
    assert trainer.loss_options == {"weighting": "edm"}
    state = trainer.noise_gen.get_state()
    batch = trainer._global_batch()
    got = trainer.process.loss(trainer._forward, batch["x0"], draws=batch, **trainer.loss_options)
    expected = trainer.process.loss(trainer._forward, batch["x0"], weighting="edm",
                                    generator=torch.Generator().set_state(state))
    assert got.shape == (8,) and torch.equal(got, expected)


def test_eval_gives_ode_bits_per_dim_and_no_bound_for_a_continuous_process(tmp_path):
    run = tmp_path / "run"
    train_cli("digits-edm", run)
    assert main(["eval", str(run), "--n", "2", "--device", "cpu", "--quiet", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["summary"]["bpd_bound"].startswith("n/a")
    assert "bound" not in report["bpd"]
    assert 0 < report["bpd"]["ode"]["mean"] < 20


@pytest.mark.parametrize("overrides, message", [
    (["diffusion.process=ve", "diffusion.sigma_data=null", "diffusion.prediction=score", "diffusion.weighting=vlb"],
     "diffusion.weighting must be one of ['ncsn', 'likelihood', 'min_snr'] for process='ve', got weighting='vlb'"),
    (["diffusion.beta_min=0.1"], "diffusion.beta_min is not used by process='edm'"),
    (["diffusion.prediction=eps"], "diffusion.prediction must be one of ['edm']"),
    (["diffusion.sigma_min=90"], "diffusion.sigma_min must be < sigma_max"),
    (["diffusion.objective=hybrid"], "diffusion.objective is for process='discrete' only"),
    (["diffusion.variance=learned_range", "diffusion.objective=simple"], "diffusion.variance"),
    (["diffusion.timestep_sampler=importance"], "diffusion.timestep_sampler"),
    (["sample_sampler=ddpm"], "TrainConfig.sample_sampler needs process='discrete'"),
    (["diffusion.process=subvp", "diffusion.prediction=v", "diffusion.sigma_data=null", "diffusion.sigma_min=null",
      "diffusion.sigma_max=null", "diffusion.weighting=null"], "diffusion.prediction must be one of ['eps', 'x0']"),
    (["diffusion.process=discrete"], "diffusion.prediction must be one of"),   # 'edm' is no discrete prediction
])
def test_bad_process_keys_are_one_line_errors(overrides, message):
    with pytest.raises(ValueError) as err:
        load_config("digits-edm", overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_old_configs_load_as_discrete_and_continuous_ones_round_trip(tmp_path):
    old = load_config("digits").to_dict()
    for key in ("process", "weighting", "sigma_min", "sigma_max", "sigma_data", "beta_min", "time_scale"):
        old["diffusion"].pop(key, None)   # a config written before these keys existed
    assert TrainConfig.from_dict(old) == load_config("digits")
    with pytest.raises(ValueError, match="diffusion.weighting is not used by process='discrete'"):
        load_config("digits", ["diffusion.weighting=ncsn"])
    for preset in PRESETS:
        cfg = load_config(preset)
        assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
        cfg.save(tmp_path / f"{preset}.json")
        assert load_config(tmp_path / f"{preset}.json") == cfg


def test_presets_command_lists_each_process(capsys):
    assert main(["presets"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "process=ve" in lines["digits-ncsn"] and "VE(sigma_min=0.01" in lines["digits-ncsn"]
    assert "process=subvp" in lines["digits-subvp"] and "process=edm" in lines["digits-edm"]
    assert "process=ve" in lines["toy2d-ve"] and "process=discrete" in lines["digits"]
