"""Export stages without a federation: pruning, calibration merging, the two INT8 encodings, the gate."""

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from fedge.client.jobs import calibration_histograms, calibration_minmax, gate_evaluation
from fedge.core.tasks import get_task, split_holdout
from fedge.core.tasks.training import TrainConfig, train
from fedge.export.calibration import histogram_edges, merge_histograms, merge_minmax, ranges_from_histograms
from fedge.export.gate import aggregate_gate
from fedge.export.onnx_export import check_parity, to_onnx
from fedge.export.prune import PruneConfig, check_2of4, prune_model, sparsity
from fedge.export.quantize import QuantizeConfig, preprocess, quantize_variants

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A trained, 2:4-pruned digits model exported and quantized from locally computed ranges."""
    task = get_task("digits")
    train_ds, holdout = split_holdout(task.reference_data())
    torch.manual_seed(0)
    model = task.build_model()
    train(model, train_ds, TrainConfig(epochs=6, batch_size=32, lr=3e-3))
    prune_model(model, PruneConfig.parse("2:4"))
    train(
        model,
        train_ds,
        TrainConfig(epochs=2, batch_size=32, lr=1e-3),
        masks={n: (p != 0).float() for n, p in model.named_parameters() if p.dim() > 1},
    )
    out = tmp_path_factory.mktemp("export")
    fp32 = to_onnx(model, train_ds.x[:2], out / "model.fp32.onnx")
    pre = preprocess(fp32, out / "pre.onnx")
    parts = [calibration_minmax(pre.read_bytes(), x) for x in np.array_split(train_ds.x, 3)]
    ranges = merge_minmax([{k: tuple(v) for k, v in p.items()} for p in parts])
    variants = quantize_variants(pre, ranges, out, QuantizeConfig())
    return {"model": model, "fp32": fp32, "train": train_ds, "holdout": holdout, **variants}


def test_minmax_merge_by_hand():
    merged = merge_minmax([{"a": (-1.0, 2.0), "b": (0.0, 1.0)}, {"a": (-3.0, 1.5), "b": (0.5, 4.0)}])
    assert merged == {"a": (-3.0, 2.0), "b": (0.0, 4.0)}


def test_histogram_merge_and_percentile_by_hand():
    edges = histogram_edges({"t": (-1.0, 4.0)}, bins=8, method="percentile")
    np.testing.assert_allclose(edges["t"], np.linspace(0, 4, 9))  # |x| over [0, max|x|]
    np.testing.assert_allclose(histogram_edges({"t": (-1.0, 4.0)}, 8, "entropy")["t"], np.linspace(-4, 4, 9))
    merged = merge_histograms([{"t": [10, 40, 0, 0, 0, 0, 0, 0]}, {"t": [30, 9, 10, 0, 0, 0, 0, 1]}])
    assert merged["t"].tolist() == [40, 49, 10, 0, 0, 0, 0, 1]
    # cdf over 100 values: 0.40, 0.89, 0.99, ...: the 99th percentile of |x| is first reached at index 2,
    # and ORT takes that edge, edges[2] = 1.0, as the symmetric threshold
    lo, hi = ranges_from_histograms(merged, edges, {"t": (-1.0, 4.0)}, "percentile", percentile=99.0)["t"]
    assert hi == pytest.approx(1.0, abs=1e-6) and lo == pytest.approx(-1.0, abs=1e-6)


def test_two_of_four_pattern_and_report(trained):
    model = trained["model"]
    for name in ("conv2.weight", "fc1.weight", "fc2.weight"):
        assert check_2of4(dict(model.named_parameters())[name]) == 1.0
    report = sparsity(model, "2:4")
    assert 0.45 < report.zeros / report.parameters < 0.5
    assert not any("weight_orig" in k or "weight_mask" in k for k in model.state_dict())


def test_fp32_onnx_parity(trained):
    assert check_parity(trained["model"], trained["fp32"], trained["holdout"].x).max_abs_diff < 1e-4


def _inits(m):
    return {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}


def test_trt_model_encodes_tensorrt_explicit_quantization_rules(trained):
    m = onnx.load(str(trained["int8_trt"]))
    inits = _inits(m)
    producers = {o: n for n in m.graph.node for o in n.output}
    compute = [n for n in m.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert len(compute) == 4
    for node in compute:
        act, weight = node.input[0], node.input[1]
        assert producers[act].op_type == "DequantizeLinear", node.name
        dq = producers[weight]
        assert dq.op_type == "DequantizeLinear", node.name
        w, scale, zp = (inits.get(x) for x in dq.input[:3])
        w = inits[dq.input[0]] if dq.input[0] in inits else None
        assert w is not None and w.dtype == np.int8 and w.min() >= -127 and w.max() <= 127  # restricted range
        assert scale.ndim == 1 and scale.shape[0] == w.shape[0]  # per output channel
        assert zp.dtype == np.int8 and not zp.any()  # symmetric
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        assert axis == 0
        if len(node.input) > 2:  # bias stays float, as TensorRT expects
            assert node.input[2] in inits and inits[node.input[2]].dtype == np.float32
    qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert qs and all(inits[q.input[2]].dtype == np.int8 and not inits[q.input[2]].any() for q in qs)


def test_cpu_model_uses_uint8_activations_and_agrees_with_fp32(trained):
    import onnxruntime as ort

    m = onnx.load(str(trained["int8_cpu"]))
    inits = _inits(m)
    act_zps = [inits[q.input[2]] for q in m.graph.node if q.op_type == "QuantizeLinear"]
    assert act_zps and all(z.dtype == np.uint8 for z in act_zps)
    x, y = trained["holdout"].x, trained["holdout"].y
    run = lambda p: ort.InferenceSession(str(p)).run(None, {"input": x})[0].argmax(1)
    fp32, int8 = run(trained["fp32"]), run(trained["int8_cpu"])
    assert (fp32 == int8).mean() >= 0.99
    assert (fp32 == y).mean() - (int8 == y).mean() <= 0.01
    assert trained["int8_cpu"].stat().st_size <= 0.35 * trained["fp32"].stat().st_size


def test_customer_job_replies_carry_statistics_not_inputs(trained):
    pre = preprocess(trained["fp32"], trained["fp32"].with_name("pre2.onnx")).read_bytes()
    small, large = trained["train"].x[:40], trained["train"].x[:400]
    mm_small, mm_large = calibration_minmax(pre, small), calibration_minmax(pre, large)
    assert set(mm_small) == set(mm_large) and all(len(v) == 2 for v in mm_large.values())
    edges = {k: np.linspace(-5, 5, 17).tolist() for k in mm_large}
    hist = calibration_histograms(pre, large, edges)
    assert all(len(v) == 16 and all(isinstance(c, int) for c in v) for v in hist.values())
    assert sum(hist[next(iter(hist))]) > 0
    gate = gate_evaluation({"fp32": trained["fp32"].read_bytes()}, small, trained["train"].y[:40])
    assert set(gate) == {"examples", "accuracy", "agreement", "monitoring"}
    # the monitoring reference's statistics: counts and sums, one set per temperature, whatever the holdout's size
    ref = gate["monitoring"]
    assert set(ref) == {
        "examples",
        "correct",
        "class_counts",
        "grid",
        "nll",
        "confidence_sum",
        "confidence_counts",
        "kind",
    }
    assert sum(ref["class_counts"]) == 40 and all(sum(c) == 40 for c in ref["confidence_counts"])
    big = gate_evaluation({"fp32": trained["fp32"].read_bytes()}, large, trained["train"].y[:400])["monitoring"]
    assert abs(len(json.dumps(big)) - len(json.dumps(ref))) < 400
    # reply size depends on the model's tensors, not on how much data the customer holds
    assert abs(len(json.dumps(mm_small)) - len(json.dumps(mm_large))) < 200
    assert len(json.dumps(hist)) < 20 * len(edges) * 16 + 2000


def test_gate_that_must_fail_fails():
    results = {
        "a": {"examples": 100, "accuracy": {"fp32": 0.95, "int8_cpu": 0.90}, "agreement": {"int8_cpu": 0.93}},
        "b": {"examples": 300, "accuracy": {"fp32": 0.97, "int8_cpu": 0.96}, "agreement": {"int8_cpu": 0.98}},
    }
    report = aggregate_gate(results, max_drop=0.01)
    assert report.fp32_accuracy == pytest.approx(0.965) and report.int8_accuracy == pytest.approx(0.945)
    assert report.accuracy_drop == pytest.approx(0.02) and not report.passed
    assert aggregate_gate(results, max_drop=0.03).passed


@pytest.mark.tensorrt
def test_tensorrt_engine_builds_and_matches_onnxruntime(trained, tmp_path):
    from fedge.edge_runtime.serving.tensorrt_engine import tensorrt_status

    ok, why = tensorrt_status()
    if not ok:
        pytest.skip(f"TensorRT path not runnable here: {why}")
    import onnxruntime as ort

    from fedge.edge_runtime.distribution.bundle import Manifest, TensorDesc
    from fedge.edge_runtime.serving.tensorrt_engine import CompileConfig, TensorRTBackend, compile_engine

    d = trained["int8_trt"].parent
    manifest = Manifest(
        "digits",
        "digits",
        (TensorDesc("input", "FP32", (-1, 1, 8, 8)),),
        (TensorDesc("logits", "FP32", (-1, 10)),),
        {"int8_trt": trained["int8_trt"].name},
        {trained["int8_trt"].name: ""},
    )
    engine = compile_engine(d, manifest, tmp_path, CompileConfig(max_batch=64, sparse=True))
    assert engine.exists()
    backend = TensorRTBackend.load(d, manifest, tmp_path)
    x = trained["holdout"].x[:32]
    got = backend.run({"input": x})["logits"].argmax(1)
    ref = ort.InferenceSession(str(trained["int8_trt"])).run(None, {"input": x})[0].argmax(1)
    assert (got == ref).mean() >= 0.97


def test_release_models_import_only_the_opsets_they_use(trained):
    """ONNX Runtime's optimizer stamps every domain it knows into the model; an older runtime refuses one it
    does not know (ONNX Runtime 1.17: ai.onnx.ml 5), so the INT8 files keep only what their nodes use."""
    for kind in ("fp32", "int8_trt", "int8_cpu"):
        m = onnx.load(str(trained[kind]))
        assert [(o.domain, o.version) for o in m.opset_import] == [("", 17)], kind
        assert m.ir_version <= 9, kind  # what ONNX Runtime 1.17 reads


@pytest.mark.e2e
def test_the_int8_release_serves_on_a_device_install(trained, tmp_path):
    """A device install (tests.edge.conftest.device_python: Python 3.10, the edge dependencies only, at the oldest
    ONNX Runtime fedge supports) serves a signed INT8 release on its CPU backend, with the answers this machine's
    ONNX Runtime gives for the same file."""
    import shutil

    import grpc
    import onnxruntime as ort

    from fedge.cli.cluster import EdgeServerProcess
    from fedge.edge_runtime.distribution.bundle import generate_keys
    from fedge.export.sample_bundle import sign_bundle
    from fedge.proto import grpc_service_pb2 as pb
    from fedge.proto import grpc_service_pb2_grpc as pb_grpc
    from tests.edge.conftest import device_python, fedge

    python = device_python()
    priv, pub = generate_keys(tmp_path / "keys")
    bundle = tmp_path / "release"
    bundle.mkdir()
    models = {"fp32": trained["fp32"], "int8_cpu": trained["int8_cpu"], "int8_trt": trained["int8_trt"]}
    for path in models.values():
        shutil.copyfile(path, bundle / path.name)
    sign_bundle(bundle, priv, "digits", models={kind: path.name for kind, path in models.items()})
    out = fedge("edge", "install", str(bundle), "--repo", str(tmp_path / "repo"), "--trust", str(pub), python=python)
    assert out.returncode == 0, out.stderr
    server = EdgeServerProcess(
        tmp_path / "repo", pub, tmp_path / "edge.log", "--backend", "onnxruntime-cpu", python=python
    )
    try:
        x = trained["holdout"].x[:64]
        with grpc.insecure_channel(server.url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="digits"), timeout=30)
            assert meta.properties["model_file"] == "model.int8.cpu.onnx", meta.properties
            req = pb.ModelInferRequest(model_name="digits", raw_input_contents=[x.tobytes()])
            req.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
            got = np.frombuffer(stub.ModelInfer(req, timeout=30).raw_output_contents[0], np.float32).reshape(-1, 10)
    finally:
        server.stop()
    ref = ort.InferenceSession(str(trained["int8_cpu"])).run(None, {"input": x})[0]
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.98
    np.testing.assert_allclose(got, ref, atol=0.05 * np.abs(ref).max())


def test_cpu_model_weights_fit_seven_bits_so_no_cpu_saturates(trained):
    """Every INT8 weight of the CPU variant is within 7 bits: a pair of u8 x s8 products then fits int16
    (2 x 255 x 64 = 32640), the intermediate ONNX Runtime's x86 kernels without VNNI add them in."""
    m = onnx.load(str(trained["int8_cpu"]))
    inits = _inits(m)
    producers = {o: n for n in m.graph.node for o in n.output}
    weights = [inits[producers[n.input[1]].input[0]] for n in m.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert len(weights) == 4
    for w in weights:
        assert w.dtype == np.int8 and np.abs(w.astype(np.int32)).max() <= 64
    assert 2 * 255 * max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 32767


def test_cpu_model_answers_as_the_onnx_specification(trained):
    """This machine's ONNX Runtime gives the CPU variant's answers the ONNX specification gives (onnx.reference:
    what arm64 computes), row for row."""
    import onnxruntime as ort

    from fedge.core.onnx_reference import reference_outputs

    x = trained["holdout"].x
    got = ort.InferenceSession(str(trained["int8_cpu"])).run(None, {"input": x})[0]
    expected = reference_outputs(trained["int8_cpu"].read_bytes(), x)
    assert (got.argmax(1) == expected.argmax(1)).all()
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())


def test_the_gate_reports_reference_agreement_and_flags_a_cpu_dependent_model(trained, monkeypatch):
    """A customer whose CPU computes the INT8 model differently from the ONNX specification (stood in for here by a
    specification that disagrees on some rows: no CPU without VNNI can be had on every test machine) makes the
    gate flag the release with the numbers; customers whose CPUs agree do not."""
    import fedge.core.onnx_reference as reference
    from fedge.export.stages import say_reference

    x, y = trained["holdout"].x[:64], trained["holdout"].y[:64]
    models = {k: trained[k].read_bytes() for k in ("fp32", "int8_cpu", "int8_trt")}
    honest = gate_evaluation(models, x, y, reference_rows=32)
    assert honest["reference"]["int8_cpu"]["rows"] == 32 and honest["reference"]["int8_cpu"]["agreement"] == 1.0
    report = aggregate_gate({"a": honest, "b": honest}, max_drop=0.05)
    assert report.reference["int8_cpu"]["rows"] == 64 and not report.cpu_dependent

    real = reference.reference_outputs

    def saturating_cpu(model, rows, batch=64):
        out = real(model, rows, batch).copy()
        out[:4] = -out[:4]  # four rows come out otherwise
        return out

    monkeypatch.setattr(reference, "reference_outputs", saturating_cpu)
    skewed = gate_evaluation(models, x, y, reference_rows=32)
    report = aggregate_gate({"a": honest, "b": skewed}, max_drop=0.05)
    assert report.cpu_dependent and report.passed  # flagged, not refused: the accuracy itself held
    ref = report.reference["int8_cpu"]
    assert ref["rows"] == 64 and ref["agreement"] == pytest.approx(60 / 64)
    assert ref["per_customer"]["b"]["agreement"] == pytest.approx(28 / 32) and ref["max_abs_diff"] > 0
    said = []
    say_reference(report, said.append)
    assert "CPU-dependent INT8" in said[0] and "0.9375 of 64 rows" in said[0] and "b: 0.8750" in said[0]
    assert report.to_json()["cpu_dependent"] is True
