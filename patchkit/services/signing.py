"""Keys, signatures, verification and the trust policy for patches (docs/signing.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit.core.stack import MAX_STACK_BYTES, is_stack_name, parse_stack
from patchkit.errors import InputError, PatchkitError, PolicyError, TrustError, UsageError
from patchkit.io import signatures
from patchkit.io.atomic import check_output_path
from patchkit.io.patch_file import PatchFile, read_patch
from patchkit.io.regular import not_a_file, read_capped
from patchkit.store.locations import trust_store_dir
from patchkit.store.trust import TrustedKey, TrustStore


@dataclass(frozen=True)
class SignResult:
    patch: Path
    signature: Path
    key_fingerprint: str
    patch_id: str

    def to_json(self) -> dict[str, Any]:
        return {"signature": str(self.signature), "key": self.key_fingerprint, "patch_id": self.patch_id}


@dataclass(frozen=True)
class VerifyResult:
    patch: Path
    signature: Path
    key_fingerprint: str
    signer: str | None  # the trust-store name, when the key is there
    patch_id: str
    manifest: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"verified": True, "key": self.key_fingerprint, "signer": self.signer, "patch_id": self.patch_id,
                "manifest": self.manifest}  # fmt: skip


def trust_store(folder: Path | None = None) -> TrustStore:
    return TrustStore(folder or trust_store_dir())


def new_key(folder: Path, name: str, passphrase: str | None, force: bool = False) -> signatures.KeyPair:
    return signatures.new_key_pair(folder, name, passphrase, force=force)


def sign(
    patch: Path,
    key: Path | None,
    *,
    passphrase: str | None = None,
    signature: Path | None = None,
    keyless: bool = False,
    force: bool = False,
) -> SignResult:
    """Sign a patch (or a stack file) after checking that its manifest is valid and its id holds."""
    target = signature or signatures.signature_path_for(patch)
    check_output_path(target, force=force)
    patch_id = _check_contents(patch)
    if keyless:
        signatures.sign_keyless(patch, target)
        return SignResult(patch, target, "sigstore-keyless", patch_id)
    if key is None:
        raise UsageError("give --key PRIVATE_KEY (or --keyless in CI)", hint="make a key: patchkit key new --out DIR")
    signatures.sign_file(patch, key, passphrase, target)
    return SignResult(patch, target, signatures.read_bundle(target).key_hint, patch_id)


def _check_contents(path: Path) -> str:
    """A patch's id once its manifest and digest hold; "" for a stack file once its schema holds."""
    if is_stack_name(path.name):
        parse_stack(read_capped(path, MAX_STACK_BYTES, hint="restore the stack file"), str(path))
        return ""
    return _check_integrity(read_patch(path))


def _check_integrity(patch: PatchFile) -> str:
    if not patch.id_matches:
        raise TrustError(
            f"{patch.path}: tensor digest {patch.patch_id[:19]}… does not match the manifest's patch id "
            f"{str(patch.manifest.get('patch_id'))[:19]}…",
            hint="the tensors were changed after the manifest was written",
        )
    return patch.patch_id


def verify(
    patch: Path,
    *,
    public_key: Path | None = None,
    use_trust_store: bool = False,
    signature: Path | None = None,
    store: TrustStore | None = None,
) -> VerifyResult:
    """Signature, then schema, then digest: every check must hold, or TrustError/InputError says which failed."""
    if public_key is None and not use_trust_store:
        raise UsageError("say which key to trust: --pubkey KEY.pub or --trust-store", hint="patchkit verify --help")
    sig = signature or signatures.signature_path_for(patch)
    reason = not_a_file(patch)
    if reason is not None:
        raise InputError(f"patch {patch} {reason}", hint="check the path")
    claimed = signatures.read_bundle(sig)
    store = store or trust_store()
    trusted: TrustedKey | None = store.by_fingerprint(claimed.key_hint)
    if public_key is None:
        if trusted is None:
            raise PolicyError(
                f"{patch} is signed by key {claimed.key_hint[:16]}…, which is not in the trust store",
                hint="if you trust it: patchkit trust add KEY.pub --name NAME",
            )
        public_key = trusted.path
    key_fingerprint = signatures.load_public_key(public_key)
    signatures.verify_file(patch, sig, public_key)
    patch_id = _check_contents(patch)
    parsed = read_patch(patch) if patch_id else None
    signer = trusted.name if trusted and trusted.fingerprint == key_fingerprint else None
    return VerifyResult(patch, sig, key_fingerprint, signer, patch_id, parsed.manifest if parsed else {})


def enforce_policy(patch: Path, require_signed: bool, store: TrustStore | None = None) -> VerifyResult | None:
    """Under policy, a patch must carry a valid signature from a trusted key; otherwise nothing is checked here."""
    if not require_signed:
        return None
    if not signatures.signature_path_for(patch).is_file():
        raise PolicyError(
            f"{patch} is not signed, and policy requires signed patches",
            hint=f"sign it (patchkit sign {patch} --key KEY) or drop --require-signed",
        )
    return verify(patch, use_trust_store=True, store=store)


def signature_warning(patch: Path, store: TrustStore | None = None) -> str | None:
    """With the signing policy off: a signature that is there but does not verify is worth a warning.
    (A key the trust store does not know is no failure: nothing says whose it should be.)"""
    if not signatures.signature_path_for(patch).is_file():
        return None
    try:
        verify(patch, use_trust_store=True, store=store)
    except PolicyError:  # a signer we cannot check: its statement can still show it is for other bytes
        try:
            if signatures.names_these_bytes(patch, signatures.signature_path_for(patch)):
                return None
        except PatchkitError as exc:
            return _unverified(patch, exc.message)
        return _unverified(patch, "its statement vouches for other bytes: the patch or its .sig was replaced")
    except PatchkitError as exc:
        return _unverified(patch, exc.message)
    return None


def _unverified(patch: Path, why: str) -> str:
    return f"{patch}: its signature does not verify ({why}); applied because no signature is required"
