"""fedge's Flower ClientApp. Flower starts a fresh process for every message, so this module stays
import-light: torch and the task code load inside the handler, only for the messages that train or evaluate
(SecAgg+ key-exchange stages never import torch)."""

from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.client import ClientApp
from flwr.client.mod import secaggplus_mod
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from fedge.client.clipping import clipping_when_requested
from fedge.client.egress import egress_audit
from fedge.core.wire import JOB_RECORD


def _client_fn(context: Context):
    from fedge.client.trainer import FedgeClient

    return FedgeClient.from_context(context).to_client()


def secagg_when_requested(msg: Message, context: Context, call_next):
    """Run Flower's SecAgg+ mod only for messages of the SecAgg+ protocol, so one app serves both modes."""
    if msg.metadata.message_type == MessageType.TRAIN and RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def export_jobs(msg: Message, context: Context, call_next):
    """Federated calibration and the accuracy gate arrive as QUERY messages carrying a ``fedge-job`` record."""
    if msg.metadata.message_type != MessageType.QUERY or JOB_RECORD not in msg.content.config_records:
        return call_next(msg, context)
    from fedge.client.job_handler import handle

    return Message(handle(msg.content.config_records[JOB_RECORD], context), reply_to=msg)


# order matters: the update is clipped (innermost) before SecAgg+ masks it, and the audit sees what really leaves
app = ClientApp(client_fn=_client_fn, mods=[egress_audit, export_jobs, secagg_when_requested, clipping_when_requested])
