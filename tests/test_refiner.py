"""PDR's refinement network (RFNet, Lyu et al. 2022): the untrained refiner is the identity and
keeps the partial bit for bit, the refined points permute with the coarse ones, a tiny refiner
learns to undo a known corruption of the missing points, a resumed run ends with the weights of an
uninterrupted one, and bad inputs are one-line errors."""
from __future__ import annotations

import json

import pytest
import torch

from ddpmkit.data import load_dataset
from ddpmkit.data.config import DataConfig
from ddpmkit.evaluation.metrics.pointcloud import chamfer
from ddpmkit.nets import PVCNN, PVCNNConfig
from ddpmkit.sampling.refine import Refiner, refine_completion
from ddpmkit.training.refiner import (CoarseData, RefinerConfig, RefinerTrainer, chamfer_loss, load_refiner,
                                      refiner_network_config)

TINY = PVCNNConfig(channels=(16, 16), resolutions=(4, 4), voxel_channels=8, groups=4, time_dim=8, embed_dim=16,
                   conditional=True, zero_init=True)


def _toy(shift: float = 0.3, shrink: float = 1.0, n: int = 48) -> CoarseData:
    """Shapes of 64 points cut into 32 given + 32 missing; the 'coarse' missing points are the true
    ones shrunk towards the origin and shifted by a constant (two draws: +-0.05 more in y)."""
    full = load_dataset(DataConfig("shapes", n=n, points=64, partial_points=32), "train")
    missing = load_dataset(DataConfig("shapes", n=n, points=64, partial_points=32, missing_only=True), "train").x
    wrong = shrink * missing + torch.tensor([shift, 0.0, 0.0])
    coarse = torch.stack([wrong + torch.tensor([0.0, 0.05, 0.0]), wrong - torch.tensor([0.0, 0.05, 0.0])])
    return CoarseData(full.cond["partial"], full.x, coarse)


def _refiner(mirror: bool = False, zero: bool = True) -> Refiner:
    torch.manual_seed(0)
    net = PVCNN(TINY)
    if not zero:   # a non-trivial displacement: random head
        torch.nn.init.normal_(net.head[-1].weight, std=0.3)
        torch.nn.init.normal_(net.head[-1].bias, std=0.3)
    return Refiner(net.eval(), 32, 32, mirror)


@pytest.mark.parametrize("mirror", [False, True])
def test_untrained_refiner_is_the_identity(mirror: bool) -> None:
    data = _toy()
    coarse = torch.cat([data.partial, data.coarse[0]], 1)
    done = refine_completion(_refiner(mirror), data.partial, coarse, batch_size=7)
    assert torch.equal(done, coarse)                   # zero head: x + 0 is x, bit for bit
    assert torch.equal(done[:, :32], data.partial)
    moved = refine_completion(_refiner(mirror, zero=False), data.partial, coarse)
    assert torch.equal(moved[:, :32], data.partial)    # the partial is concatenated, never moved
    assert (moved[:, 32:] - coarse[:, 32:]).abs().max() > 1e-2   # a random head does move the rest


def test_refined_points_permute_with_the_coarse_points() -> None:
    """Per point or symmetric everywhere: exact up to the float order of the voxel sums (float64:
    1e-12 is thousands of ulps of O(1) values; a real mismatch is ~1e-2)."""
    data = _toy()
    refiner = _refiner(mirror=True, zero=False)
    refiner.network.double()
    partial, coarse = data.partial[:5].double(), torch.cat([data.partial[:5], data.coarse[0, :5]], 1).double()
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(1))
    done = refine_completion(refiner, partial, coarse)
    shuffled = refine_completion(refiner, partial, torch.cat([partial, coarse[:, 32:][:, perm]], 1))
    torch.testing.assert_close(shuffled[:, 32:], done[:, 32:][:, perm], rtol=0, atol=1e-12)


def test_chamfer_loss_is_the_evaluation_chamfer() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 30, 3, generator=g, dtype=torch.float64), torch.randn(4, 20, 3, generator=g, dtype=torch.float64)
    # the metric's augmented matmul rounds at ~1e-15 relative in float64
    torch.testing.assert_close(chamfer_loss(a, b), chamfer(a, b), rtol=1e-12, atol=1e-12)


def _train(tmp_path, data: CoarseData, steps: int, name: str = "run", stop: int | None = None,
           resume: bool = False) -> RefinerTrainer:
    config = RefinerConfig(coarse_run="toy", draws=2, held_out=8, steps=steps, batch_size=8, lr=3e-3, warmup=10,
                           log_every=20, checkpoint_every=0, rotate=False, mirror=False)
    trainer = RefinerTrainer(config, TINY, data, tmp_path / name, resume=resume, progress=False)
    trainer.loop(stop or steps)
    return trainer


def test_a_tiny_refiner_undoes_a_constant_offset(tmp_path) -> None:
    data = _toy(shift=0.3, shrink=0.8)
    trainer = _train(tmp_path, data, 150)
    before, after = trainer.held_out_coarse, trainer.held_out_chamfer()
    # measured: the held-out Chamfer falls from 0.150 to 0.0053 (96% removed); fail below 80% removed
    assert after < 0.2 * before, (before, after)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("held_out" in line for line in lines) and any("loss" in line for line in lines)
    loaded = load_refiner(tmp_path / "run")
    coarse = torch.cat([data.partial[-8:], data.coarse[0, -8:]], 1)
    done = refine_completion(loaded.refiner, data.partial[-8:], coarse)
    assert chamfer(done, data.truth[-8:]).mean() < 0.5 * chamfer(coarse, data.truth[-8:]).mean()


def test_resume_gives_the_uninterrupted_weights(tmp_path) -> None:
    data = _toy()
    whole = _train(tmp_path, data, 30, "whole")
    _train(tmp_path, data, 30, "split", stop=12)
    resumed = _train(tmp_path, data, 30, "split", resume=True)
    assert resumed.step == 30
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name   # same batches, same ops, same Adam state: bit for bit on one CPU


def test_bad_inputs_are_one_line_errors(tmp_path) -> None:
    data = _toy()
    refiner = _refiner()
    partial, coarse = data.partial[:3], torch.cat([data.partial[:3], data.coarse[0, :3]], 1)
    with pytest.raises(ValueError, match="partial clouds of 32 points, got partial with 31"):
        refine_completion(refiner, partial[:, :31], coarse)
    with pytest.raises(ValueError, match="completions of 32 \\+ 32 points, got coarse with 60"):
        refine_completion(refiner, partial, coarse[:, :60])
    with pytest.raises(ValueError, match="start with the partial"):
        refine_completion(refiner, partial, coarse.flip(1))
    with pytest.raises(ValueError, match="same number"):
        refine_completion(refiner, partial[:2], coarse)
    with pytest.raises(ValueError, match="shape \\(B, M, 3\\)"):
        refine_completion(refiner, partial[0], coarse)
    with pytest.raises(ValueError, match="must be a Refiner"):
        refine_completion(refiner.network, partial, coarse)
    with pytest.raises(ValueError, match="RefinerConfig.draws must be an integer >= 1"):
        RefinerConfig(draws=0)
    with pytest.raises(ValueError, match="point-voxel network"):
        refiner_network_config(object())
    with pytest.raises(ValueError, match="leaves no training shape"):
        RefinerTrainer(RefinerConfig(held_out=48), TINY, data, tmp_path / "r", progress=False)
    _train(tmp_path, data, 2, "used")
    with pytest.raises(ValueError, match="config differs"):
        RefinerTrainer(RefinerConfig(coarse_run="toy", draws=2, held_out=8, steps=5), TINY, data, tmp_path / "used",
                       resume=True, progress=False)


def test_random_rotations_are_rotations() -> None:
    from ddpmkit.training.refiner import random_rotations
    turn = random_rotations(500, torch.Generator().manual_seed(0)).double()
    eye = torch.eye(3, dtype=torch.float64).expand(500, 3, 3)
    torch.testing.assert_close(turn.transpose(1, 2) @ turn, eye, rtol=0, atol=1e-5)   # float32 QR: ~1e-6 measured
    torch.testing.assert_close(torch.linalg.det(turn), torch.ones(500, dtype=torch.float64), rtol=0, atol=1e-5)
    # uniform on SO(3): E[R] = 0 (a fixed sign convention would bias it); 500 draws, entry std 1/sqrt(3)
    assert turn.mean(0).abs().max() < 4 / (3 * 500) ** 0.5


def test_command_line_settings() -> None:
    from ddpmkit.cli.refine import _settings
    got = _settings(["mirror=false", "steps=10", "lr=1e-3", "sampler=ddim"])
    assert got == {"mirror": False, "steps": 10, "lr": 1e-3, "sampler": "ddim"}
    assert RefinerConfig.from_dict(got).steps == 10
    with pytest.raises(ValueError, match="key=value"):
        _settings(["steps"])
    with pytest.raises(ValueError, match="RefinerConfig field .*got 'stepz=3'"):   # a typo is named, not passed on
        _settings(["stepz=3"])


def test_mirror_conditions_on_the_point_reflection() -> None:
    data = _toy()
    net = _refiner(zero=False).network
    partial, missing = data.partial[:4], data.coarse[0, :4]
    t = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        want = missing + net(missing, t, partial=torch.cat([partial, -partial], 1))
        got = refine_completion(Refiner(net, 32, 32, True), partial, torch.cat([partial, missing], 1))[:, 32:]
        plain = refine_completion(Refiner(net, 32, 32, False), partial, torch.cat([partial, missing], 1))[:, 32:]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)   # the same calls; batching may reorder float sums
    assert (got - plain).abs().max() > 1e-3                     # the reflection changes what the network sees
