"""Scenario 6 (across hosts): the coordinator and three customers each in their own network namespace, joined
by veth pairs on a bridge; no loopback between them. The coordinator listens on 10.231.0.1 only and its TLS
certificate names that address. In round 2 one customer's link is cut (link down) and later restored: the
run goes on without it, as with a killed client, and the customer rejoins by itself."""

import subprocess

import pytest

from fedge.cli.cluster import LocalFederation
from fedge.core.procs import fedge_env
from tests.e2e.helpers import json_tail, wait_exit, wait_rounds
from tests.system.netns import Network, unavailable

pytestmark = pytest.mark.system
NAMES = ("acme", "globex", "initech")
WHY_NOT = unavailable()


@pytest.fixture
def network():
    net = Network().start()
    yield net
    net.stop()


@pytest.mark.skipif(WHY_NOT is not None, reason=f"network namespaces: {WHY_NOT}")
def test_federation_across_namespaces_survives_a_cut_link(tmp_path, digits_customers, network, report):
    fed = LocalFederation(tmp_path, host=network.coordinator_ip, netns=network.coordinator_ns)
    try:
        fed.start_coordinator()
        for name, data in zip(NAMES, digits_customers):
            fed.start_client(name, data, "digits", netns=network.add_client(name))
        log = tmp_path / "launch.out"
        launch = subprocess.Popen(
            fed.command(
                "run",
                "launch",
                "--task",
                "digits",
                "--rounds",
                "7",
                "--min-clients",
                "2",
                "--no-secagg",
                "--round-timeout",
                "20",
                "--state",
                str(fed.state),
                "--json",
                netns=network.coordinator_ns,
            ),
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
            env=fedge_env(),
        )
        wait_rounds(fed.state, 1, 1)
        network.cut("initech")  # round 2 is under way
        wait_rounds(fed.state, 1, 2)
        network.restore("initech")
        assert wait_exit(launch, 400) == 0, log.read_text()[-3000:]
        doc = json_tail(log.read_text())
        initech_alive = fed.clients["initech"].poll() is None
    finally:
        fed.stop_all()

    took_part = {r["round"]: r["clients"] for r in doc["rounds"]}
    assert doc["status"] == "completed" and sorted(took_part) == [1, 2, 3, 4, 5, 6, 7]
    assert took_part[1] == sorted(NAMES)  # TLS to 10.231.0.1 verified for every client
    assert took_part[2] == ["acme", "globex"]  # the cut customer is dropped, as if killed
    assert doc["rounds"][1]["failures"]  # and the operator sees why
    rejoined = [rnd for rnd in range(3, 8) if "initech" in took_part[rnd]]
    assert rejoined and initech_alive  # link back: it rejoined by itself
    superlink_log = (fed.state / "logs" / "superlink.log").read_text()
    assert f"{network.coordinator_ip}:" in superlink_log and "10.231.0.1" in fed.address
    report["across_hosts"] = {
        "coordinator": fed.address,
        "rejoined_in_round": rejoined[0],
        "clients_per_round": {str(k): v for k, v in took_part.items()},
        "round_wall_s": [r["wall_s"] for r in doc["rounds"]],
    }
