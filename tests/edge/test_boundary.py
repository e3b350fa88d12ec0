"""The edge runtime installs and runs on small devices: it must never import the training stack."""

import subprocess
import sys


def test_edge_runtime_and_edge_cli_never_import_torch_or_flwr(tmp_path):
    code = (
        "import sys, fedge.edge_runtime.process.serve, fedge.edge_runtime.distribution.repository,"
        " fedge.edge_runtime.distribution.puller, fedge.edge_runtime.serving.tensorrt_engine,"
        " fedge.edge_runtime.tools.perf;"
        "from fedge.cli import main;"
        f"main(['edge', 'models', '--repo', {str(tmp_path)!r}]);"
        "print(sorted({'torch', 'flwr', 'sklearn', 'opacus', 'transformers', 'peft', 'tokenizers'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_edge_dependencies_are_the_base_install():
    from pathlib import Path

    import tomllib

    doc = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    names = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in doc["project"]["dependencies"]}
    assert names == {"numpy", "grpcio", "protobuf", "onnxruntime", "cryptography", "prometheus-client", "h11"}


def test_generated_grpc_code_is_in_sync_with_the_protos():
    out = subprocess.run([sys.executable, "-m", "fedge.proto.generate", "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
