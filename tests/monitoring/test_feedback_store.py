"""The device's feedback store: corrections matched to kept answers, unknown and expired ids told apart, bounded
in rows and age (the oldest dropped and counted), exported as training rows."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from fedge.core.tasks.data import read_text_records
from fedge.edge_runtime.common.errors import FeedbackNotFound
from fedge.edge_runtime.monitoring.feedback import FeedbackStore, export_corrections

DAY = 86400.0


def test_a_correction_is_matched_to_the_answer_it_names(tmp_path) -> None:
    store = FeedbackStore(tmp_path, keep_s=DAY)
    store.keep("intent", 2, "req-1", "lost_card", text="my card is gone", now=1000.0)
    got = store.correct("intent", "card_arrival", request_id="req-1", now=1010.0)
    assert (got.matched, got.served, got.version, got.correct) == (True, "lost_card", 2, False)
    assert store.correct("intent", "lost_card", request_id="req-1", now=1020.0).correct
    by_text = store.correct("intent", "lost_card", text="my card is gone", now=1030.0)
    assert by_text.matched and by_text.version == 2
    unseen = store.correct("intent", "lost_card", text="a text never asked", now=1040.0)
    assert not unseen.matched and unseen.served == ""  # kept as a correction all the same
    assert [r["text"] for r in store.corrections()] == ["my card is gone"] * 3 + ["a text never asked"]


def test_unknown_and_expired_ids_are_told_apart(tmp_path) -> None:
    store = FeedbackStore(tmp_path, keep_s=60)
    store.keep("intent", 1, "old", "lost_card", text="t", now=0.0)
    with pytest.raises(FeedbackNotFound, match="unknown request id 'nope'"):
        store.correct("intent", "lost_card", request_id="nope", now=10.0)
    with pytest.raises(FeedbackNotFound, match="expired request id 'old'"):
        store.correct("intent", "lost_card", request_id="old", now=61.0)
    store.prune(now=70.0)  # the input is forgotten; the id stays, so a late correction still hears "expired"
    with pytest.raises(FeedbackNotFound, match="expired"):
        store.correct("intent", "lost_card", request_id="old", now=70.0)
    assert store.counts()["answers"] == 0
    store.prune(now=200.0)  # after twice the keep time the id goes too
    with pytest.raises(FeedbackNotFound, match="unknown"):
        store.correct("intent", "lost_card", request_id="old", now=200.0)
    assert store.corrections() == []  # refused corrections store nothing


def test_a_flood_is_bounded_the_oldest_dropped_and_counted(tmp_path) -> None:
    store = FeedbackStore(tmp_path, keep_s=DAY, max_answers=100, max_corrections=50)
    store.keep("intent", 1, "huge", "lost_card", text="x" * (1 << 20), now=0.0)  # answered, never kept
    for i in range(1000):
        store.keep("intent", 1, f"r{i}", "lost_card", text="x" * 200, now=float(i))
    for i in range(300):
        store.correct("intent", "lost_card", text=f"flood {i}", now=1000.0 + i)
    assert store.counts()["corrections"] <= 50 + 256  # pruned as it goes, corrections alone too
    store.prune(now=1300.0)
    counts = store.counts()
    assert counts["answers"] == 100 and counts["corrections"] == 50
    assert counts["dropped_answers"] == 900 and counts["dropped_corrections"] == 250
    assert counts["dropped_answers_too_large"] == 1
    with pytest.raises(FeedbackNotFound):
        store.correct("intent", "lost_card", request_id="r0", now=1300.0)  # the oldest went first
    assert store.correct("intent", "lost_card", request_id="r999", now=1300.0).matched
    assert [r["text"] for r in store.corrections()][-2:] == ["flood 299", "x" * 200]
    size = sum(p.stat().st_size for p in tmp_path.iterdir())
    for i in range(3000):  # three times the flood: the files do not grow with it
        store.keep("intent", 1, f"s{i}", "lost_card", text="y" * 200, now=2000.0 + i)
    store.prune(now=6000.0)
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= max(size, 5 << 20)


def test_the_kept_inputs_are_bounded_in_bytes(tmp_path) -> None:
    store = FeedbackStore(tmp_path, keep_s=DAY, max_bytes=100_000)
    for i in range(300):
        store.keep("intent", 1, f"r{i}", "lost_card", text="z" * 1000, now=float(i))
    store.prune(now=300.0)
    assert store.counts()["answers"] <= 100 and store.counts()["dropped_answers"] >= 200
    assert store.correct("intent", "lost_card", request_id="r299", now=300.0).matched


def test_corrections_export_as_the_customer_data_format(tmp_path) -> None:
    store = FeedbackStore(tmp_path / "store", keep_s=DAY)
    store.keep("intent", 1, "a", "lost_card", text='she said "my card, it\'s gone"', now=0.0)
    store.correct("intent", "card_arrival", request_id="a", now=1.0)
    store.correct("intent", "refund_status", text="where is my money", now=2.0)
    store.correct("other", "x", text="another model's", now=3.0)
    out = tmp_path / "corrections.csv"
    assert export_corrections(store, out, "intent") == 2
    records = read_text_records(out)  # what fedge client start --data reads
    assert [(t, label) for _, t, label in records] == [
        ('she said "my card, it\'s gone"', "card_arrival"),
        ("where is my money", "refund_status"),
    ]
    assert next(iter(csv.reader(out.open()))) == ["text", "label"]


def test_tensor_corrections_export_as_npz(tmp_path) -> None:
    store = FeedbackStore(tmp_path / "store", keep_s=DAY)
    x = np.arange(64, dtype=np.float32).reshape(1, 8, 8) / 64
    store.keep("digits", 1, "img", "3", array=x, now=0.0)
    store.correct("digits", "8", request_id="img", now=1.0)
    assert export_corrections(store, tmp_path / "c.npz") == 1
    with np.load(tmp_path / "c.npz") as f:
        assert f["x"].shape == (1, 1, 8, 8) and np.array_equal(f["x"][0], x) and list(f["labels"]) == ["8"]
