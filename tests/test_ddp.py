"""DistributedDataParallel: two CPU processes (gloo, launched by torchrun) with a global batch of
16 must train the same weights as one process with that batch, within float tolerance, also when
the two-process run is stopped and resumed (rank 0 decides and broadcasts the checkpoint) and
draws a preview on the way (every rank samples its share, rank 0 gathers)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from ddpmkit.io.checkpoint import read_checkpoint
from ddpmkit.training.train import train
from test_train import ROOT, tiny_config

WORKER = """
import os
import sys
import torch.distributed as dist
import ddpmkit.training.loop as loop
from ddpmkit.training.config import load_config
from ddpmkit.training.train import train

def only_rank_0_looks(*args, **kwargs):
    print(f"rank {dist.get_rank()} looked for a checkpoint; rank 0 alone decides", file=sys.stderr, flush=True)
    os._exit(3)   # not an exception the trainer could catch

real = loop.find_checkpoint
loop.find_checkpoint = lambda *a, **k: (real if dist.get_rank() == 0 else only_rank_0_looks)(*a, **k)
train(load_config(sys.argv[1]), resume=sys.argv[2] == "resume", max_steps=int(sys.argv[3]), progress=False)
"""


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_gloo_processes_equal_one_process(tmp_path):
    # micro-batches (no_sync), importance-sampled t (all_gather of the vlb terms), flips and
    # label dropout: every path where the ranks must agree. The two processes train 4 steps, then
    # resume to 8 (only rank 0 may look for the checkpoint: the other loads the path it
    # broadcasts), with a preview at step 6 whose 5 samples the ranks draw 3 + 2 and rank 0 gathers.
    extra = ["optim.steps=8", "optim.micro_batch=3", "data.flip=true", "network.num_classes=10",
             "class_dropout=0.25", "diffusion.T=8", "diffusion.timestep_sampler=importance",
             "diffusion.objective=hybrid", "diffusion.variance=learned_range", "checkpoint_every=0",
             "sample_every=6", "sample_count=5", "sample_steps=3"]
    cfg = tiny_config(tmp_path / "ddp", *extra)
    script, cfg_path = tmp_path / "worker.py", cfg.save(tmp_path / "cfg.json")
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for mode, steps in (("fresh", "4"), ("resume", "8")):
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             str(script), str(cfg_path), mode, steps], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)   # a hang guard only
        assert done.returncode == 0, done.stderr[-3000:]
    single = train(cfg.replace(out=str(tmp_path / "one")), progress=False)

    two, two_meta, _ = read_checkpoint(tmp_path / "ddp")
    one, one_meta, _ = read_checkpoint(single.checkpoint)
    assert two_meta["state"]["world_size"] == 2 and one_meta["state"]["world_size"] == 1
    assert two_meta["state"]["step"] == one_meta["state"]["step"] == 8
    assert two.keys() == one.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    # both drew the same random numbers and fed the sampler the same timesteps
    assert two_meta["state"]["rng"]["data"] == one_meta["state"]["rng"]["data"]
    assert two_meta["state"]["timestep_sampler"]["counts"] == one_meta["state"]["timestep_sampler"]["counts"]
    assert len(two_meta["state"]["rng"]["global"]) == 2
    # the gathered preview holds all 5 samples (a 3 x 2 grid; rank 0's share alone would be 2 x 2)
    grid = Image.open(tmp_path / "ddp" / "samples" / "step_00000006.png")
    assert grid.size == Image.open(tmp_path / "one" / "samples" / "step_00000006.png").size == (3 * 64 + 4 * 8, 2 * 64 + 3 * 8)
