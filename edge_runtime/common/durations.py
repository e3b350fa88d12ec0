"""Durations as people write them on a command line: ``90`` or ``90s``, ``30m``, ``12h``, ``7d``, ``1.5h``.

>>> parse_duration("7d")
604800.0
"""

from __future__ import annotations

import re

from fedge.edge_runtime.common.errors import ConfigError

UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str) -> float:
    """``text`` -> seconds (> 0); ConfigError naming the forms it takes."""
    match = _DURATION.match(str(text).lower())
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(f"duration {text!r}: expected a positive number with s, m, h, d or w (30m, 7d, 90s)")
    return float(match.group(1)) * UNITS[match.group(2)]
