"""The ``diffusion`` section: the process's own constructor judges its keys; old run configs load unchanged."""
from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

from ddpmkit.training.build import PROCESS_CLASSES, process_keywords
from ddpmkit.training.config import DiffusionConfig, TrainConfig, list_presets, load_config

OLD_DIFFUSION_KEYS = ("schedule", "T", "prediction", "variance", "objective", "timestep_sampler", "hybrid_lambda",
                      "process", "weighting", "snr_gamma", "sigma_min", "sigma_max", "score_scaling", "time_scale",
                      "beta_min", "beta_max", "t_min", "t_max", "time_sampling", "sigma_data", "p_mean", "p_std",
                      "beta_range")
"""Every key of the ``diffusion`` section as the configs before issue 21 wrote it (each one, None where unset)."""


def old_json(config: TrainConfig) -> dict:
    """``config`` as a run of the old format saved it: every diffusion key written, None where unset."""
    tree = json.loads(config.to_json())
    tree["diffusion"] = {key: tree["diffusion"].get(key) for key in OLD_DIFFUSION_KEYS}
    return tree


@pytest.mark.parametrize("preset", list_presets())
def test_every_presets_old_json_loads_unchanged_and_builds_its_process(tmp_path, preset):
    config = load_config(preset)
    old = old_json(config)
    assert sum(value is None for value in old["diffusion"].values()) >= 8   # old keys explicitly None
    (tmp_path / "config.json").write_text(json.dumps(old))
    for loaded in (TrainConfig.from_dict(old), load_config(tmp_path)):
        assert loaded == config and loaded.diffusion.to_dict() == config.diffusion.to_dict()
        process = loaded.diffusion.build()
        assert type(process) is PROCESS_CLASSES[config.diffusion.process]
        assert repr(process) == repr(config.diffusion.build())
        for key, value in old["diffusion"].items():   # every old key still reads as before
            assert getattr(loaded.diffusion, key) == (tuple(value) if isinstance(value, list) else value), key


@pytest.mark.parametrize("process", sorted(PROCESS_CLASSES))
def test_the_keys_a_process_takes_are_its_constructors(process):
    params = inspect.signature(PROCESS_CLASSES[process]).parameters
    assert set(process_keywords(process)) == set(params) - {"prediction", "variance", "schedule"}


def test_a_process_keyword_is_passed_to_the_constructor_and_reads_like_a_field():
    d = DiffusionConfig(process="edm", prediction="edm", sigma_data=0.25, sigma_max=None)   # None: the default
    assert (d.sigma_data, d.sigma_max, d.beta_min) == (0.25, None, None)
    assert d.build().sigma_data == 0.25 and d.build().sigma_max == 80.0   # EDM's own default
    assert DiffusionConfig.from_dict(json.loads(json.dumps(d.to_dict()))) == d
    assert dataclasses.replace(d, sigma_min=0.01).build().sigma_min == 0.01
    assert d.to_dict()["sigma_data"] == 0.25 and "sigma_max" not in d.to_dict()
    with pytest.raises(AttributeError):
        d.no_such_key


@pytest.mark.parametrize("preset, overrides, key", [
    ("digits-edm", ["diffusion.beta_min=0.1"], "beta_min"),          # another process's key
    ("digits-edm", ["diffusion.score_scaling=true"], "score_scaling"),
    ("digits", ["diffusion.sigma_data=0.5"], "sigma_data"),          # the discrete chain takes none
    ("digits-flow", ["diffusion.sigma_max=5"], "sigma_max"),
    ("digits-edm", ["diffusion.no_such_key=1"], "no_such_key"),      # a key no process takes
])
def test_a_key_the_process_does_not_take_is_one_line_naming_key_process_and_known_keys(preset, overrides, key):
    process = load_config(preset).diffusion.process
    with pytest.raises(ValueError) as info:
        load_config(preset, overrides)
    message = str(info.value)
    assert "\n" not in message and f"diffusion.{key} is not used by process={process!r}" in message
    assert f"(it takes {list(process_keywords(process))})" in message


@pytest.mark.parametrize("diffusion, key", [
    ({"process": "edm", "prediction": "edm", "beta_max": 20.0}, "beta_max"),
    ({"process": "ve", "prediction": "score", "whatever": 1}, "whatever"),
])
def test_a_config_file_with_a_key_the_process_does_not_take_is_one_line(diffusion, key):
    with pytest.raises(ValueError) as info:
        TrainConfig.from_dict({"diffusion": diffusion})
    message = str(info.value)
    assert "\n" not in message and f"diffusion.{key} is not used by process={diffusion['process']!r}" in message


@pytest.mark.parametrize("preset, overrides, start", [
    ("digits-edm", ["diffusion.sigma_data=-1"], "diffusion.sigma_data must be a finite number > 0"),
    ("toy2d-ve", ["diffusion.sigma_max=0.001"], "diffusion.sigma_min must be < sigma_max"),
    ("digits-subvp", ["diffusion.beta_min=30"], "diffusion.beta_min must be >= 0 and < beta_max"),
    ("digits-flow", ["diffusion.time_sampling=gamma"], "diffusion.time_sampling must be one of"),
    ("toy2d-ve", ["diffusion.prediction=eps"], "diffusion.score_scaling divides a score output"),
])
def test_a_bad_value_is_the_constructors_own_one_line_error(preset, overrides, start):
    with pytest.raises(ValueError) as info:
        load_config(preset, overrides)
    assert "\n" not in str(info.value) and start in str(info.value)


def test_the_discrete_only_fields_and_discrete_samplers_ask_the_process():
    with pytest.raises(ValueError, match="diffusion.beta_range is for process='discrete' only"):
        load_config("digits-edm", ["diffusion.beta_range=0.0001,0.02"])
    with pytest.raises(ValueError, match="sample_sampler needs process='discrete'"):
        load_config("digits-flow", ["sample_sampler=ddpm"])
    assert load_config("digits", ["sample_sampler=ddpm"]).diffusion.build().training_steps == 1000


def test_a_consistency_model_of_a_v_chain_gets_the_chain_from_the_schedule_keys():
    d = DiffusionConfig(process="consistency", prediction="v", schedule="cosine", T=1000, sigma_min=0.01, sigma_max=80.0)
    process = d.build()
    assert process.chain is not None and (process.sigma_min, process.sigma_max) == (0.01, 80.0)
    with pytest.raises(ValueError, match=r"^diffusion\.sigma_min, sigma_max must lie in the chain's range") as info:
        dataclasses.replace(d, sigma_max=1e6)
    assert "\n" not in str(info.value)
