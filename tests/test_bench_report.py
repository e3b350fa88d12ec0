"""bench/report.py's target and explanation tables (hand-edited; ``make bench`` checks figures against them)."""

import ast
from pathlib import Path

from bench.report import EXPLANATIONS, TARGETS, verdict


def test_each_table_is_defined_once_and_well_formed():
    tree = ast.parse(Path(__file__).parents[1].joinpath("bench", "report.py").read_text())
    names = [
        t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)
    ]
    assert sorted(n for n in names if n.isupper()) == sorted(set(n for n in names if n.isupper()))
    assert all(op in ("<=", ">=") and isinstance(t, (int, float)) for op, t in TARGETS.values())
    assert set(EXPLANATIONS) <= set(TARGETS)
    assert all(isinstance(text, str) and text for text in EXPLANATIONS.values())


def test_verdicts_follow_the_direction_of_each_target():
    assert verdict("round_s_plain", 4.0).endswith("met") and "missed" in verdict("round_s_plain", 7.0)
    assert verdict("batching_gain_c64", 3.2).endswith("met") and "missed" in verdict("batching_gain_c64", 0.8)
