"""The serving process's view of the model repository: live models, kept in sync with the files on disk
(fedge.edge_runtime.distribution.repository). When CURRENT changes, the new version is loaded, warmed and swapped in
atomically; requests already running finish on the old one. If loading fails, the old version keeps serving and
the failure is reported in the repository index."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedge.edge_runtime.common.errors import ModelNotFound, ModelUnavailable
from fedge.edge_runtime.distribution.bundle import TrustedKeys, verify_bundle
from fedge.edge_runtime.distribution.repository import (
    CONFIG_PARAMETER,
    check_model_name,
    current_version,
    model_dirs,
    versions,
)
from fedge.edge_runtime.distribution.trust import TrustFile
from fedge.edge_runtime.serving import model_config
from fedge.edge_runtime.serving.backends import Backend
from fedge.edge_runtime.serving.batcher import BatchingConfig
from fedge.edge_runtime.serving.model import LoadedModel

log = logging.getLogger("fedge.edge")


@dataclass(frozen=True)
class ServingConfig:
    backend: str = "auto"
    batching: BatchingConfig = BatchingConfig()  # noqa: RUF009 (frozen and shared by design: the default policy)
    threads: int = 1  # intra-op threads per backend session
    keep_versions: int = 3  # installed versions kept for rollback
    explicit: bool = False  # Triton's --model-control-mode=explicit: only ``load_models`` and loads serve
    load_models: tuple[str, ...] = ()  # Triton's --load-model: served once installed; "*": every model at start
    # each loaded Backend passes through this before it serves (tests put a slowed or failing one in its place)
    wrap_backend: Callable[[Backend], Backend] | None = None


class ModelRepository:
    """The serving process's view: live models, kept in sync with the files by :meth:`refresh`."""

    def __init__(
        self, root: Path, trusted: TrustedKeys | TrustFile, cfg: ServingConfig, on_batch=None, on_load=None
    ) -> None:
        """``on_batch(model_name)`` returns a (rows, queued_s) callback; ``on_load(model)`` is told of swaps.
        ``trusted``: a TrustFile makes versions refused under the keys it held before get verified again once
        the file changes (a rotated signing key)."""
        self.root, self.trusted, self.cfg = Path(root), trusted, cfg
        self._trusted_keys = trusted.current()  # what loads were verified against; a change retries refusals
        self._on_batch, self._on_load = on_batch, on_load
        self.root.mkdir(parents=True, exist_ok=True)
        self._live: dict[str, LoadedModel] = {}
        self._failed: dict[tuple[str, int], str] = {}
        self._unloaded: set[str] = set()
        # explicit model control: the models to serve (the others wait for RepositoryModelLoad); None: every one
        self._wanted: set[str] | None = None
        if cfg.explicit:
            self._wanted = set(self.names()) if "*" in cfg.load_models else set(cfg.load_models)
        self._loading: set[str] = set()
        self._batching: dict[str, BatchingConfig] = {}  # set by RepositoryModelLoad's config, until the next load
        self._lock = threading.RLock()

    # -- lookups ---------------------------------------------------------------------------------------------
    def get(self, name: str, version: str = "") -> LoadedModel:
        check_model_name(name, version)
        with self._lock:
            model = self._live.get(name)
        if model is None:
            if name in self._loading:
                raise ModelUnavailable(f"model {name!r} is loading")
            if name in self._unloaded:
                raise ModelUnavailable(f"model {name!r} is unloaded (RepositoryModelLoad serves it again)")
            if not self._serves(name) and (self.root / name).is_dir():
                raise ModelUnavailable(
                    f"model {name!r} is not loaded (explicit model control: RepositoryModelLoad loads it)"
                )
            failed = self._failure(name)
            if failed:
                raise ModelUnavailable(f"model {name!r} failed to load: {failed}")
            raise ModelNotFound(f"unknown model {name!r}")
        if version and version != str(model.version):
            if version.isdigit() and int(version) in versions(self.root / name):
                raise ModelUnavailable(
                    f"model {name!r} version {version} is installed but not loaded (serving {model.version})"
                )
            raise ModelNotFound(f"model {name!r} has no version {version!r} (serving {model.version})")
        return model

    def live(self) -> list[LoadedModel]:
        """The versions being served, by model name."""
        with self._lock:
            return [self._live[n] for n in sorted(self._live)]

    def unready(self) -> dict[str, str]:
        """Models that should serve and do not (loading, or no version could be loaded): name -> why. Explicitly
        unloaded models are not counted; nor is a model whose new version failed while its old one serves."""
        out = {}
        for name in self.names():
            if not self._serves(name) or name in self._live or current_version(self.root / name) is None:
                continue
            failed = self._failure(name)
            out[name] = "loading" if name in self._loading else f"failed to load: {failed}" if failed else "not loaded"
        return out

    def _serves(self, name: str) -> bool:
        """Whether ``name`` should be served: not unloaded, and under explicit model control, asked for."""
        return name not in self._unloaded and (self._wanted is None or name in self._wanted)

    def _failure(self, name: str) -> str | None:
        """Why the last version of ``name`` that failed to load did, if one did."""
        failed = [why for (n, _), why in self._failed.items() if n == name]
        return failed[-1] if failed else None

    def names(self) -> list[str]:
        return [p.name for p in model_dirs(self.root)]

    def index(self) -> list[dict]:
        rows = []
        for name in self.names():
            live = self._live.get(name)
            for v in versions(self.root / name):
                if live is not None and live.version == v:
                    state, reason = "READY", f"backend {live.backend.name}: {live.backend.reason}"
                elif (name, v) in self._failed:
                    state, reason = "UNAVAILABLE", self._failed[(name, v)]
                elif not self._serves(name):
                    state, reason = "UNAVAILABLE", "unloaded"
                else:
                    state, reason = "UNAVAILABLE", "installed, not serving"
                rows.append({"name": name, "version": str(v), "state": state, "reason": reason})
        return rows

    # -- syncing with the files ------------------------------------------------------------------------------
    def refresh(self, only: str | None = None) -> None:
        if (keys := self.trusted.current()) is not self._trusted_keys:
            self._trusted_keys = keys
            self._failed.clear()  # what the old keys refused (or anything else) gets one more try
        for name in [only] if only else self.names():
            if not self._serves(name):
                continue
            want = current_version(self.root / name)
            live = self._live.get(name)
            if want is None or (live is not None and live.version == want) or (name, want) in self._failed:
                continue
            self._load(name, want)
            if name not in self._live:
                self._fall_back(name, want)

    def _fall_back(self, name: str, failed: int) -> None:
        """Nothing serves ``name`` and its CURRENT version failed to load (at a start: a version damaged on the
        device, or one a power cut left half written): serve the newest kept version before it that loads, as a
        running server keeps serving the old version when a new one fails. CURRENT is left as it is: a new
        install or `fedge edge rollback` decides what serves next."""
        for version in reversed([v for v in versions(self.root / name) if v < failed]):
            if (name, version) in self._failed:
                continue
            self._load(name, version)
            if name in self._live:
                log.warning(
                    "model %s: version %s (CURRENT) failed to load; serving kept version %s instead until"
                    " a new version is installed or the model is rolled back",
                    name,
                    failed,
                    version,
                )
                return

    def _load(self, name: str, version: int) -> None:
        bundle = self.root / name / str(version)
        self._loading.add(name)
        try:
            manifest = verify_bundle(bundle, self.trusted)  # files on disk may have been tampered with since install
            batching, where = self.batching_for(name)
            if where:
                model_config.check_fits(batching, manifest.max_batch_size, name, where)
            model = LoadedModel.load(
                name,
                version,
                bundle,
                manifest,
                self.cfg.backend,
                batching,
                self.cfg.threads,
                self._on_batch(name) if self._on_batch else None,
                engine_cache=self.root / ".engines",
                wrap_backend=self.cfg.wrap_backend,
            )
        except Exception as exc:
            self._failed[(name, version)] = f"{type(exc).__name__}: {exc}"
            log.error(
                "model %s version %s failed to load%s: %s",
                name,
                version,
                ", the version serving keeps serving" if name in self._live else "",
                exc,
            )
            return
        finally:
            self._loading.discard(name)
        with self._lock:
            old, self._live[name] = self._live.get(name), model
        log.info("serving %s version %s on %s (%s)", name, version, model.backend.name, model.backend.reason)
        if self._on_load is not None:
            self._on_load(model)
        if old is not None:
            threading.Thread(target=old.close, daemon=True).start()  # drains its queue, then stops

    def load(self, name: str, config: str | None = None) -> None:
        """Serve ``name`` again after an unload, or reload it as Triton does for a loaded model: with ``config``
        (model config JSON; its batching settings hold until the next load) or with the model's config.json and
        the server's flags. A reload swaps like a new version: in-flight requests finish on the old one."""
        check_model_name(name)
        if not (self.root / name).is_dir():
            raise ModelNotFound(f"unknown model {name!r}")
        if config is not None:
            batching = model_config.parse(config, name, self.cfg.batching, CONFIG_PARAMETER)
            live = self._live.get(name)
            if live is not None:  # refused before the reload (the reload checks it too, against the new release)
                model_config.check_fits(batching, live.manifest.max_batch_size, name, CONFIG_PARAMETER)
            self._batching[name] = batching
        else:
            self._batching.pop(name, None)
        self._unloaded.discard(name)
        if self._wanted is not None:
            self._wanted.add(name)
        self._failed = {k: v for k, v in self._failed.items() if k[0] != name}
        want = current_version(self.root / name)
        if want is not None:
            self._load(name, want)
        if want is None or (name, want) in self._failed or name not in self._live:
            self._batching.pop(name, None)
            why = self._failed.get((name, want), self.index()) if want is not None else "no version installed"
            raise ModelUnavailable(f"model {name!r} failed to load: {why}")

    def batching_for(self, name: str) -> tuple[BatchingConfig, str]:
        """The load's config, else the model's config.json in the repository, else the server's flags; with
        where it came from ("" for the flags)."""
        if name in self._batching:
            return self._batching[name], CONFIG_PARAMETER
        path = self.root / name / model_config.FILE
        if path.is_file():
            return model_config.parse(path.read_text(encoding="utf-8"), name, self.cfg.batching, str(path)), str(path)
        return self.cfg.batching, ""

    def unload(self, name: str) -> None:
        check_model_name(name)
        with self._lock:
            model = self._live.pop(name, None)
        if model is None and not (self.root / name).is_dir():
            raise ModelNotFound(f"unknown model {name!r}")
        self._unloaded.add(name)
        if self._wanted is not None:
            self._wanted.discard(name)
        if model is not None:
            model.close()

    def close(self) -> None:
        for model in list(self._live.values()):
            model.close()
