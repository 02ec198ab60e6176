"""Issue 16's hostile inputs, replayed through a real `patchkit` process: how many end cleanly.

Run: .venv/bin/python bench/hostile.py [--source CHECKOUT] [--json OUT]

Each attempt is one hostile input of a class issue 16 names (markup, non-finite numbers,
do-nothing patches, OS errors, hangs, lenient parsing, registry forgeries, ...) given to the
command that reads it. An attempt ends cleanly when the command does what the README
promises: a refusal is exit 1-8 with an `error:` line and a `hint:` line, no traceback and
no output left; hostile text is shown as text; a weakened guarantee is warned about.

`--source` replays the same attempts against another checkout (for instance the commit
before issue 16's fixes, in a `git worktree`): the fixtures are built with that checkout's
own code, so each version reads patches it wrote. An attempt whose option that version
lacks is reported as n/a, not as handled.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TIMEOUT_S = 60
# `python -m` puts the working folder first on sys.path: run from one that holds no patchkit, so
# PYTHONPATH (--source) decides which patchkit runs
_CWD = tempfile.gettempdir()
DOCUMENTED = range(1, 9)


@dataclass
class Attempt:
    name: str
    item: int  # issue 16's numbered item
    argv: list[str]
    expect: str = "refuse"  # refuse | text | warn | json-error | bounded
    absent: list[Path] = field(default_factory=list)  # must not exist afterwards
    needle: str = ""  # for "text": shown literally
    because: str = ""  # a refusal must say this (case aside): refused for the reason tried, not another
    env: dict[str, str] = field(default_factory=dict)
    preexec: Callable[[], None] | None = None


def _size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:  # writes past `limit` fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _setup(*argv: object) -> None:
    """A setup step through the CLI of the patchkit under test (it must succeed)."""
    subprocess.run([sys.executable, "-m", "patchkit", *map(str, argv)], check=True, capture_output=True, cwd=_CWD)


# -- hostile files -------------------------------------------------------------------------------


def _split(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def _join(path: Path, header: dict[str, Any] | str, data: bytes) -> Path:
    text = (header if isinstance(header, str) else json.dumps(header)).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def _with_manifest(source: Path, out: Path, **changes: Any) -> Path:
    header, data = _split(source)
    manifest = json.loads(header["__metadata__"]["patchkit.manifest"])
    for key, value in changes.items():
        if key == "concept_name":
            manifest["concepts"][0]["name"] = value
        else:
            manifest[key] = value
    header["__metadata__"]["patchkit.manifest"] = json.dumps(manifest)
    return _join(out, header, data)


def _with_tensors(source: Path, out: Path, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> Path:
    """`source` with its tensors edited and its manifest's patch id recomputed by the patchkit under
    test, so the file is refused (or not) for what the edit did, never for an id mismatch."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from patchkit.core.patch_id import patch_id_of

    with safe_open(str(source), "pt") as handle:
        metadata = dict(handle.metadata())
    tensors = edit(load_file(str(source)))
    manifest = json.loads(metadata["patchkit.manifest"])
    manifest["patch_id"] = patch_id_of(tensors)
    save_file(tensors, str(out), metadata=dict(metadata, **{"patchkit.manifest": json.dumps(manifest)}))
    return out


def _fill_up(value: float) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda tensors: {k: t.fill_(value) if "lora_B" in k else t for k, t in tensors.items()}


def _lenient(source: Path, out: Path, kind: str) -> Path:
    header, data = _split(source)
    names = [n for n in header if n != "__metadata__"]
    if kind == "trailing-bytes":
        return _join(out, header, data + b"\0" * 8)
    if kind == "hole":
        for name in names:
            header[name]["data_offsets"] = [o + 8 for o in header[name]["data_offsets"]]
        return _join(out, header, b"\0" * 8 + data)
    if kind == "overlap":
        a, b = names[0], names[1]  # b's bytes become a's: two tensors over one range
        size = header[a]["data_offsets"][1] - header[a]["data_offsets"][0]
        header[b]["data_offsets"] = [header[a]["data_offsets"][0], header[a]["data_offsets"][0] + size]
        header[b]["shape"], header[b]["dtype"] = header[a]["shape"], header[a]["dtype"]
        return _join(out, header, data)
    if kind == "duplicate-metadata":
        forged = json.loads(header["__metadata__"]["patchkit.manifest"])
        forged["concepts"][0]["name"] = "forged"
        second = json.dumps({"patchkit.manifest": json.dumps(forged)})
        text = json.dumps(header)
        return _join(out, text[:-1] + f', "__metadata__": {second}' + "}", data)
    raise ValueError(kind)


# -- the attempts --------------------------------------------------------------------------------


def attempts(root: Path) -> list[Attempt]:
    from patchkit.services.fixtures import build_random_model, synthetic_patch

    model = build_random_model("sd15", root / "m", tiny=True, single_file=root / "m.safetensors")
    folder, single = model.folder, root / "m.safetensors"
    p = synthetic_patch(str(folder), root / "p.safetensors", concept="circle")
    q = synthetic_patch(str(folder), root / "q.safetensors", concept="square", seed=1)
    ps = synthetic_patch(str(single), root / "ps.safetensors", concept="circle")
    out = root / "out"
    out.mkdir()

    def o(name: str) -> Path:
        return out / name

    made: list[Attempt] = []

    def add(name: str, item: int, *argv: object, **kw: Any) -> None:
        made.append(Attempt(name, item, [str(a) for a in argv], **kw))

    # 1. markup and control characters
    hostile_text = {
        "markup-close": "[/]x",
        "markup-style": "[bold red]BIG[/bold red]",
        "title-escape": "a\x1b]0;owned\x07b",
        "bidi": "evil\u202egpj",
        "newline": "x\nerror: forged",
    }
    for label, text in hostile_text.items():
        hostile = _with_manifest(p, root / f"h-{label}.safetensors", concept_name=text)
        shown = text if label.startswith("markup") else ""
        add(f"show a concept named {label}", 1, "show", hostile, expect="text", needle=shown)
        add(f"registry add a concept named {label}", 1, "registry", "add", hostile, "--registry", root / f"r-{label}",
            expect="text")  # fmt: skip
        add(f"missing file named {label}", 1, "show", root / f"{text}.safetensors")
    # 2. non-finite and absurd numbers
    for label, value in (("NaN", float("nan")), ("Inf", float("inf"))):
        bad = _with_tensors(p, root / f"{label}.safetensors", _fill_up(value))
        target = o(f"a-{label}")
        add(f"apply a patch of {label} tensors", 2, "apply", folder, bad, "-o", target, absent=[target], because=label)
        add(f"registry add a patch of {label} tensors", 2, "registry", "add", bad, "--registry", root / f"r-{label}",
            because=label)  # fmt: skip
    for scale in ("nan", "inf", "1e39", "1e308"):
        add(f"apply --scale {scale}", 2, "apply", folder, p, "-o", o(f"s-{scale}"), "--scale", scale,
            absent=[o(f"s-{scale}")])  # fmt: skip
    add("merge --weights nan,1", 2, "merge", p, q, "-o", o("m-nan.safetensors"), "--weights", "nan,1",
        absent=[o("m-nan.safetensors")])  # fmt: skip
    stack = root / "s.stack.json"
    _setup("stack", "new", str(folder), "-o", str(stack))
    add("stack add --scale nan", 2, "stack", "add", stack, p, "--scale", "nan")
    # 3. do-nothing patches and unchecked options
    empty = _with_tensors(p, root / "empty.safetensors", lambda tensors: {})
    zero = _with_tensors(p, root / "zero.safetensors", _fill_up(0.0))
    add("apply a patch with no tensors", 3, "apply", folder, empty, "-o", o("a-empty"), absent=[o("a-empty")],
        because="no tensors")  # fmt: skip
    add("apply a patch whose delta is zero", 3, "apply", folder, zero, "-o", o("a-zero"), absent=[o("a-zero")],
        because="zero")  # fmt: skip
    for label, extra in (("--steps -5", ["--steps", "-5"]), ("--steps 0", ["--steps", "0"]),
                         ("--lr nan", ["--lr", "nan"])):  # fmt: skip
        target = o(f"f{len(made)}.safetensors")
        add(f"forget {label}", 3, "forget", "testbed", "-c", "circle", "--category", "object", *extra, "-o", target,
            absent=[target])  # fmt: skip
    add('forget -c ""', 3, "forget", "testbed", "-c", "", "--category", "object", "-o", o("f-empty.safetensors"),
        absent=[o("f-empty.safetensors")])  # fmt: skip
    # 4. OS errors
    full = _size_limit(16 * 1024)
    add("export to a full disk", 4, "export", p, "--format", "kohya", "-o", o("x-full.safetensors"), preexec=full,
        absent=[o("x-full.safetensors")])  # fmt: skip
    add("merge to a full disk", 4, "merge", p, q, "-o", o("m-full.safetensors"), preexec=full,
        absent=[o("m-full.safetensors")])  # fmt: skip
    add("convert to a full disk", 4, "convert", folder, "-o", o("c-full.safetensors"), preexec=full,
        absent=[o("c-full.safetensors")])  # fmt: skip
    add("registry add to a full disk", 4, "registry", "add", p, "--registry", root / "r-full", preexec=full)
    add("key new to a full disk", 4, "key", "new", "--out", o("keys-full"), preexec=_size_limit(64))
    add("apply -o where nothing can be made", 4, "apply", folder, p, "-o", "/proc/patchkit-out")
    add("stack new where nothing can be made", 4, "stack", "new", folder, "-o", "/proc/s.stack.json")
    long_name = o("k" * 300 + ".safetensors")
    add("export to a name over 255 bytes", 4, "export", p, "--format", "kohya", "-o", long_name)
    # 5. hangs
    reg = root / "r-hang"
    _setup("registry", "add", str(p), "--registry", str(reg))
    blob = next(b for b in (reg / "blobs").rglob("*") if b.is_file() and not b.name.endswith(".sig"))
    for label, make in (("FIFO", os.mkfifo), ("link to /dev/zero", lambda b: b.symlink_to("/dev/zero"))):
        copy = root / f"r-{label.split()[0]}"
        shutil.copytree(reg, copy, symlinks=True)
        target = copy / blob.relative_to(reg)
        target.unlink()
        make(target)
        add(f"registry verify with a blob replaced by a {label}", 5, "registry", "verify", "--registry", copy)
    copy = root / "r-ref-fifo"
    shutil.copytree(reg, copy)
    ref = next((copy / "refs").glob("*/*.json"))
    ref.unlink()
    os.mkfifo(ref)
    add("registry verify with a ref replaced by a FIFO", 5, "registry", "verify", "--registry", copy)
    fifo_model = root / "m-fifo"
    shutil.copytree(folder, fifo_model)
    (fifo_model / "model_index.json").unlink()
    os.mkfifo(fifo_model / "model_index.json")
    add("apply to a base whose model_index.json is a FIFO", 5, "apply", fifo_model, p, "-o", o("a-fifo"),
        absent=[o("a-fifo")])  # fmt: skip
    # 6. lenient parsing and deep JSON
    for kind in ("overlap", "hole", "trailing-bytes", "duplicate-metadata"):
        bad = _lenient(p, root / f"l-{kind}.safetensors", kind)
        add(f"apply a file with {kind}", 6, "apply", folder, bad, "-o", o(f"l-{kind}"), absent=[o(f"l-{kind}")])
        add(f"registry add a file with {kind}", 6, "registry", "add", bad, "--registry", root / f"r-l-{kind}")
        add(f"show a file with {kind}", 6, "show", bad)
    deep = "[" * 100_000 + "]" * 100_000
    add("show a header nested 100k deep", 6, "show", _join(root / "deep-header.safetensors", deep, b""))
    deep_manifest = _split(p)
    deep_manifest[0]["__metadata__"]["patchkit.manifest"] = deep
    add("show a manifest nested 100k deep", 6, "show", _join(root / "deep-manifest.safetensors", *deep_manifest))
    deep_stack = root / "deep.stack.json"
    deep_stack.write_text(deep)
    add("apply a stack nested 100k deep", 6, "apply", folder, deep_stack, "-o", o("a-deep"), absent=[o("a-deep")])
    signed = root / "signed"
    signed.mkdir()
    shutil.copy(p, signed / "p.safetensors")
    (signed / "p.safetensors.sig").write_text(deep)
    add("verify a .sig nested 100k deep", 6, "verify", signed / "p.safetensors")
    deep_index = root / "r-deep-index"
    shutil.copytree(reg, deep_index)
    (deep_index / "index.json").write_text(deep)
    add("registry list with an index nested 100k deep", 6, "registry", "list", "--registry", deep_index)
    deep_config = root / "m-deep"
    shutil.copytree(folder, deep_config)
    (deep_config / "unet" / "config.json").write_text(deep)
    add("apply to a base whose unet config is nested 100k deep", 6, "apply", deep_config, p, "-o", o("a-dc"),
        absent=[o("a-dc")])  # fmt: skip
    # 7. an error exit leaves no output
    revert_data = o("ps.revert.safetensors")
    patched = o("patched.safetensors")
    _setup("apply", single, ps, "-o", patched, "--revert-data", revert_data)
    other = build_random_model("sd21", root / "m21", tiny=True).folder
    add("revert with the wrong --config", 7, "revert", patched, "--revert-data", revert_data, "--config", other, "-o",
        o("r.safetensors"), absent=[o("r.safetensors")])  # fmt: skip
    # 8. the same patch twice
    add("apply BASE P P", 8, "apply", folder, p, p, "-o", o("a-twice"), absent=[o("a-twice")])
    twice = root / "twice.stack.json"
    shutil.copy(stack, twice)
    _setup("stack", "add", str(twice), str(p))
    data = json.loads(twice.read_text())
    data["patches"] = data["patches"] * 2
    twice.write_text(json.dumps(data))
    add("apply a stack listing one patch twice", 8, "apply", folder, twice, "-o", o("a-st2"), absent=[o("a-st2")])
    # 9. stack pinning
    pinned_dir = root / "pinned"
    pinned_dir.mkdir()
    pinned = pinned_dir / "s.stack.json"
    shutil.copy(p, pinned_dir / "p.safetensors")
    shutil.copy(stack, pinned)
    _setup("stack", "add", pinned, pinned_dir / "p.safetensors")
    shutil.copy(q, pinned_dir / "p.safetensors")  # another patch at the pinned path
    add("apply a stack whose patch file was swapped", 9, "apply", folder, pinned, "-o", o("a-pin"), absent=[o("a-pin")])
    # 11. registry integrity
    for label, change in (("a blob of ../../../../etc/passwd", {"blob": "../../../../etc/passwd"}),
                          ("a forged signer", {"signed": True, "signed_by": "release team"})):  # fmt: skip
        copy = root / f"r-forged-{len(made)}"
        shutil.copytree(reg, copy)
        ref = next((copy / "refs").glob("*/*.json"))
        ref.write_text(json.dumps(dict(json.loads(ref.read_text()), **change)))
        add(f"registry verify a ref edited to {label}", 11, "registry", "verify", "--registry", copy)
    copy = root / "r-layout"
    shutil.copytree(reg, copy)
    (copy / "registry.json").write_text('{"layout_version": 99}')
    add("registry verify a layout it does not know", 11, "registry", "verify", "--registry", copy)
    # 13. unbounded output and input
    add("a 100 kB name in an error", 13, "show", root / ("n" * 100_000), expect="bounded")
    big_sig = root / "bigsig"
    big_sig.mkdir()
    shutil.copy(p, big_sig / "p.safetensors")
    with (big_sig / "p.safetensors.sig").open("wb") as handle:
        handle.truncate(200 << 20)
    add("verify a 200 MB .sig", 13, "verify", big_sig / "p.safetensors")
    # 14-17. error style
    add("--json on an error", 14, "show", root / "missing.safetensors", "--json", expect="json-error")
    add("registry push offline", 16, "registry", "push", "synthetic-circle@0.0.1", "--repo", "me/x", "--registry", reg,
        env={"HF_HUB_OFFLINE": "1"})  # fmt: skip
    add("a missing argument", 17, "apply")
    # 18. weakened guarantees and unchecked declarations
    broken = root / "m-broken"
    shutil.copytree(folder, broken)
    (broken / "unet" / "config.json").write_text("{not json")
    add("apply to a base whose unet/config.json is broken", 18, "apply", broken, p, "-o", o("a-br"), absent=[o("a-br")])
    keys = root / "keys"
    keys.mkdir()  # before issue 16, key new refused a folder that did not exist yet
    _setup("key", "new", "--out", keys)
    key = next(keys.glob("*.key"))
    stale = root / "stale"
    stale.mkdir()
    shutil.copy(q, stale / "p.safetensors")
    _setup("sign", stale / "p.safetensors", "--key", key)
    shutil.copy(p, stale / "p.safetensors")  # the .sig now belongs to another patch
    add("apply a patch whose .sig no longer verifies (policy off)", 18, "apply", folder, stale / "p.safetensors", "-o",
        o("a-stale"), expect="warn")  # fmt: skip
    return made


# -- judging -------------------------------------------------------------------------------------


def judge(attempt: Attempt) -> str:
    env = dict(os.environ, COLUMNS="200", **attempt.env)
    try:
        command = [sys.executable, "-m", "patchkit", *attempt.argv]
        run = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env,
                             preexec_fn=attempt.preexec, errors="replace", cwd=_CWD)  # fmt: skip
    except subprocess.TimeoutExpired:
        return "hang"
    err, out = run.stderr, run.stdout
    if "No such option" in err or "No such command" in err:
        return "n/a"
    if "Traceback" in err:
        return "traceback"
    if any(p.exists() for p in attempt.absent) and run.returncode != 0:
        return "output left"
    if attempt.expect == "text":
        if run.returncode not in (0, *DOCUMENTED):
            return f"exit {run.returncode}"
        if "\x1b]" in out + err or "\u202e" in out + err:
            return "control character passed"
        if attempt.needle and attempt.needle not in (out + err).replace("\n", ""):
            return "restyled"
        return "clean"
    if attempt.expect == "warn":
        return "clean" if run.returncode == 0 and "warning" in err else ("silent" if run.returncode == 0 else "refused")
    if run.returncode == 0:
        return "accepted"
    if run.returncode not in DOCUMENTED:
        return f"exit {run.returncode}"
    lines = err.strip().splitlines()
    if attempt.expect == "bounded" and len(err) > 4000:
        return "unbounded"
    if attempt.expect == "json-error":
        try:
            return "clean" if "error" in json.loads(out) else "plain-text error"
        except ValueError:
            return "plain-text error"
    error = next((i for i, line in enumerate(lines) if line.startswith("error: ")), None)
    if error is None or error + 1 >= len(lines) or not lines[error + 1].startswith("hint: "):
        return "no error/hint"
    if attempt.because.lower() not in lines[error].lower():
        return "refused for another reason"
    return "clean"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, help="another patchkit checkout to replay the attempts against")
    parser.add_argument("--json", type=Path, help="write every attempt's outcome here")
    args = parser.parse_args()
    if args.source is not None:  # re-run this script with that checkout's package first on the path
        env = dict(os.environ, PYTHONPATH=str(args.source.resolve()))
        rest = ["--json", str(args.json)] if args.json else []
        raise SystemExit(subprocess.call([sys.executable, __file__, *rest], env=env))
    import patchkit

    os.environ.setdefault("PYTHONPATH", "")
    with tempfile.TemporaryDirectory(prefix="patchkit-hostile-") as tmp:
        root = Path(tmp)
        os.environ["PATCHKIT_HOME"] = str(root / "home")
        made = attempts(root)
        outcomes = []
        for attempt in made:
            outcome = judge(attempt)
            outcomes.append({"item": attempt.item, "attempt": attempt.name, "outcome": outcome})
            print(f"{attempt.item:>3}  {outcome:<26} {attempt.name}", flush=True)
    counts = Counter(o["outcome"] for o in outcomes)
    print(f"\npatchkit from {Path(patchkit.__file__).parent}")
    print(f"{len(outcomes)} attempts: " + ", ".join(f"{n} {k}" for k, n in counts.most_common()))
    if args.json:
        record = {"source": str(Path(patchkit.__file__).parent), "outcomes": outcomes}
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
