"""The ClientApp of ``fedge simulate`` on Flower's simulation runtime (a SuperLink started with ``--simulation``,
runs submitted with ``flwr run``): each virtual customer holds a Dirichlet partition of the task's reference data.

Flower's simulation runtime gives each virtual SuperNode only ``partition-id`` and ``num-partitions`` as its node
config; the rest (the task, the label skew, the base model) comes from the run's config, which every message's
context carries. Training, evaluation, SecAgg+ and central DP clipping are the deployment ClientApp's own."""

from __future__ import annotations

from flwr.app import Context
from flwr.client import Client, ClientApp

from fedge.client.client_app import secagg_when_requested
from fedge.client.clipping import clipping_when_requested


def _client_fn(context: Context) -> Client:
    from fedge.client.trainer import FedgeClient, NodeSettings

    run = context.run_config
    node = {
        **dict(context.node_config),
        "task": run["task"],
        "alpha": run["sim-alpha"],
        "base-model": run["base-model"],
    }
    return FedgeClient(NodeSettings.from_node_config(node)).to_client()


# order as in client_app.py: the update is clipped (innermost) before SecAgg+ masks it
app = ClientApp(client_fn=_client_fn, mods=[secagg_when_requested, clipping_when_requested])
