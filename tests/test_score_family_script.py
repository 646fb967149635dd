"""benchmarks/score_family.py end to end in --smoke mode (tiny U-Net, 10 training steps, 24 samples):
the network calls counted for every row fit the budget the row's steps were chosen for, the
paired claims are the rows' differences, a --render-only pass rebuilds the report from the cache
alone, and the REPRODUCTION.md section is replaced, not appended twice. No timing asserts."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
_spec = importlib.util.spec_from_file_location("score_family_bench", ROOT / "benchmarks" / "score_family.py")
sf = importlib.util.module_from_spec(_spec)
sys.modules["score_family_bench"] = sf
_spec.loader.exec_module(sf)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("row", list(sf.ROWS))
@pytest.mark.parametrize("budget", [5, 10, 20, 50, 1000])
def test_steps_fit_the_budget(row, budget):
    n = sf.steps_for(row, budget)
    calls = 2 * n + 1 if row == "ald" else 2 * n - 1 if row in sf.TWO_CALLS else n
    assert budget - 1 <= calls <= budget


def test_write_doc_replaces_its_section(tmp_path):
    doc = tmp_path / "REPRODUCTION.md"
    doc.write_text("# Earlier tables\n\nkept\n")
    sf.write_doc(doc, sf.SECTION + "\n\nfirst\n")
    sf.write_doc(doc, sf.SECTION + "\n\nsecond\n")
    text = doc.read_text()
    assert text.startswith("# Earlier tables\n\nkept\n\n")
    assert text.count(sf.SECTION) == 1 and "second" in text and "first" not in text


def test_smoke_run_counts_calls_and_renders_from_cache(tmp_path):
    doc = tmp_path / "REPRODUCTION.md"
    doc.write_text("# Earlier tables\n")
    argv = ["--smoke", "--quiet", "--workers", "1", "--families", "vp,ve,edm", "--train-steps", "10",
            "--speed-steps", "5,10", "--budgets", "5,9", "--num-samples", "24", "--extra-seeds", "",
            "--ode-examples", "2", "--runs", str(tmp_path / "runs"), "--json", str(tmp_path / "r.json"),
            "--md", str(tmp_path / "r.md"), "--doc", str(doc)]
    report = sf.main(argv)
    rows = [r for f in report["families"].values() for r in f["rows"]]
    budgets = {row: {sf.steps_for(row, b): b for b in (5, 9)} for row in sf.ROWS}
    for r in rows:   # CountingModel's count against the budget the steps were chosen for
        if r["sampler"] == "heun" and r["steps"] == (sf.EDM_CALLS + 1) // 2:
            assert r["nfe"] == sf.EDM_CALLS
        else:
            b = budgets[r["sampler"]][r["steps"]]
            assert b - 1 <= r["nfe"] <= b, r
    assert {r["sampler"] for r in report["families"]["ve"]["rows"]} == {"pc", "ald", "heun"}
    assert [p["step"] for p in report["families"]["vp"]["speed"]] == [5, 10]
    assert all(p["train_seconds"] is not None and p["train_seconds"] > 0 for p in report["families"]["edm"]["speed"])

    by_claim = {c["claim"]: c for c in report["claims"]}
    pc_ald = by_claim["VE: PC beats ALD at 9 calls"]
    pc = sf.row_of(report, "ve", "pc", sf.steps_for("pc", 9))
    ald = sf.row_of(report, "ve", "ald", sf.steps_for("ald", 9))
    assert pc_ald["difference"] == pytest.approx(pc["fd"] - ald["fd"])
    assert pc_ald["verdict"] == sf.verdict(pc_ald["difference"], pc_ald["error"])

    again = sf.main([*argv, "--render-only"])   # nothing recomputed: the same numbers from the cache
    assert [r["fd"] for f in again["families"].values() for r in f["rows"]] == [r["fd"] for r in rows]
    text = doc.read_text()
    assert text.startswith("# Earlier tables") and text.count(sf.SECTION) == 1
    assert "| ve | pc |" in text and "PC beats ALD" in text
