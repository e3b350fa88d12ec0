"""Per-model serving settings, in the terms of Triton's model configuration (the part of it that is the operator's to
choose): ``max_batch_size``, ``dynamic_batching.max_queue_delay_microseconds``, its ``default_queue_policy``
(``max_queue_size``, ``default_timeout_microseconds``, ``allow_timeout_override``, ``timeout_action`` REJECT),
its ``priority_levels``, ``default_priority_level`` and ``priority_queue_policy`` (a queue policy per level, keyed
by the level; a field a level's policy leaves out is off, as in Triton), ``instance_group[].count`` and
``response_cache.enable``. They
come as JSON in RepositoryModelLoad's ``config`` parameter (tritonclient ``load_model(name, config=...)``) or in
``config.json`` beside the model's versions in the repository, and override the server's flags for that model. As
in Triton, a config without ``dynamic_batching`` serves the model without batching. Inputs, outputs and model files
come from the signed bundle only."""

from __future__ import annotations

import json

from fedge.edge_runtime.common.errors import InvalidInput
from fedge.edge_runtime.serving.batcher import BatchingConfig, QueuePolicy

FILE = "config.json"
KEYS = ("name", "max_batch_size", "dynamic_batching", "instance_group", "response_cache")
BATCHING_KEYS = (
    "max_queue_delay_microseconds",
    "default_queue_policy",
    "priority_levels",
    "default_priority_level",
    "priority_queue_policy",
)
POLICY_KEYS = ("max_queue_size", "default_timeout_microseconds", "allow_timeout_override", "timeout_action")


def parse(text: str, model: str, defaults: BatchingConfig, where: str) -> BatchingConfig:
    """``where`` names the source in errors ("config.json of 'digits'", "the config parameter")."""
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{where}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(cfg, dict):
        raise InvalidInput(f"{where}: expected a JSON object")
    unknown = sorted(set(cfg) - set(KEYS))
    if unknown:
        raise InvalidInput(
            f"{where}: fedge takes {list(KEYS[1:])} from a model config, not {unknown} (inputs,"
            " outputs and model files come from the signed bundle)"
        )
    if cfg.get("name", model) != model:
        raise InvalidInput(f"{where}: config names model {cfg['name']!r}, not {model!r}")
    batching = cfg.get("dynamic_batching")
    if batching is not None and (not isinstance(batching, dict) or set(batching) - set(BATCHING_KEYS)):
        raise InvalidInput(f"{where}: dynamic_batching takes only {list(BATCHING_KEYS)}")
    delay = _count(
        where,
        "dynamic_batching.max_queue_delay_microseconds",
        (batching or {}).get("max_queue_delay_microseconds", defaults.max_queue_delay_us),
        0,
    )
    queue = _queue_policy((batching or {}).get("default_queue_policy", {}), defaults.queue, where)
    levels, default_level, per_level = _priorities(batching or {}, where)
    groups = cfg.get("instance_group")
    if groups is not None and (
        not isinstance(groups, list)
        or not groups
        or not all(isinstance(g, dict) and set(g) <= {"count", "kind"} for g in groups)
    ):
        raise InvalidInput(f'{where}: instance_group must be a list of {{"count": N}} (the backend picks the kind)')
    instances = (
        sum(_count(where, "instance_group.count", g.get("count", 1), 1) for g in groups)
        if groups is not None
        else defaults.instances
    )
    cache = cfg.get("response_cache", {"enable": defaults.response_cache})
    if not isinstance(cache, dict) or set(cache) - {"enable"} or not isinstance(cache.get("enable", False), bool):
        raise InvalidInput(f'{where}: response_cache must be {{"enable": true|false}}')
    return BatchingConfig(
        enabled=batching is not None,
        max_batch_size=_count(where, "max_batch_size", cfg.get("max_batch_size", defaults.max_batch_size), 1),
        max_queue_delay_us=delay,
        instances=instances,
        queue=queue,
        response_cache=cache.get("enable", False),
        priority_levels=levels,
        default_priority_level=default_level,
        priority_queue_policy=per_level,
    )


def _priorities(batching: dict, where: str) -> tuple[int, int, tuple[tuple[int, QueuePolicy], ...]]:
    """(priority_levels, default_priority_level, ((level, its queue policy), ...)), checked as Triton does."""
    levels = _count(where, "dynamic_batching.priority_levels", batching.get("priority_levels", 0), 0)
    default = _count(where, "dynamic_batching.default_priority_level", batching.get("default_priority_level", 0), 0)
    policies = batching.get("priority_queue_policy", {})
    if not levels:
        if default or policies:
            raise InvalidInput(
                f"{where}: dynamic_batching.default_priority_level and priority_queue_policy need priority_levels >= 1"
            )
        return 0, 0, ()
    if not 1 <= default <= levels:
        raise InvalidInput(
            f"{where}: dynamic_batching.default_priority_level must be in [1, {levels}] (the"
            f" priority_levels), got {default}"
        )
    if not isinstance(policies, dict):
        raise InvalidInput(f"{where}: dynamic_batching.priority_queue_policy must map a level to a queue policy")
    per_level = []
    for key, policy in policies.items():
        level = int(key) if isinstance(key, str) and key.isdigit() else None
        if level is None or not 1 <= level <= levels:
            raise InvalidInput(
                f"{where}: dynamic_batching.priority_queue_policy: {key!r} is not a priority level (1 to {levels})"
            )
        per_level.append(
            (level, _queue_policy(policy, QueuePolicy(), where, f"dynamic_batching.priority_queue_policy.{level}"))
        )
    return levels, default, tuple(sorted(per_level, key=lambda p: p[0]))


def _queue_policy(
    policy, defaults: QueuePolicy, where: str, key: str = "dynamic_batching.default_queue_policy"
) -> QueuePolicy:
    if not isinstance(policy, dict) or set(policy) - set(POLICY_KEYS):
        raise InvalidInput(f"{where}: {key} takes only {list(POLICY_KEYS)}")
    if policy.get("timeout_action", "REJECT") != "REJECT":
        raise InvalidInput(
            f"{where}: {key}.timeout_action: fedge refuses a request that waited too long (REJECT);"
            f" {policy['timeout_action']!r} is not supported"
        )
    override = policy.get("allow_timeout_override", defaults.allow_timeout_override)
    if not isinstance(override, bool):
        raise InvalidInput(f"{where}: {key}.allow_timeout_override must be true or false")
    return QueuePolicy(
        _count(where, f"{key}.max_queue_size", policy.get("max_queue_size", defaults.max_queue_size), 0),
        _count(
            where,
            f"{key}.default_timeout_microseconds",
            policy.get("default_timeout_microseconds", defaults.timeout_us),
            0,
        ),
        override,
    )


def check_fits(batching: BatchingConfig, release_max: int, model: str, where: str) -> None:
    """A model's own config may not ask for larger batches than its release was built for (the server's
    ``--max-batch-size`` flag, a default for every model, is capped to it instead)."""
    if batching.max_batch_size > release_max:
        raise InvalidInput(
            f"{where}: max_batch_size {batching.max_batch_size} exceeds the {release_max} that"
            f" model {model!r}'s release allows"
        )


def _count(where: str, key: str, value, minimum: int) -> int:
    """An integer >= ``minimum``; Triton's own JSON (get_model_config) writes 64-bit integers as strings."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{where}: {key} must be an integer >= {minimum}, got {value!r}")
    return value
