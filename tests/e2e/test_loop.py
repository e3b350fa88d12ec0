"""The loop end to end with real coordinator, client daemons and edge processes (fedge.cli.demo_loop): release 1
serves; traffic shifts to new slang and the devices' health shows it; two companies' agents correct answers; a run
from release 1 trained with the corrections passes the gate's forgetting guard as release 2; the devices pull it
and health recovers."""

from __future__ import annotations

import pytest
from rich.console import Console

from fedge.cli.demo_loop import LoopConfig, run_loop

pytestmark = pytest.mark.e2e


def test_the_loop_from_release_1_to_release_2(tmp_path) -> None:
    result = run_loop(LoopConfig(out=tmp_path, rounds=6), Console(width=120, record=True))
    usual1, slang1, slang2, usual2 = result.phases
    assert result.releases == [1, 2] and [p.release for p in result.phases] == [1, 1, 2, 2]
    # the shift shows on the devices without a label: more drift, a lower estimate, as measured accuracy falls
    assert slang1.measured < usual1.measured - 0.2
    assert slang1.drift is not None and usual1.drift is not None and slang1.drift > usual1.drift + 0.1
    assert slang1.estimated < usual1.estimated - 0.1
    assert slang1.production is not None and abs(slang1.production - slang1.measured) < 0.1  # agents' view
    # release 2 learned the slang from the corrections and forgot nothing its gate could see
    forgetting = result.gate["forgetting"]
    assert forgetting["passed"] and forgetting["forgetting"] <= 0.01 and forgetting["from_release"] == 1
    assert forgetting["added"]["candidate"] > forgetting["added"]["previous"]
    assert slang2.measured > slang1.measured + 0.1 and usual2.measured >= usual1.measured - 0.03
    assert slang2.drift is not None and slang2.drift < slang1.drift
    assert result.gate["monitoring"]["temperature"] > 0
    # the coordinator heard from every device, per release, in counts only
    by_release = {r["release"]: r for r in result.fleet}
    assert by_release[2]["device_count"] == 3 and by_release[1]["corrections"] >= 2 * 100
