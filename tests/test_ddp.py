"""DistributedDataParallel: two CPU processes (gloo, launched by torchrun) with a global batch of
16 must train the same weights as one process with that batch, within float tolerance."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ddpmkit.io.checkpoint import read_checkpoint
from ddpmkit.training.train import train
from test_train import ROOT, tiny_config

WORKER = """
import sys
from ddpmkit.training.config import load_config
from ddpmkit.training.train import train
train(load_config(sys.argv[1]), progress=False)
"""


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_gloo_processes_equal_one_process(tmp_path):
    # micro-batches (no_sync), importance-sampled t (all_gather of the vlb terms), flips and
    # label dropout: every path where the ranks must agree.
    extra = ["optim.steps=8", "optim.micro_batch=3", "data.flip=true", "network.num_classes=10",
             "class_dropout=0.25", "diffusion.T=8", "diffusion.timestep_sampler=importance",
             "diffusion.objective=hybrid", "diffusion.variance=learned_range", "checkpoint_every=0"]
    cfg = tiny_config(tmp_path / "ddp", *extra)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(cfg.save(tmp_path / "cfg.json"))],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    single = train(cfg.replace(out=str(tmp_path / "one")), progress=False)

    two, two_meta, _ = read_checkpoint(tmp_path / "ddp")
    one, one_meta, _ = read_checkpoint(single.checkpoint)
    assert two_meta["state"]["world_size"] == 2 and one_meta["state"]["world_size"] == 1
    assert two.keys() == one.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    # both drew the same random numbers and fed the sampler the same timesteps
    assert two_meta["state"]["rng"]["data"] == one_meta["state"]["rng"]["data"]
    assert two_meta["state"]["timestep_sampler"]["counts"] == one_meta["state"]["timestep_sampler"]["counts"]
    assert len(two_meta["state"]["rng"]["global"]) == 2
