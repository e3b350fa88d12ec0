"""``fedge edge ...``: serve, install, models, predict, rollback, compile. Imports only the edge runtime."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fedge.edge_runtime.common.errors import ConfigError
from fedge.edge_runtime.serving.backends import BACKENDS
from fedge.edge_runtime.tools.loop_cli import add_feedback_parser, monitor_config, monitor_flags


def cmd_serve(a) -> int:
    from fedge.edge_runtime.common.tls import ServerTLS
    from fedge.edge_runtime.frontends.http_server import HttpLimits
    from fedge.edge_runtime.process.serve import EdgeConfig, serve
    from fedge.edge_runtime.serving.batcher import BatchingConfig, QueuePolicy
    from fedge.edge_runtime.serving.model_repository import ServingConfig
    from fedge.edge_runtime.serving.response_cache import parse_config as parse_cache_config
    from fedge.edge_runtime.serving.tracing import parse_config

    if (a.tls_cert is None) != (a.tls_key is None) or (a.tls_client_ca and not a.tls_cert):
        raise ConfigError("TLS needs --tls-cert and --tls-key together (and --tls-client-ca only with them)")
    if a.pull_max_rate and not a.pull:
        raise ConfigError("--pull-max-rate limits what --pull downloads: give --pull too")
    tls = (
        ServerTLS(Path(a.tls_cert), Path(a.tls_key), Path(a.tls_client_ca) if a.tls_client_ca else None)
        if a.tls_cert
        else None
    )
    trace_file, trace = parse_config(a.trace_config)
    queue = QueuePolicy(a.max_queue_size, a.queue_timeout_us, a.allow_timeout_override)
    cache_bytes = parse_cache_config(a.cache_config)
    if a.load_model and a.model_control_mode != "explicit":
        raise ConfigError(
            "--load-model goes with --model-control-mode explicit (otherwise every installed model serves)"
        )
    serving = ServingConfig(
        backend=a.backend,
        threads=a.threads,
        keep_versions=a.keep,
        explicit=a.model_control_mode == "explicit",
        load_models=tuple(a.load_model),
        batching=BatchingConfig(
            not a.no_batching,
            a.max_batch_size,
            a.max_queue_delay_us,
            a.instances,
            queue,
            response_cache=cache_bytes > 0,
        ),
    )
    cfg = EdgeConfig(
        repo=Path(a.repo),
        trust=Path(a.trust),
        host=a.host,
        port=a.port,
        metrics_port=a.metrics_port,
        http_port=a.http_port,
        serving=serving,
        max_message_bytes=a.max_message_bytes,
        pull=_pull_config(a),
        http=HttpLimits(a.http_header_timeout, a.http_body_timeout, a.http_keepalive_timeout, a.http_max_connections),
        allow_client_shm=a.allow_client_shm,
        tls=tls,
        metrics_tls=a.metrics_tls,
        trace_file=trace_file,
        trace=trace,
        strict_readiness=a.strict_readiness,
        exit_timeout_s=a.exit_timeout_secs,
        cache_bytes=cache_bytes,
        log=_log_flags(a),
        monitor=monitor_config(a),
    )
    return serve(cfg)


def _pull_config(a):
    from fedge.edge_runtime.distribution.puller import PullConfig
    from fedge.edge_runtime.distribution.throttle import parse_rate

    if not a.pull:
        return None
    return PullConfig(
        a.pull,
        Path(a.repo),
        Path(a.trust),
        a.pull_interval,
        parse_rate(a.pull_max_rate) if a.pull_max_rate else 0,
        Path(a.pull_ca) if a.pull_ca else None,
        Path(a.pull_cert) if a.pull_cert else None,
        Path(a.pull_key) if a.pull_key else None,
        a.device_name,
        a.keep,
    )


def cmd_install(a) -> int:
    from fedge.edge_runtime.distribution.bundle import load_public_key
    from fedge.edge_runtime.distribution.repository import install_bundle

    name, version = install_bundle(Path(a.repo), Path(a.bundle), load_public_key(Path(a.trust)), keep=a.keep)
    print(f"installed {name} version {version} into {a.repo} (a running server picks it up by itself)")
    return 0


def cmd_models(a) -> int:
    from fedge.edge_runtime.distribution.manifest import Manifest
    from fedge.edge_runtime.distribution.repository import current_version, model_dirs, versions

    root = Path(a.repo)
    rows = []
    for d in model_dirs(root):
        current = current_version(d)
        m = Manifest.from_json(json.loads((d / str(current) / "manifest.json").read_text())) if current else None
        rows.append(
            {
                "model": d.name,
                "current": current,
                "versions": versions(d),
                "task": m and m.task,
                "run": m and m.lineage.get("run"),
                "round": m and m.lineage.get("round"),
            }
        )
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(
                f"{r['model']}: current {r['current']}, installed {r['versions']}, task {r['task']},"
                f" from run {r['run']} round {r['round']}"
            )
    return 0


def cmd_predict(a) -> int:
    import grpc
    import numpy as np

    from fedge.edge_runtime.tools.grpc_client import EdgeClient
    from fedge.edge_runtime.tools.rest_client import RestClient, RestError

    rest = a.url.startswith(("http://", "https://"))
    client = RestClient(a.url, _client_ssl(a)) if rest else EdgeClient(a.url, tls=_client_tls(a))
    try:
        meta = client.metadata(a.model)
        name = meta.inputs[0].name
        if a.text is not None:
            inputs = {name: np.array([[t.encode()] for t in a.text], dtype=object)}
        else:
            inputs = {name: np.load(a.npy)}
        top = {next(o.name for o in meta.outputs if o.datatype != "BYTES"): a.top} if a.top else None
        out = client.infer(a.model, inputs, version=a.version or "", outputs=top)
    except grpc.RpcError as exc:  # the server's status and message, not a traceback
        print(f"fedge edge predict: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2
    except RestError as exc:
        print(f"fedge edge predict: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
    print(json.dumps({k: (v.astype(str) if v.dtype == object else v).tolist() for k, v in out.items()}))
    return 0


def cmd_perf(a) -> int:
    import grpc
    import numpy as np

    from fedge.edge_runtime.tools import perf

    try:
        levels = [int(c) for c in a.concurrency.split(",")]
        if not levels or min(levels) < 1:
            raise ValueError
    except ValueError:
        print(
            f"fedge edge perf: --concurrency wants positive integers separated by commas, not {a.concurrency!r}",
            file=sys.stderr,
        )
        return 2
    if a.batch < 1 or a.seconds <= 0 or a.warmup < 0:
        print("fedge edge perf: --batch must be at least 1, --seconds above 0 and --warmup at least 0", file=sys.stderr)
        return 2
    rest = a.url.startswith(("http://", "https://"))
    target = perf.HttpTarget(a.url, _client_ssl(a)) if rest else perf.GrpcTarget(a.url, _client_tls(a))
    version = a.version or ""
    try:
        meta = target.metadata(a.model, version)
        inputs = perf.make_inputs(meta, a.batch, np.load(a.npy) if a.npy else None, a.text)
        results = []
        for c in levels:
            level = perf.measure(target, a.model, version, inputs, c, a.seconds, a.warmup).summary()
            results.append(level)
            if not a.json:
                print(
                    f"concurrency {c}: {level['requests_per_s']} requests/s, p50 {level['p50_ms']} ms,"
                    f" {level['failures']} failed",
                    file=sys.stderr,
                )
    except grpc.RpcError as exc:
        print(f"fedge edge perf: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2
    except (perf.PerfError, OSError) as exc:
        print(f"fedge edge perf: {exc}", file=sys.stderr)
        return 2
    finally:
        target.close()
    rows = len(next(iter(inputs.values())))
    if a.json:
        print(
            json.dumps(
                {
                    "model": a.model,
                    "version": version,
                    "url": a.url,
                    "batch": rows,
                    "inputs": {k: [str(v.dtype), list(v.shape)] for k, v in inputs.items()},
                    "seconds": a.seconds,
                    "warmup_seconds": a.warmup,
                    "levels": results,
                }
            )
        )
    else:
        print(
            f"{a.model} at {a.url}, {rows} row(s) per request, {a.seconds:g} s per level after {a.warmup:g} s of"
            " warm-up"
        )
        print(perf.table(results))
    failed = [r for r in results if r["failures"]]
    if failed:
        print(f"fedge edge perf: requests failed, first: {failed[0]['first_failure']}", file=sys.stderr)
        return 1
    return 0


def _client_ssl(a):
    """For an https:// URL: verify the server with ``--tls-ca`` (default: the system's roots), present
    ``--tls-cert``/``--tls-key`` to a server that wants a client certificate."""
    if not a.url.startswith("https://"):
        if a.tls_ca or a.tls_cert or a.tls_key:
            raise ConfigError("--tls-* files go with an https:// URL (or a HOST:PORT gRPC one)")
        return None
    import ssl

    ctx = ssl.create_default_context(cafile=a.tls_ca)
    if a.tls_cert:
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
    return ctx


def _client_tls(a):
    """Channel credentials from ``--tls``/``--tls-ca``/``--tls-cert``/``--tls-key``; None: plaintext."""
    if not (a.tls or a.tls_ca or a.tls_cert or a.tls_key):
        return None
    from fedge.edge_runtime.common.tls import channel_credentials

    return channel_credentials(*(Path(f) if f else None for f in (a.tls_ca, a.tls_cert, a.tls_key)))


def cmd_rollback(a) -> int:
    from fedge.edge_runtime.distribution.repository import rollback

    print(f"{a.model}: now serving version {rollback(Path(a.repo), a.model)} (a running server switches by itself)")
    return 0


def cmd_compile(a) -> int:
    import tempfile

    from fedge.edge_runtime.distribution.bundle import Manifest
    from fedge.edge_runtime.serving.tensorrt_engine import CompileConfig, compile_engine, tensorrt_status

    ok, why = tensorrt_status()
    if not ok:
        print(
            f"fedge edge compile: {why}; the edge runtime will serve the ONNX models with ONNX Runtime instead",
            file=sys.stderr,
        )
        return 3
    src = Path(a.bundle)
    if not src.is_dir():
        from fedge.edge_runtime.distribution.bundle import unpack

        src = unpack(src, Path(tempfile.mkdtemp()))
    manifest = Manifest.from_json(json.loads((src / "manifest.json").read_text()))
    sparse = manifest.sparsity.get("pattern") == "2:4"
    path = compile_engine(
        src,
        manifest,
        Path(a.cache),
        CompileConfig(
            max_batch=min(a.max_batch, manifest.max_batch_size), opt_batch=min(8, a.max_batch), sparse=sparse
        ),
    )
    print(f"engine: {path}")
    return 0


def _log_flags(a) -> tuple:
    """Triton's --log-* flags given, as the logging extension's settings."""
    if a.log_verbose is not None and a.log_verbose < 0:
        raise ConfigError(f"--log-verbose must be >= 0, got {a.log_verbose}")
    given = {
        "log_info": a.log_info,
        "log_warning": a.log_warning,
        "log_error": a.log_error,
        "log_verbose_level": a.log_verbose,
        "log_format": a.log_format,
    }
    return tuple((k, v) for k, v in given.items() if v is not None)


def _boolean(text: str) -> bool:
    """``--allow-client-shm``, ``--allow-client-shm=true`` (Triton's spelling) and ``=false`` all work."""
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("true", "1", "yes", "on")


def add_parser(sub) -> None:
    edge = sub.add_parser("edge", help="the edge runtime (KServe v2 gRPC server)").add_subparsers(
        dest="sub", required=True
    )
    p = edge.add_parser("serve", help="serve a model repository")
    p.add_argument("--repo", required=True)
    p.add_argument("--trust", required=True, help="pinned Ed25519 public key (release.pub) that signs releases")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", "--grpc-port", type=int, default=8001, help="gRPC port (Triton's --grpc-port)")
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument(
        "--http-port",
        type=int,
        default=8000,
        help="KServe v2 REST endpoint (Triton's HTTP protocol: tritonclient.http, curl); 0: none",
    )
    _serving_flags(p)
    _pull_flags(p)
    _access_and_log_flags(p)
    monitor_flags(p)
    p.set_defaults(fn=cmd_serve)
    add_feedback_parser(edge)
    p = edge.add_parser("install", help="verify and install a release bundle (dir or .tar)")
    p.add_argument("bundle")
    p.add_argument("--repo", required=True)
    p.add_argument("--trust", required=True)
    p.add_argument("--keep", type=int, default=3)
    p.set_defaults(fn=cmd_install)
    p = edge.add_parser("models", help="list installed models")
    p.add_argument("--repo", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_models)
    p = edge.add_parser("predict", help="send one request to a running server")
    _client_args(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--text", action="append", help="text input (repeatable: one row each)")
    g.add_argument("--npy", help=".npy file with the input batch")
    p.add_argument(
        "--top",
        type=int,
        default=0,
        metavar="K",
        help="only the K best classes per row, as score:index:label (Triton's classification extension)",
    )
    p.set_defaults(fn=cmd_predict)
    p = edge.add_parser("perf", help="measure a running server's throughput and latency (as Triton's perf_analyzer)")
    _client_args(p)
    p.add_argument(
        "--concurrency",
        default="1,8,64",
        help="client counts to measure, comma-separated (default 1,8,64): each keeps one request outstanding",
    )
    p.add_argument("--seconds", type=float, default=5.0, help="measurement window per level (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each window (default 1)")
    p.add_argument("--batch", type=int, default=1, help="rows per request for made-up inputs (default 1)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--text", action="append", help="text input instead of made-up data (repeatable: one row each)")
    g.add_argument("--npy", help=".npy file with the request's input batch instead of made-up data")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout instead of the table")
    p.set_defaults(fn=cmd_perf)
    p = edge.add_parser("rollback", help="serve the previous installed version")
    p.add_argument("model")
    p.add_argument("--repo", required=True)
    p.set_defaults(fn=cmd_rollback)
    p = edge.add_parser("compile", help="build a TensorRT engine for this device from a bundle")
    p.add_argument("bundle")
    p.add_argument("--cache", default=".fedge-engines")
    p.add_argument("--max-batch", type=int, default=64)
    p.set_defaults(fn=cmd_compile)


def _serving_flags(p) -> None:
    """How models are served: backend, batching, queue policy, model control, cache, shutdown."""
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per model")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--max-queue-delay-us", type=int, default=500)
    p.add_argument("--no-batching", action="store_true")
    p.add_argument(
        "--max-queue-size",
        type=int,
        default=0,
        metavar="N",
        help="requests that may wait for a batched model; one more gets UNAVAILABLE at once (Triton's"
        " queue policy max_queue_size); 0: no limit",
    )
    p.add_argument(
        "--queue-timeout-us",
        type=int,
        default=0,
        metavar="US",
        help="a request that waited longer for its batch gets UNAVAILABLE instead of an answer (Triton's"
        " default_timeout_microseconds, timeout action REJECT); 0: no limit",
    )
    p.add_argument(
        "--allow-timeout-override",
        action="store_true",
        help="let a request's own timeout parameter (tritonclient infer(..., timeout=US)) shorten it",
    )
    p.add_argument(
        "--instances",
        type=int,
        default=0,
        help="batch workers per model running the backend in parallel (Triton's instance count);"
        " default: Triton's, 2 on the CPU backend, 1 on a GPU backend",
    )
    p.add_argument("--keep", type=int, default=3, help="installed versions kept for rollback")
    p.add_argument(
        "--model-control-mode",
        choices=("poll", "explicit"),
        default="poll",
        help="poll (default): every installed model serves, each new version swapped in as it is"
        " installed; explicit (Triton's): only the --load-model models serve, the others once a"
        " client loads them (RepositoryModelLoad, tritonclient load_model) and until it unloads them",
    )
    p.add_argument(
        "--load-model",
        action="append",
        default=[],
        metavar="NAME",
        help="with --model-control-mode explicit: serve this model (repeat for more), from start or"
        " once it is installed; '*': every model installed at start",
    )
    p.add_argument(
        "--cache-config",
        action="append",
        default=[],
        metavar="local,size=BYTES",
        help="answer repeated requests from an in-memory response cache of this many bytes (Triton's"
        " flag; least recently used answers go first). Every model uses it unless its config says"
        ' {"response_cache": {"enable": false}}',
    )
    p.add_argument(
        "--exit-timeout-secs",
        type=float,
        default=30.0,
        metavar="S",
        help="on SIGTERM/SIGINT, answer the requests in flight for at most S seconds before exiting;"
        " a second signal exits at once (default 30, as Triton)",
    )
    p.add_argument("--max-message-bytes", type=int, default=64 << 20)
    p.add_argument(
        "--http-header-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="an HTTP request's headers must arrive within S seconds (408, then closed); default 10",
    )
    p.add_argument(
        "--http-body-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="longest silence while an HTTP request body arrives (408, then closed); default 30",
    )
    p.add_argument(
        "--http-keepalive-timeout",
        type=float,
        default=75.0,
        metavar="S",
        help="an idle keep-alive HTTP connection is closed after S seconds; default 75",
    )
    p.add_argument(
        "--http-max-connections",
        type=int,
        default=1024,
        metavar="N",
        help="open HTTP connections at most; one more is answered 503 and closed (gRPC is not affected); default 1024",
    )


def _pull_flags(p) -> None:
    """Following the coordinator's release service."""
    p.add_argument("--pull", help="coordinator release service HOST:PORT to poll for new releases")
    p.add_argument("--pull-interval", type=float, default=10.0)
    p.add_argument(
        "--pull-max-rate",
        metavar="BYTES/S",
        help="download releases no faster than this (500k, 2M; SI"
        " units), for a device on a metered or shared link; default: no limit",
    )
    p.add_argument("--pull-ca", help="CA certificate of a TLS release service")
    p.add_argument(
        "--pull-cert",
        metavar="PEM",
        help="this device's client certificate, for a release service that"
        " authenticates devices (`fedge certs issue DEVICE --client` on the coordinator)",
    )
    p.add_argument("--pull-key", metavar="PEM", help="its private key")
    p.add_argument(
        "--device-name",
        default="",
        help="this device's name in the coordinator's inventory (`fedge"
        " coordinator devices`; default: the host name); with --pull-cert the certificate's name counts",
    )


def _access_and_log_flags(p) -> None:
    """Who may connect and how (shared memory, TLS), readiness, logging, tracing."""
    p.add_argument(
        "--allow-client-shm",
        nargs="?",
        const=True,
        default=False,
        type=_boolean,
        metavar="true|false",
        help="let clients on this host pass tensors through system shared memory (Triton's extension;"
        " off by default, as in Triton)",
    )
    p.add_argument(
        "--strict-readiness",
        nargs="?",
        const=True,
        default=True,
        type=_boolean,
        metavar="true|false",
        help='server readiness (ServerReady, /v2/health/ready, grpc.health.v1 "") only once every model'
        " that should serve does, as Triton's default; false: ready whenever the server answers",
    )
    p.add_argument(
        "--tls-cert",
        metavar="PEM",
        help="serve gRPC (and HTTP) over TLS with this certificate (chain); e.g. from"
        " `fedge certs issue NAME --hosts ...` (Triton's --grpc-use-ssl)",
    )
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's unencrypted private key")
    p.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        help="mutual TLS: only clients with a certificate this CA signed may connect (Triton's --grpc-use-ssl-mutual)",
    )
    p.add_argument(
        "--metrics-tls",
        action="store_true",
        help="serve the metrics endpoint over TLS too, with --tls-cert/--tls-key (and, with --tls-client-ca,"
        " only to a scraper with a certificate that CA signed); default: plain HTTP, as Triton's",
    )
    for level in ("info", "warning", "error"):
        p.add_argument(
            f"--log-{level}",
            type=_boolean,
            metavar="true|false",
            help=f"write {level} messages (default true; Triton's flag)",
        )
    p.add_argument(
        "--log-verbose",
        type=int,
        metavar="N",
        help="verbose level: >= 1 adds debug messages, the HTTP"
        " access log among them (default 0; Triton's flag; clients change it with update_log_settings)",
    )
    p.add_argument(
        "--log-format", choices=("default", "ISO8601"), help="timestamps: local time (default) or ISO 8601 in UTC"
    )
    p.add_argument(
        "--trace-config",
        action="append",
        default=[],
        metavar="[triton,]SETTING=VALUE",
        help="request tracing, as Triton's flag: triton,file=PATH (where traces go; only here, never over"
        " the network), level=OFF|TIMESTAMPS, rate=N (one request in N), count=N (-1: no limit),"
        " triton,log-frequency=N (write every N traces to PATH.0, PATH.1, ...; 0: at shutdown)",
    )


def _client_args(p) -> None:
    """The flags saying which server and model a client command talks to, and how."""
    p.add_argument("--url", required=True, help="HOST:PORT (gRPC), or http://HOST:PORT / https://HOST:PORT (REST)")
    p.add_argument("--model", required=True)
    p.add_argument("--version")
    p.add_argument("--tls", action="store_true", help="dial the server over TLS (implied by the --tls-* files)")
    p.add_argument("--tls-ca", metavar="PEM", help="CA that signed the server's certificate (default: the system's)")
    p.add_argument("--tls-cert", metavar="PEM", help="this client's certificate, for a server that requires one")
    p.add_argument("--tls-key", metavar="PEM", help="its private key")
