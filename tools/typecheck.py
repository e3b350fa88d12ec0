"""Type-check the product as it installs: mypy over the ``fedge`` namespace.

The product's folders install under one namespace (pyproject.toml's setuptools ``package-dir``: ``server/`` is
``fedge.server``, ...), which mypy cannot see from the checkout. This builds that view out of symbolic links in a
temporary directory and runs mypy on it with pyproject.toml's [tool.mypy] settings. ``python tools/typecheck.py``;
exit status is mypy's.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def namespace_view(out: Path) -> Path:
    """``out``/fedge laid out as the installed package, each folder a link to the checkout's."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    top = out / "fedge"
    top.mkdir()
    for item in (ROOT / mapping["fedge"]).iterdir():  # fedge/'s own modules and sub-packages
        if item.name != "__pycache__":
            (top / item.name).symlink_to(item)
    for package, folder in mapping.items():
        if package != "fedge":
            (top / package.split(".", 1)[1]).symlink_to(ROOT / folder)
    return out


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        view = namespace_view(Path(tmp))
        cmd = [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "-p",
            "fedge",
        ]
        return subprocess.run(cmd, cwd=view).returncode


if __name__ == "__main__":
    sys.exit(main())
