import sys
import textwrap

import numpy as np
import pytest
import torch

from fedge.core.tasks import Task, get_task, split_holdout
from fedge.core.tasks.partition import dirichlet_partition
from fedge.core.tasks.training import TrainConfig, evaluate, exchanged_names, get_arrays, set_arrays, train
from fedge.edge_runtime.serving.tokenizer import HashingTokenizer

torch.set_num_threads(1)


def test_intent_reaches_90_percent_on_shipped_dataset():
    task = get_task("intent")
    ds = task.reference_data()
    assert len(set(task.labels)) >= 10 and len(ds) >= 400
    train_ds, holdout = split_holdout(ds, 0.2)
    torch.manual_seed(0)
    model = task.build_model()
    train(model, train_ds, TrainConfig(epochs=8, batch_size=16, lr=3e-3))
    _, acc = evaluate(model, holdout)
    assert acc >= 0.90, acc


def test_intent_handles_news_length_documents():
    """Long texts are truncated to max_len tokens; the max-pool over time keeps the model length-agnostic."""
    task = get_task("intent")
    rng = np.random.default_rng(0)
    filler = "the quarterly report noted market conditions and regional developments across several sectors".split()
    texts, labels = [], []
    for label, cue in [("roaming", "roaming abroad charges travel"), ("lost_card", "stolen card blocked wallet")]:
        for _ in range(40):
            words = list(rng.choice(filler, 600))  # ~600 words: news-length
            for pos in rng.choice(len(words), 5, replace=False):
                words.insert(int(pos) % 60, cue)  # cues early in the article
            texts.append(" ".join(words))
            labels.append(label)
    ds = task.encode([(i + 2, t, lab) for i, (t, lab) in enumerate(zip(texts, labels))], "news.csv")
    assert ds.x.shape == (80, task.tokenizer.max_len)
    train_ds, holdout = split_holdout(ds, 0.25)
    torch.manual_seed(0)
    model = task.build_model()
    train(model, train_ds, TrainConfig(epochs=5, batch_size=16, lr=3e-3))
    assert evaluate(model, holdout)[1] >= 0.9


def test_tokenizer_is_deterministic_across_processes():
    import subprocess

    code = (
        "from fedge.edge_runtime.serving.tokenizer import HashingTokenizer as T;"
        " print(T(num_buckets=4096, max_len=8).encode('Block my card').tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(HashingTokenizer(num_buckets=4096, max_len=8).encode("Block my card").tolist())
    ids = HashingTokenizer(num_buckets=4096, max_len=8).encode("Block my card")
    assert ids[:5].all() and not ids[5:].any()  # 3 words + 2 bigrams, then padding


def test_custom_task_by_module_attribute(tmp_path, monkeypatch):
    (tmp_path / "acme_task.py").write_text(
        textwrap.dedent("""
        from dataclasses import dataclass
        from fedge.core.tasks.digits import DigitsTask

        @dataclass(frozen=True)
        class AcmeDigits(DigitsTask):
            name: str = "acme"

        TASK = AcmeDigits()
        NOT_A_TASK = 42
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    task = get_task("acme_task:TASK")
    assert isinstance(task, Task) and task.name == "acme"
    with pytest.raises(ValueError, match=r"not a fedge\.core\.tasks\.Task"):
        get_task("acme_task:NOT_A_TASK")
    with pytest.raises(ValueError, match="cannot load custom task"):
        get_task("acme_task:MISSING")
    with pytest.raises(ValueError, match="unknown task"):
        get_task("nope")


def test_dirichlet_partition_covers_every_sample_once_and_skews_labels():
    y = np.repeat(np.arange(10), 100)
    parts = dirichlet_partition(y, 3, alpha=0.3, seed=1)
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(1000))
    shares = np.array([[np.mean(y[p] == c) for c in range(10)] for p in parts])
    assert shares.max() > 0.25  # non-IID: some customer is dominated by a few classes


def test_freeze_keeps_parameters_out_of_the_exchange_and_unchanged():
    task = get_task("digits")
    torch.manual_seed(0)
    model = task.build_model()
    names = exchanged_names(model, ("conv*",))
    assert names == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    before = get_arrays(model, ["conv1.weight", "fc1.weight"])
    train_ds, _ = split_holdout(task.reference_data())
    train(model, train_ds, TrainConfig(epochs=1), freeze=("conv*",))
    after = get_arrays(model, ["conv1.weight", "fc1.weight"])
    assert np.array_equal(before[0], after[0]) and not np.array_equal(before[1], after[1])
    with pytest.raises(ValueError, match="shape"):
        set_arrays(model, ["conv1.weight"], [np.zeros((1, 1), np.float32)])


def test_dpsgd_trains_a_model_that_was_just_evaluated_and_reports_its_steps():
    from fedge.core.tasks import split_holdout
    from fedge.core.tasks.training import TrainConfig, evaluate, train_dpsgd

    task = get_task("digits")
    train_ds, holdout = split_holdout(task.reference_data())
    model = task.build_model()
    before = evaluate(model, holdout)[1]  # leaves the model in eval mode, as the ClientApp does
    res = train_dpsgd(
        model, train_ds, TrainConfig(epochs=3, batch_size=64, lr=3e-3), noise_multiplier=0.5, max_grad_norm=1.0
    )
    assert res.steps == 3 * -(-len(train_ds) // 64) and res.sample_rate == 64 / len(train_ds)
    assert evaluate(model, holdout)[1] > max(before, 0.5)


def test_dpsgd_noise_cannot_be_regenerated_from_the_seed_the_coordinator_sends():
    """Two customers given the same config seed in the same round (what the coordinator sends) and the same data
    and model: with noise drawn from that seed their updates would carry the same noise, so the coordinator could
    regenerate it or cancel it by subtracting the two updates. Their updates must differ."""
    import torch

    from fedge.core.tasks.training import TrainConfig, get_arrays, train_dpsgd

    task = get_task("digits")
    data = task.reference_data().take(np.arange(256))
    torch.manual_seed(0)
    start = task.build_model().state_dict()
    updates = []
    for _ in range(2):
        model = task.build_model()
        model.load_state_dict(start)
        train_dpsgd(
            model, data, TrainConfig(epochs=1, batch_size=64, lr=3e-3, seed=7), noise_multiplier=1.0, max_grad_norm=1.0
        )
        updates.append(get_arrays(model, ["fc2.bias"])[0])
    assert not np.allclose(updates[0], updates[1])


def test_dpsgd_holds_a_pruning_mask():
    import torch

    from fedge.core.tasks import split_holdout
    from fedge.core.tasks.training import TrainConfig, train_dpsgd

    task = get_task("digits")
    train_ds, _ = split_holdout(task.reference_data())
    model = task.build_model()
    masks = {}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("weight") and p.dim() > 1:
                masks[n] = (torch.rand_like(p) > 0.5).float()
                p.mul_(masks[n])
    train_dpsgd(model, train_ds, TrainConfig(epochs=1, batch_size=64, lr=3e-3), 1.0, 1.0, masks=masks)
    for n, p in model.named_parameters():
        if n in masks:
            assert torch.all(p[masks[n] == 0] == 0), n


def test_proximal_term_keeps_a_customer_near_the_global_model():
    """FedProx: the coordinator's proximal-mu reaches the customer's training (simulated customer, as Flower's
    simulation runs it), and a larger mu leaves the update smaller; DP-SGD refuses the term it would drop."""
    from fedge.client.trainer import FedgeClient, NodeSettings
    from fedge.core.tasks.training import train_dpsgd

    task = get_task("digits")
    torch.manual_seed(0)
    start = get_arrays(task.build_model(), exchanged_names(task.build_model()))
    client = FedgeClient(NodeSettings(name="sim-0", task="digits", partition_id=0, num_partitions=3, alpha=0.5))
    config = {"task": "digits", "local-epochs": 2, "batch-size": 32, "lr": 3e-3, "seed": 0, "round": 1}

    def drift(**extra) -> float:
        arrays, _, _ = client.fit([a.copy() for a in start], config | extra)
        return float(np.sqrt(sum(np.sum((a - s) ** 2) for a, s in zip(arrays, start))))

    fedavg, default, prox = drift(), drift(**{"proximal-mu": 0.0}), drift(**{"proximal-mu": 10.0})
    assert fedavg == default  # no proximal-mu in the config: plain FedAvg training
    assert prox < 0.6 * fedavg, (prox, fedavg)
    with pytest.raises(ValueError, match="proximal"):
        train_dpsgd(
            task.build_model(),
            split_holdout(task.reference_data())[0],
            TrainConfig(proximal_mu=0.1),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
        )
