"""fedge installs inside its own namespace: nothing it installs is named ``server``, ``client``, ``proto`` or
``edge_runtime`` at the top level, where it would collide with anything else of that name on a customer's machine."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GENERIC = ("server", "client", "proto", "edge_runtime")


@pytest.mark.parametrize("name", GENERIC)
def test_generic_names_are_not_importable_outside_the_checkout(name, tmp_path):
    out = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0 and f"No module named '{name}'" in out.stderr, out.stderr


def test_the_product_imports_from_its_namespace_outside_the_checkout(tmp_path):
    code = (
        "import fedge.server.registry, fedge.client.ledger, fedge.proto.grpc_service_pb2,"
        " fedge.edge_runtime.serving.data_plane"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_the_wheel_holds_only_the_fedge_namespace(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("fedge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted({n.split("/")[0] for n in names}) == ["fedge", wheel.name.split("-py3")[0] + ".dist-info"]
    for module in (
        "fedge/server/round_loop.py",
        "fedge/client/trainer.py",
        "fedge/proto/grpc_service.proto",
        "fedge/edge_runtime/serving/data_plane.py",
        "fedge/cli/commands.py",
        "fedge/data/intent.csv",
    ):
        assert module in names
