"""Config: presets, JSON round trips, typed key=value overrides, one-line errors, LR schedule."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpmkit.training.config import OptimConfig, TrainConfig, apply_overrides, list_presets, load_config
from ddpmkit.nets import UNet, UNetConfig


PRESETS = ["toy2d", "digits", "digits-cond", "mnist", "cifar10-ddpm", "cifar10-iddpm"]


def test_the_presets_are_shipped():
    assert set(PRESETS) <= set(list_presets())


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_round_trips_through_json(tmp_path, name):
    cfg = load_config(name)
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert load_config(cfg.save(tmp_path / "config.json")) == cfg
    assert load_config(tmp_path) == cfg           # a run directory holding config.json


def test_default_preset_is_digits():
    assert load_config().name == "digits" and load_config().data.name == "digits"


def test_cifar10_ddpm_preset_is_the_papers_setup():
    """Ho et al. 2020, sec. 4 / appendix B."""
    cfg = load_config("cifar10-ddpm")
    assert cfg.network == UNetConfig.ddpm_cifar10()
    params = sum(p.numel() for p in UNet(cfg.network).parameters())
    assert round(params / 1e6, 1) == 35.7
    d, o = cfg.diffusion, cfg.optim
    assert (d.schedule, d.T, d.prediction, d.objective) == ("linear", 1000, "eps", "simple")
    assert (o.lr, o.batch_size, o.warmup, o.grad_clip, o.steps) == (2e-4, 128, 5000, 1.0, 800_000)
    assert cfg.ema_rates == (0.9999,) and cfg.network.dropout == 0.1 and cfg.data.flip


def test_cifar10_iddpm_preset_is_the_papers_setup():
    """Nichol & Dhariwal 2021, sec. 3-4 and appendix A (CIFAR-10)."""
    cfg = load_config("cifar10-iddpm")
    d, o, n = cfg.diffusion, cfg.optim, cfg.network
    assert (d.schedule, d.T, d.variance, d.objective, d.hybrid_lambda) == (
        "cosine", 4000, "learned_range", "hybrid", 0.001)
    assert (o.lr, o.batch_size) == (1e-4, 128) and cfg.ema_rates == (0.9999,)
    assert (n.out_channels, n.num_res_blocks, n.dropout, n.scale_shift) == (6, 3, 0.3, True)


def test_overrides_are_parsed_by_the_fields_type():
    cfg = load_config("digits", [
        "optim.lr=1e-3", "optim.steps=7", "ema_rates=0.99,0.999", "network.channel_mult=[1, 2]",
        "network.num_classes=10", "network.head_channels=none", "ema_warmup=False", "out=runs/123",
        "precision=bf16", "optim.betas=(0.9, 0.99)", "network.dropout=0", "diffusion.T=50",
    ])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float) and cfg.optim.steps == 7
    assert cfg.ema_rates == (0.99, 0.999) and cfg.network.channel_mult == (1, 2)
    assert cfg.network.num_classes == 10 and cfg.network.head_channels is None
    assert cfg.ema_warmup is False and cfg.out == "runs/123" and cfg.precision == "bf16"
    assert cfg.optim.betas == (0.9, 0.99) and cfg.network.dropout == 0.0 and cfg.diffusion.T == 50
    learned = load_config("digits", ["diffusion.variance=learned_range", "diffusion.objective=hybrid"])
    assert (learned.diffusion.variance, learned.diffusion.objective) == ("learned_range", "hybrid")
    single = load_config("digits", ["ema_rates=0.5"])
    assert single.ema_rates == (0.5,)


@pytest.mark.parametrize("override, words", [
    ("optim.lrr=1e-3", ["optim.lrr"]),                      # unknown key
    ("learning_rate=1", ["learning_rate"]),
    ("optim.lr=fast", ["lr", "fast"]),                      # wrong type
    ("optim.steps=1.5", ["steps", "1.5"]),
    ("ema_warmup=maybe", ["ema_warmup", "maybe"]),
    ("optim.lr=-1", ["lr", "-1"]),                          # bad value
    ("diffusion.schedule=quadratic", ["schedule", "quadratic"]),
    ("precision=fp8", ["precision", "fp8"]),
    ("ema_rates=1.5", ["ema_rates", "1.5"]),
    ("network.kind=transformer", ["kind", "transformer"]),
    ("class_dropout=0.1", ["class_dropout", "0.1"]),        # needs a class-conditional network
    ("no_equals_sign", ["no_equals_sign"]),
    ("diffusion.variance=learned_range", ["objective", "simple", "learned_range"]),   # nothing trains the variance
    ("sample_sampler=dddim", ["sample_sampler", "dddim"]),    # would fail only at the first preview
])
def test_bad_overrides_raise_one_line_naming_key_and_value(override, words):
    with pytest.raises(ValueError) as info:
        load_config("digits", [override])
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_unknown_source_and_bad_files_are_clear(tmp_path):
    with pytest.raises(ValueError, match="neither a preset"):
        load_config("no-such-preset")
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim]\nlr = \n")
    with pytest.raises(ValueError, match="bad.toml"):
        load_config(bad)
    partial = tmp_path / "p.toml"
    partial.write_text('name = "p"\n[optim]\nlr = 0.01\n[data]\nname = "digits"\n'
                       '[network]\nkind = "unet"\nimage_size = 8\nin_channels = 1\nout_channels = 1\n'
                       'attention_resolutions = []\nchannel_mult = [1, 2]\n')
    cfg = load_config(partial)
    assert cfg.optim.lr == 0.01 and cfg.optim.batch_size == OptimConfig().batch_size
    needs_path = tmp_path / "c.toml"        # complete only with its override
    needs_path.write_text('[data]\nname = "cifar10"\n')
    with pytest.raises(ValueError, match="c.toml: .*path"):
        load_config(needs_path)
    assert load_config(needs_path, ["data.path=/data/cifar"]).data.path == "/data/cifar"


def test_changing_the_network_kind_starts_from_that_kinds_defaults():
    tree = apply_overrides(load_config("digits").to_dict(), ["network.kind=unet"])
    assert tree["network"]["channels"] == 32            # same kind: the preset's values stay


def test_warmup_then_cosine_decay():
    opt = OptimConfig(lr=1.0, warmup=4, decay="cosine", steps=14)
    rates = [opt.lr_at(s) for s in range(14)]
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0]
    assert rates[4] == 1.0 and rates[9] == pytest.approx(0.5) and opt.lr_at(14) == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(rates[3:], rates[4:]))
    assert OptimConfig(lr=0.1, decay="linear", steps=10).lr_at(5) == pytest.approx(0.05)
    assert OptimConfig(lr=0.1).lr_at(10 ** 6) == 0.1


@settings(max_examples=40, deadline=None)
@given(lr=st.floats(1e-8, 10.0, allow_nan=False), steps=st.integers(1, 10 ** 7),
       rates=st.lists(st.floats(0.0, 0.99999), min_size=1, max_size=3, unique=True))
def test_override_text_round_trips_any_value(lr, steps, rates):
    text = ",".join(repr(r) for r in rates)
    cfg = load_config("digits", [f"optim.lr={lr!r}", f"optim.steps={steps}", f"ema_rates={text}"])
    assert cfg.optim.lr == lr and cfg.optim.steps == steps and cfg.ema_rates == tuple(rates)
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg


# ---------------------------------------------------------------------------- the split and its imports
def _import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` over ddpmkit, counting imports inside functions too."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "ddpmkit"
    names = {".".join(("ddpmkit",) + p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in names)
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    edges.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in names else target)
    return graph


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return False


CONFIG_MODULES = ["config", "run_config", "diffusion_config", "overrides", "presets", "build"]


@pytest.mark.parametrize("module", CONFIG_MODULES)
def test_no_import_cycle_between_checkpoint_and_the_config_modules(module):
    graph = _import_graph()
    # the graph sees real edges: a run is rebuilt from the checkpoint format and the config (training/restore.py)
    assert {"ddpmkit.training.config", "ddpmkit.io.checkpoint"} <= graph["ddpmkit.training.restore"]
    assert not _reaches(graph, f"ddpmkit.training.{module}", "ddpmkit.io.checkpoint")
    assert not _reaches(graph, "ddpmkit.io.checkpoint", f"ddpmkit.training.{module}")   # the format knows no config


def test_one_config_serialiser_on_neutral_ground():
    """config_base (DictConfig + coerce) imports nothing from ddpmkit; the data config uses it
    without reaching the networks, and the networks without reaching the data or training."""
    graph = _import_graph()
    assert not {m for m in graph["ddpmkit.config_base"] if m.startswith("ddpmkit")}
    for module in ("ddpmkit.data.config", "ddpmkit.nets.layers", "ddpmkit.training.run_config"):
        assert "ddpmkit.config_base" in graph[module], module
    assert not _reaches(graph, "ddpmkit.data.config", "ddpmkit.nets")
    assert not _reaches(graph, "ddpmkit.nets.layers", "ddpmkit.data.config")


def test_the_config_modules_are_small_and_every_old_name_still_imports():
    from pathlib import Path

    import ddpmkit.training.config as config

    folder = Path(config.__file__).parent
    for module in CONFIG_MODULES:
        assert len((folder / f"{module}.py").read_text().splitlines()) < 300, module
    for name in ("DiffusionConfig", "OptimConfig", "TrainConfig", "load_config", "apply_overrides",
                 "check_resumable", "list_presets", "network_kinds", "PRECISIONS"):
        assert hasattr(config, name), name


def test_one_network_kind_registry():
    from ddpmkit.nets import NETWORK_KINDS, MLPConfig, PointNetConfig, PVCNNConfig, UNet1DConfig, network_config_from_dict
    from ddpmkit.training.config import network_kinds

    assert network_kinds() == {"unet": UNetConfig, "mlp": MLPConfig, "pointnet": PointNetConfig,
                               "unet1d": UNet1DConfig, "pvcnn": PVCNNConfig}
    assert network_kinds() is NETWORK_KINDS                # published once, by the nets, and read-only
    with pytest.raises(TypeError):
        NETWORK_KINDS["other"] = MLPConfig  # type: ignore[index]
    for kind, cls in network_kinds().items():          # the same names as the nets' own registry
        assert type(network_config_from_dict({"kind": kind})) is cls


# ---------------------------------------------------------------------------- derived fields
def test_the_networks_size_follows_the_data_and_attention_keeps_its_levels():
    assert (load_config("digits").network.image_size, load_config("digits").network.attention_resolutions) == (8, (4,))
    net = load_config("digits", ["data.image_size=28"]).network
    assert (net.image_size, net.attention_resolutions) == (28, (14,))          # level 2 of 2 either way
    net = load_config("cifar10-iddpm", ["data.path=/d", "data.image_size=64"]).network
    assert (net.image_size, net.attention_resolutions) == (64, (32, 16))       # 16, 8 of 32 -> 32, 16 of 64
    # overrides apply before any check, in any order; an explicit choice that fits is kept
    for order in (["network.attention_resolutions=[28]", "data.image_size=28"],
                  ["data.image_size=28", "network.image_size=28", "network.attention_resolutions=[28]"]):
        assert load_config("digits", order).network.attention_resolutions == (28,)


@pytest.mark.parametrize("overrides, words", [
    (["data.image_size=28", "network.image_size=32"], ["network.image_size=32", "data.image_size=28"]),
    (["data.image_size=28", "network.attention_resolutions=[4]"],
     ["data.image_size=28", "network.image_size=28", "network.attention_resolutions=[4]", "[28, 14]"]),
    (["data.image_size=27"], ["data.image_size=27", "network.image_size", "divisible"]),
])
def test_derived_field_conflicts_are_one_line_naming_every_key(overrides, words):
    with pytest.raises(ValueError) as info:
        load_config("digits", overrides)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message
