"""Checkpoint files: atomic replacement, integrity checks, pruning, one-line errors."""
from __future__ import annotations

import json

import pytest
import torch

import ddpmkit.io.checkpoint as ckpt
from ddpmkit.io.checkpoint import (CheckpointError, find_checkpoint, list_checkpoints, read_checkpoint,
                                save_checkpoint)
from ddpmkit.training.train import Trainer, train
from test_train import tiny_config


def tensors(value: float) -> dict[str, torch.Tensor]:
    return {"model.w": torch.full((4, 3), value), "optim.0.step": torch.tensor(value)}


def save(directory, step: int, keep_last: int = 0):
    return save_checkpoint(directory, step, tensors(float(step)), {"state": {"step": step}}, keep_last)


def test_round_trip_and_latest_pointer(tmp_path):
    save(tmp_path, 3)
    path = save(tmp_path, 7)
    loaded, meta, json_path = read_checkpoint(tmp_path)
    assert json_path == path and meta["step"] == 7 and meta["state"] == {"step": 7}
    assert torch.equal(loaded["model.w"], torch.full((4, 3), 7.0))
    assert find_checkpoint(tmp_path / "step_00000003.safetensors").name == "step_00000003.json"
    assert not list(tmp_path.glob("*.tmp"))


def test_a_crash_while_writing_tensors_leaves_the_previous_latest(tmp_path, monkeypatch):
    save(tmp_path, 5)

    def dies_half_way(data, filename, *args, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 100)              # part of a file, then the "crash"
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_file", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 10)
    loaded, meta, _ = read_checkpoint(tmp_path)
    assert meta["step"] == 5 and torch.equal(loaded["model.w"], torch.full((4, 3), 5.0))
    assert not (tmp_path / "step_00000010.safetensors").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_crash_before_the_pointer_switch_leaves_the_previous_latest(tmp_path, monkeypatch):
    save(tmp_path, 5)
    real = ckpt.write_json

    def dies_after_json(path, obj):
        real(path, obj)
        raise SystemExit("killed")              # both files of step 10 exist, latest not switched

    monkeypatch.setattr(ckpt, "write_json", dies_after_json)
    with pytest.raises(SystemExit):
        save(tmp_path, 10)
    assert read_checkpoint(tmp_path)[1]["step"] == 5
    monkeypatch.setattr(ckpt, "write_json", real)
    save(tmp_path, 10)                           # a resumed run rewrites step 10 in place
    assert read_checkpoint(tmp_path)[1]["step"] == 10


def test_keep_last_prunes_older_checkpoints_but_not_later_ones(tmp_path):
    for step in (1, 2, 3, 4):
        save(tmp_path, step, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [
        "step_00000003.safetensors", "step_00000004.safetensors"]
    save(tmp_path, 2, keep_last=1)   # a resumed run at step 2: steps 3, 4 are an abandoned future,
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3, 4]   # replaced when reached
    save(tmp_path, 3, keep_last=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]


@pytest.mark.parametrize("damage", ["truncate_tensors", "flip_byte", "truncate_json", "bad_pointer",
                                    "missing_tensors"])
def test_damaged_files_give_one_line_errors_naming_the_file(tmp_path, damage):
    save(tmp_path, 1)
    tensor_file, json_file = tmp_path / "step_00000001.safetensors", tmp_path / "step_00000001.json"
    if damage == "truncate_tensors":
        tensor_file.write_bytes(tensor_file.read_bytes()[:-9])
        culprit = tensor_file
    elif damage == "flip_byte":
        data = bytearray(tensor_file.read_bytes())
        data[-5] ^= 0x40
        tensor_file.write_bytes(bytes(data))
        culprit = tensor_file
    elif damage == "truncate_json":
        json_file.write_text(json_file.read_text()[:40])
        culprit = json_file
    elif damage == "bad_pointer":
        (tmp_path / "latest").write_bytes(b"\xff\x01garbage")
        culprit = tmp_path / "latest"
    else:
        tensor_file.unlink()
        culprit = tensor_file
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path)
    message = str(info.value)
    assert str(culprit) in message and "\n" not in message


def test_a_corrupted_latest_is_reported_and_never_overwritten(tmp_path):
    cfg = tiny_config(tmp_path / "run", "optim.steps=4", "checkpoint_every=2")
    train(cfg, progress=False)
    tensor_file = tmp_path / "run" / "checkpoints" / "step_00000004.safetensors"
    tensor_file.write_bytes(tensor_file.read_bytes()[:1000])
    before = {p.name: p.read_bytes() for p in (tmp_path / "run" / "checkpoints").iterdir()}
    with pytest.raises(CheckpointError, match="step_00000004.safetensors"):
        train(tiny_config(tmp_path / "run", "optim.steps=8", "checkpoint_every=2"), resume=True,
              progress=False)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        Trainer(cfg, progress=False)
    after = {p.name: p.read_bytes() for p in (tmp_path / "run" / "checkpoints").iterdir()}
    assert after == before


def test_json_state_never_holds_pickles_or_nans(tmp_path):
    result = train(tiny_config(tmp_path / "run", "optim.steps=2"), progress=False)
    meta = json.loads(result.checkpoint.read_text())
    assert set(meta) == {"format", "step", "tensors", "sha256", "config", "state"}
    assert set(meta["state"]["rng"]) == {"data", "noise", "global", "cuda"}
    _, loaded_meta, _ = read_checkpoint(result.checkpoint)
    assert loaded_meta == meta
