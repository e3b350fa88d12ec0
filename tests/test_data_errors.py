"""Bad customer data fails before training, naming the file and the row."""

import json

import numpy as np
import pytest

from fedge.core.tasks import DataError, get_task
from tests.conftest import run_fedge


@pytest.fixture
def digits():
    return get_task("digits")


@pytest.fixture
def intent():
    return get_task("intent")


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def good_x(n=5):
    return np.zeros((n, 1, 8, 8), np.float32)


@pytest.mark.parametrize(
    "arrays, message, row",
    [
        ({"x": good_x()}, "missing array 'y'", None),
        ({"x": good_x().astype(np.float64), "y": np.zeros(5, np.int64)}, "dtype float64, expected float32", None),
        ({"x": np.zeros((5, 8, 8), np.float32), "y": np.zeros(5, np.int64)}, "shape (5, 8, 8)", None),
        ({"x": good_x(), "y": np.zeros(4, np.int64)}, "expected (5,)", None),
        ({"x": good_x(), "y": np.array([0, 1, 2, 11, 3], np.int64)}, "unknown label 11", 3),
        ({"x": good_x(0), "y": np.zeros(0, np.int64)}, "no samples", None),
    ],
)
def test_digits_npz_errors_name_file_and_row(tmp_path, digits, arrays, message, row):
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as err:
        digits.load_data(path)
    assert str(path) in str(err.value) and message in str(err.value)
    assert err.value.row == row


def test_digits_out_of_range_value_names_sample(tmp_path, digits):
    x = good_x()
    x[2, 0, 3, 3] = 7.0
    path = _npz(tmp_path / "bad.npz", x=x, y=np.zeros(5, np.int64))
    with pytest.raises(DataError, match=r"bad.npz: row 2: x values must be finite and in \[0.0, 1.0\]"):
        digits.load_data(path)


def test_not_an_npz(tmp_path, digits):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"junk\.npz: not a readable \.npz"):
        digits.load_data(path)


@pytest.mark.parametrize(
    "content, message, row",
    [
        ("text,intent\nhello,lost_card\n", "missing column(s) ['label']", 1),
        ("text,label\nblock my card,lost_card\nwhat's up,weather_report\n", "unknown label 'weather_report'", 3),
        ("text,label\nblock my card,lost_card\n,lost_card\n", "empty text", 3),
        ("text,label\nblock my card,lost_card,extra\n", "expected 2 fields, found 3", 2),
        ("", "file is empty", None),
        ("text,label\n", "no rows", None),
    ],
)
def test_intent_csv_errors(tmp_path, intent, content, message, row):
    path = tmp_path / "data.csv"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        intent.load_data(path)
    assert str(path) in str(err.value) and message in str(err.value)
    assert err.value.row == row


def test_intent_wrong_encoding_names_line(tmp_path, intent):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\nblock my card,lost_card\ncaf\xe9 card,lost_card\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.csv: row 3: not valid UTF-8"):
        intent.load_data(path)


def test_intent_jsonl_errors(tmp_path, intent):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"text": "block my card", "label": "lost_card"}) + "\n{oops\n")
    with pytest.raises(DataError, match=r"data.jsonl: row 2: invalid JSON"):
        intent.load_data(path)
    path.write_text(json.dumps({"text": "block my card"}) + "\n")
    with pytest.raises(DataError, match=r"row 1: missing field 'label'"):
        intent.load_data(path)


def test_client_daemon_refuses_bad_data_before_starting(tmp_path):
    bad = _npz(tmp_path / "customer.npz", x=good_x(), y=np.array([0, 1, 2, 10, 3], np.int64))
    out = run_fedge(
        "client",
        "start",
        "--coordinator",
        "127.0.0.1:1",
        "--data",
        str(bad),
        "--task",
        "digits",
        "--insecure",
        "--state",
        str(tmp_path / "state"),
        timeout=60,
    )
    assert out.returncode == 2
    assert f"{bad}: row 3: unknown label 10" in out.stderr
    assert not (tmp_path / "state" / "logs").exists()  # no SuperNode was started
