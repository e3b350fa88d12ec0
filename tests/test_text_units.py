"""The text task's pieces without a federation: the label catalogue, the run's task settings, the LoRA model's
state (adapters and head only), the base's identity, merging for export, DP-SGD over the adapters."""

import json

import numpy as np
import pytest
import torch

from fedge.cli.task_flags import read_labels
from fedge.core.tasks import DataError, get_task
from fedge.core.tasks.encoder import BaseModelError, base_sha256, default_base_dir
from fedge.core.tasks.lora_model import trim_padding
from fedge.edge_runtime.serving.batcher import merge_rows
from fedge.server.run_config import RunConfig

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def task():
    return get_task("text", {"labels": json.dumps(["card", "money", "network"])})


def test_labels_from_a_file_or_a_list_and_clear_errors(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("# catalogue\ncard\n\nmoney\n  network  \n")
    assert read_labels(str(f)) == ("card", "money", "network")
    assert read_labels("a,b, c") == ("a", "b", "c")
    f.write_text("card\nmoney\ncard\n")
    with pytest.raises(ValueError, match=r"line 3: label 'card' given twice \(first at .*line 1\)"):
        read_labels(str(f))
    with pytest.raises(ValueError, match="at least two labels"):
        read_labels("only")
    with pytest.raises(ValueError, match="no such file"):
        read_labels(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="at least two distinct labels"):
        RunConfig(task="text", labels=json.dumps(["a", "a"]))


def test_intent_keeps_its_catalogue_and_takes_the_runs():
    assert len(get_task("intent").labels) == 12
    assert get_task("intent", RunConfig(task="intent", labels='["x", "y"]').task_settings()).labels == ("x", "y")


def test_unknown_label_names_file_and_row(task, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("text,label\nblock my card,card\nhow is the weather,politics\n")
    with pytest.raises(DataError, match=r"c\.csv: row 3: unknown label 'politics' \(the catalogue"):
        task.load_data(f)


def test_only_adapters_and_head_are_the_models_state(task):
    torch.manual_seed(0)
    model = task.build_model()
    state = model.state_dict()
    assert all("lora_" in k or k.startswith("head.") for k in state) and len(state) == 6 * 2 * 2 + 2
    assert sum(v.numel() for v in state.values()) < 0.01 * sum(p.numel() for p in model.parameters())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(state)


def test_merged_export_module_gives_the_models_logits_and_padding_does_not_matter(task):
    torch.manual_seed(0)
    model = task.build_model().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)  # adapters away from their zero start
        x = torch.from_numpy(task.sample_inputs())
        merged = task.export_module(model).eval()
        np.testing.assert_allclose(merged(x).numpy(), model(x).numpy(), atol=1e-4)
        padded = torch.nn.functional.pad(x, (0, 7))
        np.testing.assert_allclose(model(padded).numpy(), model(x).numpy(), atol=1e-4)
    assert trim_padding(padded, 0).shape == x.shape


def test_a_different_base_is_refused_naming_it(tmp_path):
    base = default_base_dir()
    other = tmp_path / "base"
    other.mkdir()
    for f in base.iterdir():
        if f.is_file():
            (other / f.name).symlink_to(f)
    (other / "tokenizer_config.json").unlink()
    (other / "tokenizer_config.json").write_text("{}")
    with pytest.raises(BaseModelError, match=f"base model {other} differs from the run's"):
        get_task("text", {"base-sha256": base_sha256(base)}, base_dir=str(other))
    with pytest.raises(BaseModelError, match=r"not a Hugging Face model directory \(missing config.json, model"):
        get_task("text", {}, base_dir=str(tmp_path))


def test_dpsgd_trains_the_adapters_and_leaves_the_base(task):
    from fedge.core.tasks import Dataset
    from fedge.core.tasks.training import TrainConfig, train_dpsgd

    torch.manual_seed(0)
    model = task.build_model()
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora_before = {k: v.clone() for k, v in model.state_dict().items()}
    x = task.encode_texts(["block my card", "what is my balance", "is the network down", "lost card"] * 4)
    res = train_dpsgd(
        model,
        Dataset(x, np.array([0, 1, 2, 0] * 4)),
        TrainConfig(epochs=1, batch_size=8, lr=1e-2),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
    )
    assert res.steps == 2
    assert all(torch.equal(p, base_before[n]) for n, p in model.named_parameters() if n in base_before)
    assert any(not torch.equal(v, lora_before[k]) for k, v in model.state_dict().items())


def test_batcher_pads_requests_of_different_lengths_to_the_longest():
    merged = merge_rows([np.array([[5, 6]]), np.array([[7, 8, 9, 10]]), np.array([[1]])], pad_value=0)
    assert merged.tolist() == [[5, 6, 0, 0], [7, 8, 9, 10], [1, 0, 0, 0]]
    with pytest.raises(ValueError):
        merge_rows([np.zeros((1, 2)), np.zeros((1, 3))], pad_value=None)  # a fixed-shape model never pads


def test_a_mask_holds_on_the_merged_weights_the_release_ships():
    """Under --prune 2:4 every Linear of the encoder computes with mask * (W + scaling * B @ A): training moves the
    dense low-rank update, yet the merged weights are 2:4 and give the model's own logits."""
    from fedge.core.tasks import Dataset
    from fedge.core.tasks.sparsity import check_2of4
    from fedge.core.tasks.training import TrainConfig, train

    pruned = get_task("text", {"labels": json.dumps(["card", "money", "network"]), "prune": "2:4"})
    torch.manual_seed(0)
    model = pruned.build_model()
    x = pruned.encode_texts(["block my card", "what is my balance", "is the network down", "lost card"] * 4)
    train(model, Dataset(x, np.array([0, 1, 2, 0] * 4)), TrainConfig(epochs=2, batch_size=8, lr=1e-2))
    assert any(v.abs().sum() > 0 for k, v in model.state_dict().items() if "lora_B" in k)  # the update moved
    merged = pruned.export_module(model).eval()
    linears = [(n, m) for n, m in merged.encoder.named_modules() if isinstance(m, torch.nn.Linear) and "layer." in n]
    assert len(linears) == 6 * 6 and all(check_2of4(m.weight) == 1.0 for _, m in linears)
    with torch.no_grad():
        np.testing.assert_allclose(
            merged(torch.from_numpy(x)).numpy(), model.eval()(torch.from_numpy(x)).numpy(), atol=1e-4
        )
