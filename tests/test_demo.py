"""The main job end to end on a tiny network: every file of the report is written and the
report's numbers are the metrics' (the full-size run is `make demo`, not a test)."""
from __future__ import annotations

import json

import ddpmkit.cli.demo as demo

TINY = ["num_threads=1", "network.channels=8", "network.channel_mult=[1]", "network.num_res_blocks=1",
        "network.attention_resolutions=[]", "network.mid_attention=false", "network.norm_groups=4",
        "diffusion.T=20", "optim.batch_size=16", "optim.steps=4", "optim.warmup=1", "log_every=1",
        "checkpoint_every=0", "sample_every=0"]


def test_demo_writes_grids_loss_metrics_and_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "BPD_EXAMPLES", 6)
    monkeypatch.setattr(demo, "ODE_EXAMPLES", 2)
    run = tmp_path / "digits"
    assert demo.main([*TINY, f"out={run}"]) == 0
    assert "bits/dim: bound" in capsys.readouterr().out
    for name in ("samples_ddim.png", "samples_dpmpp2m.png", "loss.png", "metrics.json", "report.md"):
        assert (run / name).stat().st_size > 0, name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["bpd_bound"]["n"] == 6 and metrics["bpd_ode"]["n"] == 2
    rows = metrics["quality"]["rows"]
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddim", 20), ("dpmpp2m", 20)]
    # a 4-step model draws blobs, not digits: no sample is nearer to a training digit than 99% of the test
    # digits are (a count, so exactly 0), and the samples' typical distance is larger than the test split's
    assert all(r["copy_fraction"] == 0.0 and r["median_nn_distance"] > r["median_nn_distance_held_out"]
               for r in rows), rows
    report = (run / "report.md").read_text()
    assert f"{metrics['bpd_bound']['mean']:.3f}" in report and "| copies |" in report
    # a second run resumes the finished run instead of training again
    assert demo.main([*TINY, f"out={run}"]) == 0
    assert json.loads((run / "metrics.json").read_text())["steps"] == 4
