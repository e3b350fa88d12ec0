"""Export profiles are objects, one per model family: each task's family is found by its name once, and the stages
ask the object (no name tests across the stages)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedge.core.tasks import get_task
from fedge.export.profiles import PROFILES, ExportProfile, TransformerProfile, profile_of

ROOT = Path(__file__).resolve().parents[2]


def test_each_task_has_its_family() -> None:
    assert type(profile_of(get_task("digits"))) is ExportProfile
    assert type(profile_of(get_task("intent"))) is ExportProfile
    assert isinstance(profile_of("transformer"), TransformerProfile)
    with pytest.raises(ValueError, match="no export profile 'rnn'"):
        profile_of("rnn")


def test_the_families_differ_where_the_export_does() -> None:
    cnn, enc = PROFILES["cnn"], PROFILES["transformer"]
    assert cnn.gated == ("int8_cpu",) and enc.gated == ("int8_cpu", "int8_trt")
    said: list[str] = []
    assert cnn.reference_rows(128, said.append) == 128 and enc.reference_rows(128, said.append) == 0
    assert len(said) == 1 and "not evaluated for a transformer" in said[0]
    fp32 = Path("/w/model.fp32.onnx")
    assert cnn.serving_fp32(fp32) == fp32 and enc.serving_fp32(fp32) == Path("/w/model.fp32.fused.onnx")
    assert (cnn.skip_symbolic_shape, enc.skip_symbolic_shape) == (False, True)
    assert (cnn.mask_in_model, enc.mask_in_model) == (False, True)


def test_no_stage_tests_a_profile_by_name() -> None:
    named = [
        f"{p.relative_to(ROOT)}:{i}"
        for folder in ("fedge", "server", "client", "bench")
        for p in (ROOT / folder).rglob("*.py")
        if p.name != "profiles.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"""(profile\s*[!=]=|[!=]=\s*["']transformer["'])""", line)
    ]
    assert named == []
