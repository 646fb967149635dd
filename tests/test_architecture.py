"""The package's rooms (issue 21, item 6), measured by tools/architecture.py: no import cycle
between modules or between folders, function-local imports included, and no file over 400 lines.
The counting functions are checked on small graphs first, so a broken counter cannot pass."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LONG_FILE_EXCEPTIONS = {"ddpmkit/training/train.py"}   # the trainer's split is the lead's (issue 21)


@pytest.fixture(scope="module")
def architecture():
    spec = importlib.util.spec_from_file_location("architecture", ROOT / "tools" / "architecture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def graph(architecture):
    return architecture.import_graph()


def test_the_cycle_counter_finds_cycles_and_only_cycles(architecture):
    assert architecture.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert architecture.cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
    folders = architecture.folder_graph({"p.x.m": {"p.y.n"}, "p.y.n": {"p.x.k"}, "p.x.k": set()})
    assert architecture.cycles(folders) == [["p.x", "p.y"]]


def test_the_graph_sees_top_level_and_function_local_imports(architecture, graph):
    code = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import hidden\n"
            "def f():\n    from .local import name\n    import other\n")
    found = [node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
             for node in architecture._imports(ast.parse(code))]
    assert sorted(found) == ["local", "other", "typing"]                  # never run: TYPE_CHECKING only
    assert "ddpmkit.cli.common" in graph["ddpmkit.cli.main"]              # a top-level relative import
    assert "ddpmkit.training.restore" in graph["ddpmkit.runs"]
    assert "ddpmkit.io.checkpoint" in graph["ddpmkit.training.restore"]
    assert "ddpmkit.viz" in graph["ddpmkit.training.monitor"]            # a package's name: its __init__


def test_no_import_cycle_between_modules(architecture, graph):
    assert architecture.cycles(graph) == []


def test_no_import_cycle_between_folders(architecture, graph):
    assert architecture.cycles(architecture.folder_graph(graph)) == []


def test_the_layers_point_one_way(graph, architecture):
    """The checkpoint format and the data sit below training; runs and the published formats above it."""
    folders = architecture.folder_graph(graph)
    assert "ddpmkit.training" not in folders["ddpmkit.io"] and "ddpmkit.io" in folders["ddpmkit.training"]
    assert "ddpmkit.training" in folders["ddpmkit.runs"] and "ddpmkit.runs" not in folders["ddpmkit.training"]
    assert "ddpmkit.training" in folders["ddpmkit.published"] and "ddpmkit.published" not in folders["ddpmkit.training"]
    assert not folders["ddpmkit.viz"] - {"ddpmkit.data"}                   # pictures know only the data's scaling


def test_no_file_over_the_line_limit(architecture):
    assert architecture.MAX_LINES == 400
    long = {name: n for name, n in architecture.long_files() if name not in LONG_FILE_EXCEPTIONS}
    assert long == {}
