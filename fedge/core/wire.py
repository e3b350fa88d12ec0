"""The wire contract between the coordinator and the customers' ClientApps, defined once and imported by both
sides: the keys of the fit config the coordinator sends each round, of the metrics each customer sends back, and
the records that carry export jobs (federated calibration, the accuracy gate) and their answers, and the typed
failures a round records (kind and node as fields, never parsed back out of a message)."""

from __future__ import annotations

from enum import Enum

from fedge.core.tasks.base import TaskKey  # part of the wire contract, defined beside the tasks

__all__ = [
    "JOB_RECORD",
    "JOB_RESULT_RECORD",
    "Failure",
    "FailureKind",
    "FitKey",
    "JobKey",
    "JobKind",
    "MetricKey",
    "TaskKey",
]

JOB_RECORD = "fedge-job"  # ConfigRecord of a QUERY message: one export job for a customer
JOB_RESULT_RECORD = "fedge-job-result"  # ConfigRecord of its answer


class JobKind:
    CALIBRATE_MINMAX = "calibrate-minmax"  # per-tensor activation ranges on the customer's training data
    CALIBRATE_HIST = "calibrate-hist"  # per-tensor histograms over edges the coordinator chose
    GATE = "gate"  # FP32 and INT8 accuracy and agreement on the customer's holdout


class JobKey:
    """Keys of the job record and of its answer."""

    KIND = "kind"  # a JobKind
    TASK = "task"
    MODEL = "model"  # the ONNX model to calibrate (bytes)
    EDGES = "edges"  # calibrate-hist: histogram edges per tensor, JSON
    ABSOLUTE = "absolute"  # calibrate-hist: histograms of |x|
    KINDS = "kinds"  # gate: the model variants sent, JSON list; each as model_of(kind)
    REFERENCE_ROWS = "reference-rows"  # gate: holdout rows to also evaluate by the ONNX specification (onnx.reference)
    PREVIOUS = "previous"  # gate of a run from a release: that release's served model, as model_of(PREVIOUS)
    CUSTOMER = "customer"  # in the answer: who answered
    RESULT = "result"  # in the answer: the job's statistics, JSON

    @staticmethod
    def model_of(kind: str) -> str:
        return f"model-{kind}"


class FitKey:
    """Keys of the fit (and evaluate) config the coordinator sends each round."""

    TASK = "task"
    ROUND = "round"
    FREEZE = "freeze"  # comma-separated parameter-name patterns that stay frozen
    SEED = "seed"
    HOLD_SPARSITY = "hold-sparsity"  # recovery after pruning: zeros stay zeros
    LOCAL_EPOCHS = "local-epochs"
    BATCH_SIZE = "batch-size"
    LR = "lr"
    PROXIMAL_MU = "proximal-mu"
    EVALUATE_INCOMING = "evaluate-incoming"  # evaluate the incoming global model on the holdout before training
    # privacy: what a customer's guard needs to price the round before it trains
    RUN = "fedge-run"
    PLANNED_ROUNDS = "planned-rounds"
    DP_NOISE = "dp-noise"
    DP_CLIP = "dp-clip"
    DP_SGD = "dp-sgd"
    DP_SGD_NOISE = "dp-sgd-noise"
    DP_SGD_CLIP = "dp-sgd-clip"
    DP_SGD_EPSILON = "dp-sgd-epsilon"


class MetricKey:
    """Keys of the metrics a customer sends back with its update or its evaluation."""

    CUSTOMER = "customer"
    TRAIN_LOSS = "train_loss"
    EVAL_LOSS = "eval_loss"  # the incoming model on the holdout (the previous round's accuracy)
    EVAL_ACCURACY = "eval_accuracy"
    EVAL_EXAMPLES = "eval_examples"
    EVAL_PREFIX = "eval_"
    ACCURACY = "accuracy"  # the final model's evaluate exchange
    REFUSED = "refused"  # why the customer's privacy guard refused the round (nothing trained)
    DP_MECHANISM = "dp_mechanism"
    DP_EPSILON = "dp_epsilon"
    DP_DELTA = "dp_delta"
    DP_NOISE = "dp_noise"
    SENT_BYTES = "sent_bytes"  # bytes of the arrays the customer sent back (before SecAgg+ masking)


class FailureKind(str, Enum):
    """What went wrong for one customer in a round, as a typed field (a failure's text is for people)."""

    NO_REPLY = "no-reply"  # no reply within the round's timeout
    ERROR = "error"  # the customer's app raised: Flower's error reply (its DataError, BaseModelError, ...)
    STATUS = "status"  # a reply whose status is not OK
    NO_UPDATE = "no-update"  # sampled, answered nothing: SecAgg+ leaves such a node out without an error
    ROUND = "round"  # the round itself: an attempt that halted or fell short (no node to blame)


class Failure(str):
    """One failure of a round: its text is the operator's line (what rounds record and people read, so a Failure is
    a ``str``), and its kind, node and stage are typed fields that code reads instead of parsing the text. ``node``
    is the Flower node id where it is known (a SecAgg+ stage reports an error reply without its sender); ``detail``
    is the text without the node."""

    kind: FailureKind
    node: int | None
    detail: str
    stage: str

    def __new__(cls, kind: FailureKind, node: int | None, detail: str, stage: str = "fit") -> Failure:
        text = detail if node is None or kind is FailureKind.NO_UPDATE else f"node {node}: {detail}"
        self = super().__new__(cls, f"evaluate: {text}" if stage == "evaluate" else text)
        self.kind, self.node, self.detail, self.stage = kind, node, detail, stage
        return self

    def __reduce__(self):  # pickles (and copies) as a Failure, not as the bare text
        return (Failure, (self.kind, self.node, self.detail, self.stage))

    def same_as(self, other: Failure) -> bool:
        """The same error seen twice (by the strategy and by the grid): same text, and the same node where both
        know it."""
        return self.detail == other.detail and (self.node is None or other.node is None or self.node == other.node)
