"""Client-side clipping for central DP: the customer clips its model update (new - received) to the L2 bound the
coordinator's DP wrapper sends (``clipping_norm``) before anything leaves, inside SecAgg+ masking.

Flower 1.41's ``fixedclipping_mod`` divides by the update's norm and crashes (ZeroDivisionError) on an all-zero
update (no local epochs, a refused round, frozen model); under SecAgg+ that client then drops out of every round.
This mod does the same clipping with Flower's own helper and passes a zero update through untouched (its norm
is 0 <= C, nothing to clip).

For adaptive clipping (``--dp-adaptive``) it also reports the one bit the coordinator learns the bound from:
``norm_bit`` = 1 when the update was *not* clipped (norm <= C), the b of Andrew et al. 2021. Flower 1.41's
``adaptiveclipping_mod`` sets the bit when the update *was* clipped, which its wrapper's update rule
(C <- C exp(-lr (fraction - target))) turns the wrong way: a bound below every update shrinks further."""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, KEY_NORM_BIT, compute_clip_model_update

from fedge.core.privacy import update_norm


def clip_update(new: list[np.ndarray], old: list[np.ndarray], clipping_norm: float) -> tuple[list[np.ndarray], bool]:
    """-> (``old + clip(new - old, C)``, whether the update fitted under C); a zero update is returned as is."""
    norm = update_norm(new, old)
    if norm <= clipping_norm:
        return new, True
    out = [np.array(a, copy=True) for a in new]
    compute_clip_model_update(out, old, clipping_norm)
    return out, False


def clipping_when_requested(msg: Message, context: Context, call_next) -> Message:
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    fit_ins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    if KEY_CLIPPING_NORM not in fit_ins.config:
        return call_next(msg, context)
    clipping_norm = float(fit_ins.config[KEY_CLIPPING_NORM])
    received = parameters_to_ndarrays(fit_ins.parameters)
    out = call_next(msg, context)
    if out.has_error():
        return out
    fit_res = compat.recorddict_to_fitres(out.content, keep_input=True)
    sent = parameters_to_ndarrays(fit_res.parameters)
    if len(sent) != len(received):
        raise ValueError(f"central DP clipping needs the whole model back ({len(sent)} of {len(received)} arrays)")
    clipped, fitted = clip_update(sent, received, clipping_norm)
    fit_res.parameters = ndarrays_to_parameters(clipped)
    fit_res.metrics[KEY_NORM_BIT] = int(fitted)
    out.content = compat.fitres_to_recorddict(fit_res, keep_input=True)
    return out
