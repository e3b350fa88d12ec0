"""The loop on a real edge process: health signals over REST, gRPC and Prometheus; feedback that names a request
by the id the device returned; the errors a client gets for bad feedback; capture off by default."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest

from tests.edge.conftest import edge_cli, serving

REFERENCE = {  # a drift reference for the intent model's 12 labels: what an export writes into the manifest
    "temperature": 1.0,
    "class_counts": [10] * 12,
    "confidence_counts": [0, 120, 0, 0, 0, 0, 0, 0, 0, 0],
}


@pytest.fixture(scope="module")
def loop_edge(tmp_path_factory, keys):
    from fedge.export.sample_bundle import untrained_bundle

    root = tmp_path_factory.mktemp("loop")
    bundle = untrained_bundle(root / "intent", keys[0], "intent", monitoring=REFERENCE)
    store = root / "feedback"
    flags = ("--feedback-store", str(store), "--keep-inputs", "3s", "--health-window", "200")
    flags += ("--feedback-labels", "open_account")  # an intent the next run will add
    for server in serving(root, keys, [bundle], *flags):
        server.store = store
        yield server


def _call(server, method: str, path: str, doc: dict | None = None) -> tuple[int, dict]:
    body = json.dumps(doc).encode() if doc is not None else None
    req = urllib.request.Request(f"http://{server.http_url}{path}", body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _ask(server, text: str, request_id: str = "") -> dict:
    doc = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": [text]}]}
    status, out = _call(server, "POST", "/v2/models/intent/infer", doc | ({"id": request_id} if request_id else {}))
    assert status == 200, out
    return out


def test_the_device_returns_an_id_and_a_correction_naming_it_is_matched(loop_edge) -> None:
    answer = _ask(loop_edge, "I lost my card yesterday")
    served = answer["outputs"][1]["data"][0]
    assert len(answer["id"]) == 32  # the client sent none: the device made one
    status, got = _call(loop_edge, "POST", "/v2/models/intent/feedback", {"id": answer["id"], "label": "lost_card"})
    assert status == 200 and got["matched"] and got["served_label"] == served
    assert got["was_correct"] == (served == "lost_card")
    mine = _ask(loop_edge, "what is my balance", request_id="ticket-42")
    assert mine["id"] == "ticket-42"  # the client's own id is kept
    status, got = _call(loop_edge, "POST", "/v2/models/intent/feedback", {"id": "ticket-42", "label": "check_balance"})
    assert status == 200 and got["matched"]
    status, got = _call(
        loop_edge, "POST", "/v2/models/intent/feedback", {"text": "a new phrasing", "label": "lost_card"}
    )
    assert status == 200 and not got["matched"]  # a text correction needs no kept request
    opening = _ask(loop_edge, "I would like to open a new account")
    doc = {"id": opening["id"], "label": "open_account"}  # beyond the catalogue, allowed by --feedback-labels
    status, got = _call(loop_edge, "POST", "/v2/models/intent/feedback", doc)
    assert status == 200 and got["matched"] and not got["was_correct"]


def test_bad_feedback_gets_the_right_status_and_stores_nothing(loop_edge) -> None:
    def post(doc, model="intent"):
        return _call(loop_edge, "POST", f"/v2/models/{model}/feedback", doc)

    before = _call(loop_edge, "GET", "/v2/models/intent/health")[1]["feedback_store"]["corrections"]
    status, err = post({"id": "never-asked", "label": "lost_card"})
    assert status == 404 and "unknown request id" in err["error"]
    answer = _ask(loop_edge, "my card was stolen")
    time.sleep(3.5)  # --keep-inputs 3s
    status, err = post({"id": answer["id"], "label": "lost_card"})
    assert status == 404 and "expired request id" in err["error"]
    status, err = post({"text": "hello", "label": "not_a_label"})
    assert status == 400 and "catalogue" in err["error"] and "lost_card" in err["error"]
    assert "open_account" in err["error"]  # the labels --feedback-labels adds are named too
    assert post({"text": "hello"})[0] == 400  # no label
    assert post({"id": "x", "text": "y", "label": "lost_card"})[0] == 400  # both
    assert post({"text": "hello", "label": "lost_card", "extra": 1})[0] == 400
    assert post({"text": "hello", "label": "lost_card"}, model="nope")[0] == 404
    req = urllib.request.Request(f"http://{loop_edge.http_url}/v2/models/intent/feedback", b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400
    after = _call(loop_edge, "GET", "/v2/models/intent/health")[1]["feedback_store"]["corrections"]
    assert after == before


def test_health_over_rest_grpc_statistics_and_prometheus(loop_edge) -> None:
    from fedge.proto import feedback_pb2, feedback_pb2_grpc

    for i in range(60):
        _ask(loop_edge, f"please block my card number {i}")
    status, doc = _call(loop_edge, "GET", "/v2/models/intent/health")
    (v,) = doc["versions"]
    assert status == 200 and v["reference"] and v["predictions"] >= 60 and v["window"] <= 200
    assert 1 / 12 <= v["estimated_accuracy"] <= 1 and 0 <= v["drift"] <= 1 and v["p99_latency_s"] > 0
    assert v["corrections"] >= 2 and v["labelled"] >= 2 and v["unknown_token_share"] is not None
    stats = _call(loop_edge, "GET", "/v2/models/intent/stats")[1]["model_stats"][0]
    assert stats["health"]["predictions"] == v["predictions"]  # the statistics extension carries it too
    with grpc.insecure_channel(loop_edge.url) as ch:
        stub = feedback_pb2_grpc.FeedbackServiceStub(ch)
        by_grpc = json.loads(stub.ModelHealth(feedback_pb2.ModelHealthRequest(model="intent")).json)
        assert by_grpc["versions"][0]["predictions"] == v["predictions"]
        got = stub.Feedback(feedback_pb2.FeedbackRequest(model="intent", text="gRPC text", label="lost_card"))
        assert not got.matched and got.version == 1
        with pytest.raises(grpc.RpcError) as e:
            stub.Feedback(feedback_pb2.FeedbackRequest(model="intent", id="nope", label="lost_card"))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as e:
            stub.Feedback(feedback_pb2.FeedbackRequest(model="intent", text="x", label="nope"))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with urllib.request.urlopen(f"http://127.0.0.1:{loop_edge.metrics_port}/metrics", timeout=30) as r:
        metrics = r.read().decode()
    assert 'fedge_edge_health_estimated_accuracy{model="intent",version="1"}' in metrics
    assert 'fedge_edge_health_drift{model="intent",version="1"}' in metrics
    assert 'fedge_edge_health_class_share{label="lost_card",model="intent",version="1"}' in metrics


def test_corrections_export_from_the_cli(loop_edge, tmp_path) -> None:
    out = tmp_path / "corrections.csv"
    done = edge_cli(loop_edge, "edge", "feedback", "export", "--store", str(loop_edge.store), "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = out.read_text().splitlines()
    assert rows[0] == "text,label" and "I lost my card yesterday,lost_card" in rows
    assert "I would like to open a new account,open_account" in rows  # the next run's --labels must add it
    missing = edge_cli(loop_edge, "edge", "feedback", "export", "--store", str(tmp_path / "none"), "--out", str(out))
    assert missing.returncode != 0 and "no feedback store" in missing.stderr


def test_capture_is_off_by_default_and_says_how_to_turn_it_on(edge_server, tmp_path) -> None:
    from fedge.proto import feedback_pb2, feedback_pb2_grpc

    status, err = _call(edge_server, "POST", "/v2/models/intent/feedback", {"text": "x", "label": "lost_card"})
    assert status == 404 and "--feedback-store" in err["error"]
    with grpc.insecure_channel(edge_server.url) as ch:
        with pytest.raises(grpc.RpcError) as e:
            feedback_pb2_grpc.FeedbackServiceStub(ch).Feedback(
                feedback_pb2.FeedbackRequest(model="intent", text="x", label="lost_card")
            )
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "--feedback-store" in e.value.details()
    answer = _ask(edge_server, "hello")
    assert "id" not in answer or not answer["id"]  # no id is made up when nothing could use it
    assert not list(edge_server.repo.parent.glob("**/feedback.sqlite"))
    x = np.zeros((1, 1, 8, 8), np.float32)  # monitoring is on without capture: health for every model
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": x.ravel().tolist()}]}
    assert _call(edge_server, "POST", "/v2/models/digits/infer", doc)[0] == 200
    status, doc = _call(edge_server, "GET", "/v2/models/digits/health")
    assert status == 200 and doc["versions"][0]["drift"] is None and "no reference" in doc["versions"][0]["drift_note"]
