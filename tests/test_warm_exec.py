"""The warm app launcher (fedge.core.warm_exec): a real zygote process forking Flower's own console scripts."""

import json
import os
import subprocess
import sys

import numpy as np

from fedge.core.warm_exec import ForkingLauncher, _reseed, superexec_command


def _zygote(modules: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fedge.core.warm_exec", "--zygote", modules],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_the_zygote_forks_flowers_entry_point_per_request_and_exits_at_eof():
    zygote = _zygote("json,no_such_module_for_fedge")  # a module that fails to import is reported, not fatal
    requests = [
        {"argv": ["flwr-clientapp", "--help"], "quiet": False},
        {"argv": ["flwr-clientapp", "--help"], "quiet": True},
        {"argv": ["flwr-serverapp", "--help"], "quiet": False},
    ]
    zygote.stdin.write("".join(json.dumps(r) + "\n" for r in requests).encode())  # one write, several lines
    out, err = zygote.communicate(timeout=60)
    assert zygote.returncode == 0, err.decode()
    text = out.decode()
    assert text.count("Run a Flower ClientApp") == 1  # the quiet one printed nothing
    assert "usage: flwr-serverapp" in text
    assert "could not pre-import no_such_module_for_fedge" in err.decode()


def test_a_dead_zygote_means_a_cold_start_and_a_new_zygote(monkeypatch):
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])  # as fedge_env does
    launcher = ForkingLauncher(["json"])
    try:
        first = launcher._zygote
        first.kill()
        first.wait()
        cold = launcher.Popen(["flwr-clientapp", "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert isinstance(cold, subprocess.Popen) and cold.wait(timeout=60) == 0  # Flower's own cold process
        assert launcher._zygote is not first and launcher._zygote.poll() is None
        assert launcher.Popen(["flwr-clientapp", "--help"], stdout=subprocess.DEVNULL) is None  # warm again
    finally:
        launcher.close()
        launcher._zygote.wait(timeout=30)


def test_other_commands_and_the_off_switch_keep_flowers_cold_start(monkeypatch):
    cmd = ["flower-superexec", "--insecure", "--runtime-api-address", "127.0.0.1:9094"]
    assert superexec_command(cmd, ["json"])[1:5] == ["-m", "fedge.core.warm_exec", "json", "--"]
    assert superexec_command(["flower-supernode", "--insecure"], ["json"]) == ["flower-supernode", "--insecure"]
    monkeypatch.setenv("FEDGE_WARM_APPS", "0")
    assert superexec_command(cmd, ["json"]) == cmd


def test_forked_children_draw_different_random_streams():
    np.random.seed(0)
    draws = []
    for _ in range(2):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _reseed()
            os.write(w, np.random.bytes(16))
            os._exit(0)
        os.close(w)
        draws.append(os.read(r, 16))
        os.close(r)
        os.waitpid(pid, 0)
    assert draws[0] != draws[1]
