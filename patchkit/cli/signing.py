"""`patchkit key`, `patchkit trust`, `patchkit sign` and `patchkit verify`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from patchkit.cli.console import Output
from patchkit.cli.lazy import LazyModule
from patchkit.cli.options import JsonOpt, OverwriteOpt
from patchkit.cli.show import render_manifest
from patchkit.errors import UsageError

signing = LazyModule("patchkit.services.signing")

key_app = typer.Typer(help="Signing keys: EC P-256 key pairs in PEM.", no_args_is_help=True)
trust_app = typer.Typer(help="The local trust store: public keys you vouch for, by name.", no_args_is_help=True)

PatchArg = Annotated[Path, typer.Argument(help="The patch (.safetensors) or stack file.", show_default=False)]
PassphraseEnvOpt = Annotated[
    str | None,
    typer.Option("--passphrase-env", help="Name of an environment variable that holds the key's passphrase."),
]
TrustStoreDirOpt = Annotated[
    Path | None, typer.Option("--store", help="Trust store folder (default: PATCHKIT_TRUST_STORE or XDG config).")
]


def _passphrase(variable: str | None) -> str | None:
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise UsageError(f"environment variable {variable} is not set or empty", hint=f"export {variable}=...")
    return value


@key_app.command("new")
def key_new(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Folder for NAME.key (mode 0600) and NAME.pub.")],
    name: Annotated[str, typer.Option("--name", help="File name stem of the pair.")] = "patchkit",
    passphrase_env: PassphraseEnvOpt = None,
    overwrite: OverwriteOpt = False,
    json: JsonOpt = False,
) -> None:
    """Make an EC P-256 key pair for signing patches.

    The private key is written with mode 0600, encrypted when --passphrase-env names a
    variable holding a passphrase. Share the .pub file; people trust it with
    `patchkit trust add`.

    Example:

      patchkit key new --out ~/.keys --name release-team
    """
    output: Output = ctx.obj
    pair = signing.new_key(out, name, _passphrase(passphrase_env), force=overwrite)
    output.result(pair, f"wrote {pair.private} (private, 0600) and {pair.public}; key id {pair.fingerprint}", json=json)


def sign(
    ctx: typer.Context,
    patch: PatchArg,
    key: Annotated[Path | None, typer.Option("--key", help="Private key (PEM) from `patchkit key new`.")] = None,
    passphrase_env: PassphraseEnvOpt = None,
    signature: Annotated[
        Path | None, typer.Option("--signature", help="Where to write it (default: PATCH.sig).")
    ] = None,
    keyless: Annotated[
        bool,
        typer.Option("--keyless", help="Sigstore keyless signing via OIDC (needs the network; for CI pipelines)."),
    ] = False,
    overwrite: OverwriteOpt = False,
    json: JsonOpt = False,
) -> None:
    """Sign a patch: writes PATCH.sig, a Sigstore bundle in the OpenSSF model-signing format.

    The signature covers the whole file, so the manifest inside it (base fingerprint,
    concepts, M-Scores) is signed too. The upstream tool verifies it as well:
    `model_signing verify key --public_key KEY.pub --signature PATCH.sig PATCH`.

    Example:

      patchkit sign no-circle.safetensors --key ~/.keys/release-team.key
    """
    output: Output = ctx.obj
    result = signing.sign(
        patch, key, passphrase=_passphrase(passphrase_env), signature=signature, keyless=keyless, force=overwrite
    )
    output.result(result, f"wrote {result.signature} (key {result.key_fingerprint[:16]}…)", json=json)


def verify(
    ctx: typer.Context,
    patch: PatchArg,
    pubkey: Annotated[Path | None, typer.Option("--pubkey", help="Public key the signature must match.")] = None,
    trust_store: Annotated[
        bool, typer.Option("--trust-store", help="Accept any key in the trust store, and name the signer.")
    ] = False,
    signature: Annotated[Path | None, typer.Option("--signature", help="Signature (default: PATCH.sig).")] = None,
    store: TrustStoreDirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Verify a patch: its signature, its manifest's schema, and its tensors against the patch id.

    Exit 0 only when all three hold; otherwise exit 7 (or 3 for unreadable input) with the
    check that failed. Prints who signed it and what the patch does.

    Examples:

      patchkit verify no-circle.safetensors --pubkey release-team.pub

      patchkit verify no-circle.safetensors --trust-store
    """
    output: Output = ctx.obj
    result = signing.verify(
        patch,
        public_key=pubkey,
        use_trust_store=trust_store,
        signature=signature,
        store=signing.trust_store(store),
    )

    def human() -> None:
        who = f"{result.signer} " if result.signer else ""
        output.say(f"[green]verified[/]: signed by {who}(key {result.key_fingerprint[:16]}…); patch id matches")
        if result.manifest:
            render_manifest(output, result.manifest, title=str(patch))

    output.result(result, human, json=json)


@trust_app.command("add")
def trust_add(
    ctx: typer.Context,
    pubkey: Annotated[Path, typer.Argument(help="A PEM public key (.pub).", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Who this key belongs to, shown by verify.")],
    store: TrustStoreDirOpt = None,
) -> None:
    """Trust a public key under a name. Example: patchkit trust add team.pub --name "release team" """
    output: Output = ctx.obj
    added = signing.trust_store(store).add(pubkey, name)
    output.say(f"trusted {added.name!r} (key {added.fingerprint[:16]}…)")


@trust_app.command("list")
def trust_list(ctx: typer.Context, store: TrustStoreDirOpt = None, json: JsonOpt = False) -> None:
    """List trusted keys. Example: patchkit trust list --json"""
    output: Output = ctx.obj
    keys = signing.trust_store(store).trusted_keys()
    table = Table(title="trusted keys")
    table.add_column("name")
    table.add_column("key id")
    for k in keys:
        table.add_row(k.name, k.fingerprint)
    output.result(keys, lambda: output.table(table), json=json)


@trust_app.command("remove")
def trust_remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name or key id of a trusted key.", show_default=False)],
    store: TrustStoreDirOpt = None,
) -> None:
    """Stop trusting a key. Example: patchkit trust remove "release team" """
    output: Output = ctx.obj
    removed = signing.trust_store(store).remove(name)
    output.say(f"removed {removed.name!r} (key {removed.fingerprint[:16]}…)")


def register(app: typer.Typer) -> None:
    app.add_typer(key_app, name="key")
    app.add_typer(trust_app, name="trust")
    app.command()(sign)
    app.command()(verify)
