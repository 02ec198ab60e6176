"""Signing and verifying real patches made by `forget`, in the OpenSSF model-signing format."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from patchkit.errors import InputError, PolicyError, TrustError, UsageError
from patchkit.io.safetensors_io import read_header
from patchkit.models.refs import ModelSource
from patchkit.services import signing
from patchkit.services.forget import forget
from patchkit.services.forget_request import ForgetRequest
from patchkit.store.trust import TrustStore
from patchkit.training.fmn import ForgetSettings
from patchkit.training.prompts import Concept

QUICK = ForgetSettings(steps=2, images_per_concept=1, batch_size=1)


@pytest.fixture(scope="module")
def signed(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """Two real patches, signed by one key; a second key that signs nothing."""
    root = tmp_path_factory.mktemp("signed")
    folder, _ = tiny_models["sd15"]
    paths = {}
    for name, concept in (("a", "circle"), ("b", "ring")):
        paths[name] = root / f"{name}.safetensors"
        forget(ForgetRequest(ModelSource(str(folder)), [Concept(concept, "object")], paths[name], settings=QUICK))
    keys = signing.new_key(root, "team", None)
    stranger = signing.new_key(root, "stranger", None)
    for name in ("a", "b"):
        signing.sign(paths[name], keys.private)
    return {**paths, "key": keys.private, "pub": keys.public, "stranger_pub": stranger.public, "root": root}


def copy_pair(signed: dict[str, Path], tmp_path: Path, name: str = "a") -> Path:
    patch = tmp_path / f"{name}.safetensors"
    shutil.copy(signed[name], patch)
    shutil.copy(signed[name].with_name(f"{name}.safetensors.sig"), patch.with_name(f"{name}.safetensors.sig"))
    return patch


def test_sign_then_verify_names_the_key_and_the_patch(signed, tmp_path):
    patch = copy_pair(signed, tmp_path)
    result = signing.verify(patch, public_key=signed["pub"])
    assert result.key_fingerprint == signing.signatures.load_public_key(signed["pub"])
    assert result.patch_id == result.manifest["patch_id"]
    assert result.manifest["concepts"][0]["name"] == "circle" and result.signer is None


def test_private_key_is_0600_and_encrypted_with_a_passphrase(tmp_path):
    pair = signing.new_key(tmp_path, "k", "s3cret")
    assert stat.S_IMODE(pair.private.stat().st_mode) == 0o600
    assert b"ENCRYPTED" in pair.private.read_bytes()
    patch = tmp_path / "p.bin"
    patch.write_bytes(b"x" * 64)
    with pytest.raises(UsageError):
        signing.signatures.sign_file(patch, pair.private, None, tmp_path / "p.sig")
    signing.signatures.sign_file(patch, pair.private, "s3cret", tmp_path / "p.sig")
    signing.signatures.verify_file(patch, tmp_path / "p.sig", pair.public)


def test_upstream_model_signing_verifies_our_signature(signed, tmp_path):
    patch = copy_pair(signed, tmp_path)
    tool = Path(sys.executable).with_name("model_signing")
    command = [str(tool), "verify", "key", "--public_key", str(signed["pub"])]
    ok = subprocess.run([*command, "--signature", f"{patch}.sig", str(patch)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = [str(tool), "verify", "key", "--public_key", str(signed["stranger_pub"]), "--signature", f"{patch}.sig"]
    assert subprocess.run([*wrong, str(patch)], capture_output=True).returncode != 0


def _regions(path: Path) -> dict[str, tuple[int, int]]:
    header = read_header(path)
    raw = path.read_bytes()
    manifest_at = raw.index(b'"patchkit.manifest":') + len(b'"patchkit.manifest":')
    manifest_end = raw.index(b'"', manifest_at + 1)
    return {
        "length": (0, 8),
        "header": (8, manifest_at),
        "manifest": (manifest_at, manifest_end),
        "data": (header.data_start, len(raw)),
    }


@settings(max_examples=220, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    position=st.floats(min_value=0, max_value=1, exclude_max=True),
    region=st.sampled_from(["length", "header", "manifest", "data"]),
    bit=st.integers(0, 7),
)
@example(position=0.0, region="length", bit=0)
@example(position=0.5, region="manifest", bit=3)
@example(position=0.999, region="data", bit=7)
def test_flipping_any_bit_anywhere_fails_verification(signed, tmp_path_factory, position, region, bit):
    folder = tmp_path_factory.mktemp("tamper")
    patch = copy_pair(signed, folder)
    start, end = _regions(patch)[region]
    offset = start + int(position * (end - start))
    raw = bytearray(patch.read_bytes())
    raw[offset] ^= 1 << bit
    patch.write_bytes(bytes(raw))
    with pytest.raises(TrustError, match="does not verify"):
        signing.verify(patch, public_key=signed["pub"])


def test_another_patchs_signature_fails(signed, tmp_path):
    patch = copy_pair(signed, tmp_path)
    shutil.copy(signed["b"].with_name("b.safetensors.sig"), f"{patch}.sig")
    with pytest.raises(TrustError, match="does not verify"):
        signing.verify(patch, public_key=signed["pub"])


def test_with_policy_off_a_signature_for_other_bytes_is_warned_about_even_from_an_unknown_key(signed, tmp_path):
    """Issue 16.18: with no signature required, a .sig that is there but no longer matches must be
    warned about. A signer the trust store does not know once silenced the warning altogether,
    though the bundle's own statement shows it vouches for other bytes; that needs no key."""
    patch = copy_pair(signed, tmp_path)
    empty, knows = TrustStore(tmp_path / "none"), TrustStore(tmp_path / "trust")
    knows.add(signed["pub"], "release team")
    assert signing.signature_warning(patch, store=empty) is None  # intact, signer unknown: nothing to say
    assert signing.signature_warning(patch, store=knows) is None
    shutil.copy(signed["b"].with_name("b.safetensors.sig"), f"{patch}.sig")  # another patch's signature
    for store in (empty, knows):
        warning = signing.signature_warning(patch, store=store)
        assert warning is not None and "does not verify" in warning, store.folder


def test_trust_store_names_the_signer_and_policy_refuses_strangers(signed, tmp_path):
    patch = copy_pair(signed, tmp_path)
    store = TrustStore(tmp_path / "trust")
    with pytest.raises(PolicyError, match="not in the trust store"):
        signing.enforce_policy(patch, require_signed=True, store=store)
    store.add(signed["stranger_pub"], "someone else")
    with pytest.raises(PolicyError, match="not in the trust store"):
        signing.enforce_policy(patch, require_signed=True, store=store)
    store.add(signed["pub"], "release team")
    result = signing.enforce_policy(patch, require_signed=True, store=store)
    assert result is not None and result.signer == "release team"
    assert [k.name for k in store.trusted_keys()] == ["release team", "someone else"]
    store.remove("release team")
    with pytest.raises(PolicyError):
        signing.verify(patch, use_trust_store=True, store=store)


def test_unsigned_patch_under_policy_is_refused_and_allowed_without(signed, tmp_path):
    patch = tmp_path / "a.safetensors"
    shutil.copy(signed["a"], patch)
    with pytest.raises(PolicyError, match="not signed"):
        signing.enforce_policy(patch, require_signed=True)
    assert signing.enforce_policy(patch, require_signed=False) is None


def test_missing_signature(signed, tmp_path):
    patch = tmp_path / "a.safetensors"
    shutil.copy(signed["a"], patch)
    with pytest.raises(TrustError, match="no signature"):
        signing.verify(patch, public_key=signed["pub"])


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b'{"mediaType": "x"}', json.dumps({"dsseEnvelope": {"payload": "!!notbase64"}}).encode()],
)
def test_malformed_bundle(signed, tmp_path, content):
    patch = copy_pair(signed, tmp_path)
    Path(f"{patch}.sig").write_bytes(content)
    with pytest.raises(TrustError, match="not a model-signing bundle"):
        signing.verify(patch, public_key=signed["pub"])


def test_a_huge_or_deeply_nested_bundle_is_refused_without_reading_it_whole(signed, tmp_path):
    """A 200 MB .sig was read whole (852 MB RSS); a nested one raised RecursionError."""
    patch = copy_pair(signed, tmp_path)
    Path(f"{patch}.sig").write_bytes(b" " * (2 << 20))
    with pytest.raises(TrustError, match="over the 1,048,576 a signature may be"):
        signing.verify(patch, public_key=signed["pub"])
    Path(f"{patch}.sig").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(TrustError, match="not a model-signing bundle"):
        signing.verify(patch, public_key=signed["pub"])


def test_wrong_public_key_and_bad_key_files(signed, tmp_path):
    patch = copy_pair(signed, tmp_path)
    with pytest.raises(TrustError, match="does not verify"):
        signing.verify(patch, public_key=signed["stranger_pub"])
    with pytest.raises(InputError, match="not a PEM public key"):
        signing.verify(patch, public_key=signed["key"].with_name("team.key"))
    with pytest.raises(InputError, match="no such public key"):
        signing.verify(patch, public_key=tmp_path / "missing.pub")
    with pytest.raises(UsageError, match="--pubkey"):
        signing.verify(patch)


def test_signing_refuses_a_patch_whose_tensors_do_not_match_its_id(signed, tmp_path):
    patch = tmp_path / "a.safetensors"
    raw = bytearray(signed["a"].read_bytes())
    raw[-1] ^= 0xFF
    patch.write_bytes(bytes(raw))
    with pytest.raises(TrustError, match="does not match the manifest's patch id"):
        signing.sign(patch, signed["key"])
    assert not Path(f"{patch}.sig").exists()
