"""Scenario 3 (security): clients the coordinator must not let in, with real processes on 127.0.0.1.

An unregistered key, a plaintext client, a client trusting another CA, and Fleet requests carrying a stale
or forged SuperNode signature are all refused; each refusal is written to the coordinator's own log; then a
round runs and only the two legitimate customers take part (nothing the refused ones sent was aggregated).
"""

import datetime
import json
import re
from base64 import b64encode

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

from fedge.cli.cluster import LocalFederation
from tests.conftest import run_fedge
from tests.e2e.helpers import wait_exit

pytestmark = pytest.mark.system
LEGIT = ("acme", "globex")


@pytest.fixture(scope="module")
def federation(tmp_path_factory, digits_customers):
    fed = LocalFederation(tmp_path_factory.mktemp("fed-security"))
    fed.start_coordinator()
    for name, data in zip(LEGIT, digits_customers):
        fed.start_client(name, data, "digits")
    yield fed
    fed.stop_all()


def coordinator_log(fed: LocalFederation) -> str:
    return (fed.state / "logs" / "superlink.log").read_text(errors="replace")


def refused_client(fed: LocalFederation, name: str, data, **kwargs) -> str:
    """Start a daemon that must fail to join; -> its log. It never gets a SuperNode ID."""
    proc = fed.start_client(name, data, "digits", extra=["--max-restarts", "0", "--connect-retries", "2"], **kwargs)
    assert wait_exit(proc, 90) != 0
    fed.clients.pop(name)
    supernode_log = (fed.root / "clients" / name / "logs" / "supernode.log").read_text()
    assert "SuperNode ID" not in supernode_log
    return (fed.root / "logs" / f"client-{name}.out").read_text()


def test_unregistered_key_is_refused_and_logged(federation, digits_customers):
    log = refused_client(federation, "intruder", digits_customers[0], register=False)
    assert "refused by the coordinator" in log and "Failed to activate SuperNode" in log
    assert "Attempted to register SuperNode with public key" in coordinator_log(federation)
    assert "No SuperNode found with the given public key" in coordinator_log(federation)


def test_plaintext_client_is_refused_and_logged(federation, digits_customers):
    log = refused_client(federation, "plaintext", digits_customers[0], insecure=True)
    # the TLS server either closes or resets the plaintext HTTP/2 handshake, depending on timing
    assert (
        "refused by the coordinator: Server disconnected without sending a response" in log
        or "refused by the coordinator: [Errno 104] Connection reset by peer" in log
    ), log
    assert re.search(
        r"refused a TLS connection from 127\.0\.0\.1:\d+: handshake failed \(SSLError: "
        r"(HTTP_REQUEST|WRONG_VERSION_NUMBER)",
        coordinator_log(federation),
    ), coordinator_log(federation)


def test_client_trusting_another_ca_is_refused_and_logged(federation, digits_customers, tmp_path):
    """A bundle from a different CA (a forged coordinator, or the wrong deployment) never connects: the
    coordinator's certificate does not verify against it, so nothing is ever sent."""
    from fedge.server.certs import init_certs

    bundle = init_certs(tmp_path / "other-ca", clients=1).client_dir("client-0")
    log = refused_client(federation, "foreign", digits_customers[0], certs=bundle)
    assert "refused by the coordinator" in log and "CERTIFICATE_VERIFY_FAILED" in log, log
    assert re.search(
        r"refused a TLS connection from 127\.0\.0\.1:\d+: handshake failed \(SSLError: "
        r"TLSV1_ALERT_\w+",
        coordinator_log(federation),
    ), coordinator_log(federation)


class SignedHeaders:
    """Fleet HTTP interceptor that signs like a SuperNode, but with a chosen timestamp and key: a replayed
    (stale) request, or a request claiming a registered public key signed with another private key."""

    def __init__(self, claimed_public: bytes, signing_key, age_s: float) -> None:
        self.claimed, self.key, self.age = claimed_public, signing_key, age_s

    def intercept(self, context, call_next):
        from flwr.common.constant import TIMESTAMP_HEADER
        from flwr.supercore.constant import FLEET_HTTP_PUBLIC_KEY_HEADER, FLEET_HTTP_SIGNATURE_HEADER
        from flwr.supercore.interceptors.http.utils import add_headers
        from flwr.supercore.primitives.asymmetric import sign_message

        stamp = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=self.age)).isoformat()
        add_headers(
            context.request,
            {
                FLEET_HTTP_PUBLIC_KEY_HEADER: b64encode(self.claimed).decode("ascii"),
                TIMESTAMP_HEADER: stamp,
                FLEET_HTTP_SIGNATURE_HEADER: b64encode(sign_message(self.key, stamp.encode("ascii"))).decode("ascii"),
            },
        )
        return call_next(context)


@pytest.mark.parametrize("case", ["stale", "forged", "fresh"])
def test_stale_or_forged_signatures_are_refused(federation, case):
    """A registered key (of a customer whose daemon is not running), its request replayed 10 minutes late or
    signed by someone else's private key -> 401, logged; the same request signed now is accepted (so the
    refusals are not a broken harness), and the node is deactivated again."""
    from flwr.proto.fleet_pb2 import ActivateNodeRequest, DeactivateNodeRequest
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes
    from flwr.supernode.fleet_http_client import FleetHttpClient

    bundle = federation.client_bundle("spare")  # registered once, its daemon never started
    owner = load_ssh_private_key((bundle / "supernode.key").read_bytes(), None)
    claimed = public_key_to_bytes(owner.public_key())
    signer = ec.generate_private_key(ec.SECP384R1()) if case == "forged" else owner
    age = 600 if case == "stale" else 0
    refusals = coordinator_log(federation).count('/v1/fleet/activate-node HTTP/1.1" 401')
    client = FleetHttpClient.from_server_address(
        federation.address,
        False,
        (federation.certs / "ca.crt").read_bytes(),
        interceptors=[SignedHeaders(claimed, signer, age)],
    )
    with client:
        request = ActivateNodeRequest(public_key=claimed, heartbeat_interval=10)
        if case == "fresh":
            node_id = client.ActivateNode(request).node_id
            assert node_id != 0
            client.DeactivateNode(DeactivateNodeRequest(node_id=node_id))
            return
        with pytest.raises(httpx.HTTPStatusError) as err:
            client.ActivateNode(request)
    assert err.value.response.status_code == 401
    assert coordinator_log(federation).count('/v1/fleet/activate-node HTTP/1.1" 401') == refusals + 1


def test_only_legitimate_customers_reach_aggregation(federation, report):
    out = run_fedge(
        "run",
        "launch",
        "--task",
        "digits",
        "--rounds",
        "1",
        "--min-clients",
        "2",
        "--no-secagg",
        "--state",
        str(federation.state),
        "--json",
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (rnd,) = json.loads(out.stdout)["rounds"]
    assert rnd["clients"] == sorted(LEGIT) and set(rnd["client_metrics"]) == set(LEGIT)
    nodes = json.loads(run_fedge("coordinator", "nodes", "--state", str(federation.state)).stdout)
    online = {int(n["node-id"]) for n in nodes if n["status"] == "online"}
    assert online == {m["node_id"] for m in rnd["client_metrics"].values()}, nodes
    log = coordinator_log(federation)
    report["security"] = {
        "round_clients": rnd["clients"],
        "coordinator_log": {
            "tls_handshakes_refused": log.count("refused a TLS connection"),
            "unregistered_key_refused": log.count("No SuperNode found with the given public key"),
            "signature_401": log.count('/v1/fleet/activate-node HTTP/1.1" 401'),
        },
    }
