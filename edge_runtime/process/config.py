"""``fedge edge serve``'s configuration: one frozen object, validated on construction, built by the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fedge.edge_runtime.common.errors import ConfigError
from fedge.edge_runtime.common.tls import ServerTLS
from fedge.edge_runtime.distribution.puller import PullConfig
from fedge.edge_runtime.frontends.http_server import HttpLimits
from fedge.edge_runtime.monitoring.monitor import MonitorConfig
from fedge.edge_runtime.serving.model_repository import ServingConfig
from fedge.edge_runtime.serving.tracing import TraceSettings


@dataclass(frozen=True)
class EdgeConfig:
    repo: Path
    trust: Path  # the pinned Ed25519 public key of the release signer
    host: str = "0.0.0.0"
    port: int = 8001
    metrics_port: int = 8002  # 0: no metrics endpoint
    http_port: int = 8000  # KServe v2 REST (Triton's HTTP port); 0: no HTTP endpoint
    serving: ServingConfig = field(default_factory=ServingConfig)
    max_message_bytes: int = 64 << 20  # larger requests get RESOURCE_EXHAUSTED (Triton's default)
    http: HttpLimits = field(default_factory=HttpLimits)  # timeouts and connection limit of the REST endpoint
    workers: int = 8  # threads for unbatched inference and model loading
    pull: PullConfig | None = None  # follow the coordinator's release service; None = air-gapped
    allow_client_shm: bool = False  # Triton's system shared memory, for clients on this host only
    tls: ServerTLS | None = None  # gRPC and HTTP; None: plaintext (Triton's default)
    metrics_tls: bool = False  # the metrics endpoint too, with ``tls``'s certificate and client CA
    trace_file: Path | None = None  # Triton's --trace-config triton,file=...; None: no tracing
    trace: TraceSettings = field(default_factory=TraceSettings)
    strict_readiness: bool = True  # Triton's default: not ready while a model that should serve does not
    exit_timeout_s: float = 30.0  # Triton's --exit-timeout-secs: how long stopping waits for requests
    cache_bytes: int = 0  # Triton's --cache-config local,size=N: the response cache; 0: none
    log: tuple[tuple[str, bool | int | str], ...] = ()  # log settings to start with (Triton's --log-* flags)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)  # health signals and feedback capture

    def __post_init__(self) -> None:
        if not all(0 <= p < 65536 for p in (self.port, self.metrics_port, self.http_port)):
            raise ConfigError("ports must be in [0, 65535]")
        if self.exit_timeout_s < 0:
            raise ConfigError("the exit timeout must be >= 0 seconds")
        if self.monitor.feedback_store is not None and not self.monitor.enabled:
            raise ConfigError("--feedback-store needs monitoring (it is what matches corrections to answers)")
        if self.metrics_tls and (self.tls is None or not self.metrics_port):
            raise ConfigError(
                "--metrics-tls serves the metrics endpoint with the server's certificate: it needs"
                " --tls-cert and --tls-key, and a --metrics-port"
            )
