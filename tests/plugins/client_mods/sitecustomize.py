"""Test-only: adds a Flower mod to fedge's ClientApp in the processes of a daemon that a test starts with this
folder on PYTHONPATH (tests/plugins/__init__.py: ``client_mods_env``). Python imports ``sitecustomize`` at start-up
from the path, so every process the daemon starts (SuperNode, SuperExec, its warm zygote, each ClientApp) gets
the hook; a production ``fedge client start`` has no such folder and no code path that records or alters updates.

The hook waits for ``fedge.client.client_app`` to be imported and then wraps its ``app`` with one more mod,
innermost (right around the client's handler, where fedge's trainer used to do this), configured by:
- ``FEDGE_TEST_FAULT``: ``scale:K`` sends global + K * update, ``flip:K`` sends global - K * update, ``nan`` NaNs;
- ``FEDGE_TEST_RECORD=DIR``: each update is also written, unmasked, to DIR/round-RR-NAME.npz (weight, a0, a1, ...)
  so a test can check that the SecAgg+ aggregate equals the plain weighted average of the updates.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

TARGET = "fedge.client.client_app"


class _WrapClientApp(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            from client_mods_impl import with_test_mod

            module.app = with_test_mod(module)

        spec.loader.exec_module = exec_and_wrap
        return spec


sys.meta_path.insert(0, _WrapClientApp())
