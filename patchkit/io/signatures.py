"""Signatures in the OpenSSF model-signing format (a Sigstore bundle over a DSSE in-toto statement).

We call the `model_signing` package rather than re-implement it, so that a patchkit
signature verifies with the upstream `model_signing verify key` command, and back.
This module is the only one that imports it. Keys are EC P-256 in PEM.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from patchkit.errors import InputError, OutputError, TrustError, UsageError
from patchkit.io.atomic import atomic_path, write_bytes_atomic
from patchkit.io.regular import read_capped

SIGNATURE_SUFFIX = ".sig"


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    fingerprint: str


@dataclass(frozen=True)
class BundleInfo:
    key_hint: str  # SHA-256 of the signer's PEM public key, as model-signing records it
    digests: dict[str, str]  # file name -> hex digest the statement vouches for


def signature_path_for(path: Path) -> Path:
    return path.with_name(path.name + SIGNATURE_SUFFIX)


def key_fingerprint_of_pem(pem: bytes) -> str:
    """The key id model-signing writes into a bundle: SHA-256 of the PEM SubjectPublicKeyInfo."""
    return hashlib.sha256(pem).hexdigest()


def load_public_key(path: Path) -> str:
    """The fingerprint of a PEM public key; a one-line error for anything else."""
    hint = "give the .pub file that `patchkit key new` wrote"
    if not path.exists():
        raise InputError(f"{path}: no such public key", hint=hint)
    pem = read_capped(path, 1 << 20, hint=hint)  # a PEM key is a few hundred bytes; a FIFO is refused
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise InputError(f"{path} is not a PEM public key", hint="give the .pub file, not the private key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InputError(f"{path} is not an elliptic-curve key", hint="make one with: patchkit key new --out DIR")
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key_fingerprint_of_pem(pem)


def new_key_pair(folder: Path, name: str, passphrase: str | None, *, force: bool = False) -> KeyPair:
    private_path, public_path = folder / f"{name}.key", folder / f"{name}.pub"
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is not a folder", hint="give --out a folder for the key pair")
    # A key folder is private: created 0700, as ssh-keygen does for ~/.ssh.
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in (private_path, public_path):
        if path.exists() and not force:
            raise UsageError(f"{path} exists", hint="choose another --name, or pass --overwrite to replace it")
    key = ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with atomic_path(private_path) as tmp:
        # Created 0600 from the start: the secret never exists with wider permissions.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_pem)
    write_bytes_atomic(public_path, public_pem)
    return KeyPair(private_path, public_path, key_fingerprint_of_pem(public_pem))


def sign_file(path: Path, private_key: Path, passphrase: str | None, signature: Path) -> None:
    import model_signing

    if not private_key.is_file():
        raise InputError(f"{private_key}: no such private key", hint="make one with: patchkit key new --out DIR")
    try:
        config = model_signing.signing.Config().use_elliptic_key_signer(
            private_key=private_key,
            # model-signing 1.1.1 annotates str but hands it on to cryptography, which needs bytes
            password=passphrase.encode() if passphrase is not None else None,  # type: ignore[arg-type]
        )
    except TypeError as exc:  # cryptography: a passphrase is needed, or was given for a plain key
        reason = str(exc).splitlines()[0]
        raise UsageError(
            f"{private_key}: {reason}", hint="pass --passphrase-env NAME with the key's passphrase"
        ) from exc
    except ValueError as exc:
        raise InputError(
            f"{private_key} is not a usable EC private key ({exc})", hint="check the key file and its passphrase"
        ) from exc
    with atomic_path(signature) as tmp:
        config.sign(path, tmp)


def sign_keyless(path: Path, signature: Path, *, use_staging: bool = False) -> None:
    """Sigstore keyless signing (OIDC identity, Fulcio certificate, Rekor log): needs the network."""
    import model_signing

    config = model_signing.signing.Config().use_sigstore_signer(use_staging=use_staging)
    with atomic_path(signature) as tmp:
        config.sign(path, tmp)


MAX_BUNDLE_BYTES = 1 << 20  # a Sigstore bundle for one file is a few kB; 1 MiB leaves room for certificates


def read_bundle(signature: Path) -> BundleInfo:
    """What a bundle claims, read without trusting it: which key, which digests."""
    if not signature.is_file():
        raise TrustError(
            f"{signature}: no signature beside the patch",
            hint=f"sign it: patchkit sign {signature.with_suffix('')} --key KEY",
        )
    malformed = f"{signature} is not a model-signing bundle"
    size = signature.stat().st_size
    if size > MAX_BUNDLE_BYTES:  # a real bundle is a few kB: a huge one is read no further
        raise TrustError(f"{signature} is {size:,} bytes, over the {MAX_BUNDLE_BYTES:,} a signature may be",
                         hint="sign the patch again: patchkit sign PATCH --key KEY")  # fmt: skip
    try:
        bundle = json.loads(signature.read_text())
        envelope = bundle["dsseEnvelope"]
        statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
        hint = bundle.get("verificationMaterial", {}).get("publicKey", {}).get("hint", "")
        digests = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    except (
        UnicodeDecodeError,
        json.JSONDecodeError,
        KeyError,
        TypeError,
        ValueError,
        RecursionError,
        AttributeError,
    ) as exc:  # AttributeError: a field of the wrong JSON type (a string for an object)
        raise TrustError(malformed, hint="sign the patch again: patchkit sign PATCH --key KEY") from exc
    if not isinstance(hint, str):
        raise TrustError(malformed, hint="sign the patch again: patchkit sign PATCH --key KEY")
    return BundleInfo(key_hint=hint, digests=digests)


def names_these_bytes(path: Path, signature: Path) -> bool:
    """Whether the bundle's statement vouches for `path` as it is now, checked without any key.

    Anyone can write a statement, so True proves nothing; False proves the .sig belongs to other
    bytes. The subject digest model-signing records is SHA-256 over its manifest's digests in
    order, so its own hashing of `path` (file serialization, its default) is compared to it.
    """
    import model_signing

    claimed = read_bundle(signature)
    root = hashlib.sha256()
    for descriptor in model_signing.hashing.hash(path).resource_descriptors():
        root.update(descriptor.digest.digest_value)
    return root.hexdigest() in claimed.digests.values()


def verify_file(path: Path, signature: Path, public_key: Path) -> None:
    """Raise TrustError unless `signature` is a valid signature by `public_key` over `path` as it is now."""
    import model_signing

    read_bundle(signature)
    config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key)
    try:
        config.verify(path, signature)
    except Exception as exc:  # model-signing raises ValueError, InvalidSignature, protobuf errors...
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise TrustError(
            f"{path}: signature does not verify with {public_key.name} ({reason[:200]})",
            hint="the patch or its .sig was altered, or it was signed by another key",
        ) from exc
