"""Bundle trust: signature, hashes, archive confinement; a refused bundle installs nothing."""

import io
import json
import shutil
import tarfile

import pytest

from fedge.edge_runtime.common.errors import BundleError
from fedge.edge_runtime.distribution.bundle import (
    archive_bytes,
    generate_keys,
    load_public_key,
    pack,
    pack_chunks,
    unpack,
    verify_bundle,
)
from fedge.edge_runtime.distribution.repository import current_version, install_bundle, rollback, versions


def _copy(src, tmp_path, name="b"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def test_signed_bundle_verifies_and_installs_atomically(tmp_path, keys, digits_bundle):
    manifest = verify_bundle(digits_bundle, load_public_key(keys[1]))
    assert manifest.model == "digits" and set(manifest.files) == {"model.fp32.onnx"}
    repo = tmp_path / "repo"
    assert install_bundle(repo, digits_bundle, load_public_key(keys[1])) == ("digits", 1)
    assert install_bundle(repo, pack(digits_bundle) and _tar(digits_bundle, tmp_path), load_public_key(keys[1])) == (
        "digits",
        2,
    )
    assert current_version(repo / "digits") == 2
    assert rollback(repo, "digits") == 1 and current_version(repo / "digits") == 1
    assert not [p for p in repo.iterdir() if p.name.startswith(".staging")]


def _tar(bundle, tmp_path):
    path = tmp_path / "bundle.tar"
    path.write_bytes(pack(bundle))
    return path


@pytest.mark.parametrize(
    "tamper, message",
    [
        (
            lambda b: (b / "model.fp32.onnx").write_bytes((b / "model.fp32.onnx").read_bytes()[:-1] + b"\x00"),
            "does not match its sha256",
        ),
        (
            lambda b: (b / "manifest.json").write_text(
                (b / "manifest.json").read_text().replace('"digits"', '"digitz"', 1)
            ),
            "signature does not verify",
        ),
        (lambda b: (b / "extra.bin").write_bytes(b"x"), "missing or not in the manifest"),
        (lambda b: (b / "manifest.sig").unlink(), "lacks manifest.sig"),
    ],
)
def test_tampered_bundle_is_refused_and_nothing_installed(tmp_path, keys, digits_bundle, tamper, message):
    bundle = _copy(digits_bundle, tmp_path)
    tamper(bundle)
    with pytest.raises(BundleError, match=message):
        install_bundle(tmp_path / "repo", bundle, load_public_key(keys[1]))
    assert [p.name for p in (tmp_path / "repo").iterdir()] == []


def test_wrong_signing_key_is_refused(tmp_path, digits_bundle):
    _, other_pub = generate_keys(tmp_path / "other")
    with pytest.raises(BundleError, match="signature does not verify"):
        install_bundle(tmp_path / "repo", digits_bundle, load_public_key(other_pub))


def test_a_trust_file_with_the_old_and_the_new_key_takes_releases_signed_by_either_during_a_rotation(
    tmp_path, keys, digits_bundle
):
    """Rotating the coordinator's signing key: devices trust a file holding both public keys (the old one first),
    so releases signed before and after the switch install; a third key's are refused; and a file with something
    else in it is named."""
    from tests.edge.bundles import make_bundle

    new_priv, new_pub = generate_keys(tmp_path / "new")
    both = tmp_path / "both.pub"
    both.write_bytes(keys[1].read_bytes() + new_pub.read_bytes())
    trusted = load_public_key(both)
    repo = tmp_path / "repo"
    assert install_bundle(repo, digits_bundle, trusted) == ("digits", 1)  # signed with the old key
    assert install_bundle(repo, make_bundle(tmp_path / "b2", new_priv, "digits", seed=1), trusted) == ("digits", 2)
    third_priv, _ = generate_keys(tmp_path / "third")
    with pytest.raises(BundleError, match="signature does not verify against the trusted keys"):
        install_bundle(repo, make_bundle(tmp_path / "b3", third_priv, "digits", seed=2), trusted)
    assert versions(repo / "digits") == [1, 2]
    with pytest.raises(BundleError, match=r"signature does not verify against the trusted key$"):
        verify_bundle(tmp_path / "b2", load_public_key(keys[1]))  # the old key alone does not take the new's
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pub = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "mixed.pub").write_bytes(keys[1].read_bytes() + ec_pub)
    with pytest.raises(BundleError, match="key 2 of 2 is not an Ed25519 public key"):
        load_public_key(tmp_path / "mixed.pub")
    (tmp_path / "empty.pub").write_text("nothing here\n")
    with pytest.raises(BundleError, match="holds no PEM public key"):
        load_public_key(tmp_path / "empty.pub")


@pytest.mark.parametrize("entry", ["../evil.onnx", "/etc/evil", "sub/model.onnx", "link"])
def test_archive_entries_that_could_escape_are_refused(tmp_path, keys, digits_bundle, entry):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in sorted(digits_bundle.iterdir()):
            tar.add(p, arcname=p.name)
        info = tarfile.TarInfo(entry)
        if entry == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    archive = tmp_path / "evil.tar"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(BundleError, match="refused"):
        install_bundle(tmp_path / "repo", archive, load_public_key(keys[1]))
    assert not (tmp_path / "evil.onnx").exists() and [p.name for p in (tmp_path / "repo").iterdir()] == []


def test_manifest_without_models_is_malformed(tmp_path, keys, digits_bundle):
    from fedge.edge_runtime.distribution.bundle import Manifest

    doc = json.loads((digits_bundle / "manifest.json").read_text())
    with pytest.raises(BundleError, match="malformed manifest"):
        Manifest.from_json({k: v for k, v in doc.items() if k != "inputs"})
    with pytest.raises(BundleError, match="not a known kind"):
        Manifest.from_json({**doc, "models": {"fp64": "model.fp32.onnx"}})


@pytest.mark.parametrize("chunk", [1, 511, 4096, 1 << 20])
def test_the_streamed_archive_comes_in_whole_chunks_of_the_announced_size_and_unpacks_to_the_bundle(tmp_path, chunk):
    """What the release service streams: chunks of exactly ``chunk`` bytes (the last shorter), adding up to the
    size it announces (archive_bytes), a tar any reader takes, holding the bundle's files byte for byte."""
    import os

    src = tmp_path / "src"
    src.mkdir()
    for name, size in [("empty.bin", 0), ("a.onnx", 511), ("b.onnx", 512), ("c.onnx", 70_000), ("manifest.json", 9)]:
        (src / name).write_bytes(os.urandom(size))
    chunks = list(pack_chunks(src, chunk))
    assert all(len(c) == chunk for c in chunks[:-1]) and 0 < len(chunks[-1]) <= chunk
    data = b"".join(chunks)
    assert len(data) == archive_bytes(src) and len(data) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == sorted(p.name for p in src.iterdir())
    out = unpack(data, tmp_path / "out")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {p.name: p.read_bytes() for p in src.iterdir()}
    for offset in (1, chunk - 1, chunk, 600, 70_000, len(data) - 1):  # a resumed download: the same bytes on
        if 0 < offset < len(data):
            rest = list(pack_chunks(src, chunk, offset))
            assert b"".join(rest) == data[offset:], offset
            assert all(len(c) == chunk for c in rest[:-1]), offset
