"""Regenerates the committed Python stubs from the .proto files (grpcio-tools), fixing the imports so the
stubs live inside the ``fedge.proto`` package. ``python -m fedge.proto.generate [--check]``: --check fails on drift."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOS = ["grpc_service.proto", "health.proto", "release.proto", "feedback.proto"]


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc

    # --pyi_out: type stubs of the messages, so that mypy checks the code that builds and reads them
    args = ["protoc", f"-I{HERE}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", *PROTOS]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    files = sorted([*out.glob("*_pb2*.py"), *out.glob("*_pb2.pyi")])
    for f in files:  # `import x_pb2` -> `from proto import x_pb2`
        f.write_text(re.sub(r"^import (\w+_pb2) as", r"from fedge.proto import \1 as", f.read_text(), flags=re.M))
    return files


def main() -> int:
    check = "--check" in sys.argv
    with tempfile.TemporaryDirectory() as tmp:
        drift = []
        for f in generate(Path(tmp)):
            target = HERE / f.name
            if check:
                if not target.exists() or target.read_text() != f.read_text():
                    drift.append(f.name)
            else:
                target.write_text(f.read_text())
        if drift:
            print(f"generated code out of date: {drift}; run python -m fedge.proto.generate", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
