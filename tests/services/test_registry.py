"""The registry on real patch files: add, find, filter, remove, collect, export, verify; names; corruption."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from safetensors.torch import load_file

from patchkit.errors import ConflictError, CorruptFileError, InputError, PolicyError, UsageError
from patchkit.io.patch_file import read_patch
from patchkit.services import registry, signing
from patchkit.services.apply import apply
from patchkit.services.fixtures import synthetic_patch
from patchkit.services.patches import write_patch
from patchkit.services.sources import PatchSource


@pytest.fixture
def made(tiny_models, tmp_path) -> dict[str, Path]:
    folder, _ = tiny_models["sd15"]
    return {
        "circle": synthetic_patch(str(folder), tmp_path / "circle.safetensors", concept="circle", seed=1),
        "noir": synthetic_patch(str(folder), tmp_path / "noir.safetensors", concept="noir", category="style", seed=2),
        "xl": synthetic_patch(str(tiny_models["sdxl"][0]), tmp_path / "xl.safetensors", concept="circle", seed=3),
    }


def renamed(patch: Path, out: Path, name: str, version: str = "1.0.0") -> Path:
    manifest = dict(read_patch(patch).manifest, name=name, version=version)
    write_patch(out, load_file(str(patch)), manifest, family=manifest["base"]["family"], rank=4, resolution=64,
                base_name="x")  # fmt: skip
    return out


def test_add_is_content_addressed_idempotent_and_refuses_clashes(made, tmp_path):
    first = registry.add(made["circle"])
    assert first.added and first.entry.ref == "synthetic-circle@0.0.1"
    root = tmp_path / "registry"
    blob = root / "blobs" / "sha256" / first.entry.blob
    assert blob.read_bytes() == made["circle"].read_bytes()
    assert (root / "refs" / "synthetic-circle" / "0.0.1.json").is_file()
    assert not registry.add(made["circle"]).added  # the same file again: nothing changes
    with pytest.raises(ConflictError, match="different content"):
        registry.add(made["noir"], name="synthetic-circle", version="0.0.1")
    assert registry.add(made["noir"], name="synthetic-circle", version="0.0.2").added
    assert [s["version"] for s in registry.entries()] == ["0.0.1", "0.0.2"]
    assert registry.find("synthetic-circle").version == "0.0.2"  # NAME alone: the highest version


def test_filters_and_search(made, tiny_models, tmp_path):
    registry.add(made["circle"])
    registry.add(made["noir"])
    registry.add(made["xl"], name="xl-circle")
    registry.add(renamed(made["circle"], tmp_path / "c2.safetensors", "no-circle-v2", "1.10.0"))
    circle = [f"{s['name']}@{s['version']}" for s in registry.entries(concept="circle")]
    assert circle == ["no-circle-v2@1.10.0", "synthetic-circle@0.0.1", "xl-circle@0.0.1"]
    assert [s["name"] for s in registry.entries(category="style")] == ["synthetic-noir"]
    sd15 = registry.base_fingerprint_of(str(tiny_models["sd15"][0]))
    assert [s["name"] for s in registry.entries(base=sd15)] == ["no-circle-v2", "synthetic-circle", "synthetic-noir"]
    xl = registry.base_fingerprint_of(str(tiny_models["sdxl"][0]))
    assert [s["name"] for s in registry.entries(concept="circle", base=xl)] == ["xl-circle"]
    assert [s["name"] for s in registry.search("NOIR")] == ["synthetic-noir"]
    assert registry.entries(signed_by="team") == []


def test_signed_patches_record_the_signer_and_policy_refuses_unsigned(made, tmp_path):
    (tmp_path / "keys").mkdir()
    pair = signing.new_key(tmp_path / "keys", "team", None)
    signing.trust_store().add(pair.public, "release team")
    signing.sign(made["circle"], pair.private)
    entry = registry.add(made["circle"], require_signed=True).entry
    assert entry.record["signed_by"] == "release team"
    assert (tmp_path / "registry" / "blobs" / "sha256" / f"{entry.blob}.sig").is_file()
    assert [s["name"] for s in registry.entries(signed_by="release team")] == ["synthetic-circle"]
    with pytest.raises(PolicyError, match="not signed"):
        registry.add(made["noir"], require_signed=True)
    assert len(registry.entries()) == 1


def test_tampered_signature_is_refused(made, tmp_path):
    (tmp_path / "keys").mkdir()
    pair = signing.new_key(tmp_path / "keys", "team", None)
    signing.trust_store().add(pair.public, "team")
    signing.sign(made["circle"], pair.private)
    other = made["noir"]
    (other.parent / (other.name + ".sig")).write_bytes((made["circle"].parent / "circle.safetensors.sig").read_bytes())
    with pytest.raises(Exception, match=r"(?i)signature|verif"):
        registry.add(other)
    assert registry.entries() == []


@pytest.mark.parametrize(
    "bad", ["../escape", "a/b", "/abs", "a\\b", "tab\there", "nul\x00", "x" * 101, "..", "Upper", ""]
)
def test_names_that_could_escape_or_confuse_are_refused(made, tmp_path, bad):
    with pytest.raises(UsageError):
        registry.add(made["circle"], name=bad)
    if bad != "Upper":  # versions may use capitals (1.0.0-RC1)
        with pytest.raises(UsageError):
            registry.add(made["circle"], version=bad)
    assert not (tmp_path / "registry" / "refs").exists() or not any((tmp_path / "registry" / "refs").iterdir())
    assert not (tmp_path / "escape").exists()


def test_rm_gc_plan_and_export(made, tmp_path):
    a = registry.add(made["circle"]).entry
    registry.add(made["noir"])
    registry.remove("synthetic-noir@0.0.1")
    plan = registry.gc(dry_run=True)
    assert len(plan.blobs) == 1 and not plan.executed and plan.bytes == made["noir"].stat().st_size
    assert len(registry.open_registry().blob_names()) == 2  # the dry run deleted nothing
    assert registry.gc().executed and registry.open_registry().blob_names() == [a.blob]
    with pytest.raises(InputError, match="say which version"):
        registry.remove("synthetic-circle")
    out = tmp_path / "dist"
    out.mkdir()
    (exported,) = registry.export("synthetic-circle@0.0.1", out)
    assert (
        exported.name == "synthetic-circle-0.0.1.safetensors" and exported.read_bytes() == made["circle"].read_bytes()
    )


def test_both_layouts_of_a_patch_are_one_entry(made, tmp_path):
    from patchkit.services.export import export as export_layout

    twin = export_layout(made["circle"], "kohya", tmp_path / "circle.kohya.safetensors").output
    result = registry.add(made["circle"])  # brings its kohya twin from beside it
    assert result.added and not result.notes
    layouts = registry.layouts_of(result.entry)
    assert sorted(layouts) == ["kohya", "peft"] and layouts["peft"] == result.entry.blob
    assert registry.blob_for("synthetic-circle@0.0.1", layout="kohya").read_bytes() == twin.read_bytes()
    assert registry.entries()[0]["layouts"] == ["kohya", "peft"]
    assert not registry.add(twin).added  # already there, as this entry's kohya layout
    out = tmp_path / "dist"
    out.mkdir()
    names = [p.name for p in registry.export("synthetic-circle", out)]
    assert names == ["synthetic-circle-0.0.1.kohya.safetensors", "synthetic-circle-0.0.1.safetensors"]
    assert (out / names[0]).read_bytes() == twin.read_bytes()
    assert registry.verify_registry().ok
    registry.remove("synthetic-circle@0.0.1")
    assert len(registry.gc().blobs) == 2  # both layouts' blobs were the entry's


def test_the_other_layout_joins_its_entry_later_and_another_patch_clashes(made, tmp_path):
    from patchkit.services.export import export as export_layout

    registry.add(made["circle"])
    (tmp_path / "later").mkdir()
    twin = export_layout(made["circle"], "kohya", tmp_path / "later" / "c.safetensors").output
    joined = registry.add(twin)
    assert joined.added and sorted(registry.layouts_of(joined.entry)) == ["kohya", "peft"]
    other = export_layout(made["noir"], "kohya", tmp_path / "later" / "n.safetensors").output
    with pytest.raises(ConflictError, match="different content"):  # another patch id under the same name
        registry.add(other, name="synthetic-circle", version="0.0.1")


def test_a_twin_that_is_another_patch_or_unsigned_is_left_out_and_said(made, tmp_path):
    from patchkit.services.export import export as export_layout

    wrong = export_layout(made["noir"], "kohya", tmp_path / "circle.kohya.safetensors").output
    result = registry.add(made["circle"])
    assert sorted(registry.layouts_of(result.entry)) == ["peft"]
    assert len(result.notes) == 1 and "another patch id" in result.notes[0] and str(wrong) in result.notes[0]
    keys = tmp_path / "keys"
    keys.mkdir()
    pair = signing.new_key(keys, "team", None)
    wrong.unlink()
    export_layout(made["noir"], "kohya", tmp_path / "noir.kohya.safetensors")
    signing.sign(made["noir"], pair.private)  # the PEFT file signed, its twin not
    signed = registry.add(made["noir"])
    assert sorted(registry.layouts_of(signed.entry)) == ["peft"]
    assert "not signed by the key" in signed.notes[0]


def test_corrupted_blob_is_reported_and_refused_by_apply(made, tiny_models, tmp_path):
    entry = registry.add(made["circle"]).entry
    assert registry.verify_registry().ok
    blob = tmp_path / "registry" / "blobs" / "sha256" / entry.blob
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    report = registry.verify_registry()
    assert not report.ok and "corrupted" in report.problems[0]
    with pytest.raises(CorruptFileError, match="corrupted on disk"):
        source = registry.patch_path("synthetic-circle@0.0.1")
        apply(str(tiny_models["sd15"][0]), [PatchSource(source)], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_reindex_rebuilds_a_lost_index(made, tmp_path):
    registry.add(made["circle"])
    registry.add(made["noir"])
    index = tmp_path / "registry" / "index.json"
    index.unlink()
    assert registry.entries() == []
    assert registry.reindex() == 2
    assert len(registry.entries()) == 2
    assert json.loads(index.read_text())["layout_version"] == 1


def test_a_folder_that_is_not_a_registry_is_refused(made, tmp_path):
    stranger = tmp_path / "photos"
    stranger.mkdir()
    (stranger / "cat.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match="not a patchkit registry"):
        registry.add(made["circle"], root=stranger)


def test_signed_by_follows_the_trust_store_for_keys_trusted_later(made, tmp_path):
    (tmp_path / "keys").mkdir()
    pair = signing.new_key(tmp_path / "keys", "late", None)
    signing.sign(made["noir"], pair.private)
    entry = registry.add(made["noir"]).entry  # signed, but by a key nobody trusts yet
    assert entry.record["signed_by"] is None and entry.record["key"]
    assert registry.entries(signed_by="late team") == []
    signing.trust_store().add(pair.public, "late team")
    [found] = registry.entries(signed_by="late team")
    assert found["name"] == "synthetic-noir" and found["trusted_as"] == "late team"


def test_a_registry_half_created_by_another_writer_is_accepted(made, tmp_path):
    root = tmp_path / "fresh"
    (root / "blobs").mkdir(parents=True)  # what a concurrent first writer leaves before its marker
    (root / ".lock").touch()
    (root / ".registry.json.123.abc.partial").touch()
    assert registry.add(made["circle"], root=root).added
    assert (root / "registry.json").is_file()


@pytest.mark.parametrize("kind", ["symlink-to-dev-zero", "fifo"])
def test_verify_reports_a_blob_replaced_by_a_link_or_fifo_without_hanging(made, kind):
    """A blob swapped for a symlink to /dev/zero, or for a FIFO, once made `registry verify` block forever."""
    import os

    entry = registry.add(made["circle"]).entry
    blob = registry.open_registry(None).blob_path(entry.blob)
    blob.unlink()
    if kind == "fifo":
        os.mkfifo(blob)
    else:
        blob.symlink_to("/dev/zero")
    report = registry.verify_registry()
    assert not report.ok
    assert any("symbolic link" in p or "FIFO" in p for p in report.problems), report.problems


@pytest.mark.parametrize("kind", ["symlink-to-dev-zero", "fifo", "symlink-to-a-big-file"])
def test_verify_reports_a_ref_replaced_by_a_link_or_fifo(made, tmp_path, kind):
    """A ref swapped for a FIFO (or a link) was skipped by `registry verify`, which then said ok
    with one entry fewer; a link to a big file was read whole. Each is a finding naming the ref."""
    import os

    entry = registry.add(made["circle"]).entry
    ref = registry.open_registry(None).ref_path(entry.name, entry.version)
    ref.unlink()
    if kind == "fifo":
        os.mkfifo(ref)
    elif kind == "symlink-to-dev-zero":
        ref.symlink_to("/dev/zero")
    else:
        big = tmp_path / "big.json"
        with big.open("wb") as handle:
            handle.truncate(1 << 30)  # sparse: a gigabyte a reader must not load
        ref.symlink_to(big)
    report = registry.verify_registry()
    assert not report.ok
    assert any(entry.name in p and ("symbolic link" in p or "FIFO" in p) for p in report.problems), report.problems


def _edit_ref(entry, **changes):
    import json

    path = registry.open_registry(None).ref_path(entry.name, entry.version)
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_verify_catches_a_ref_edited_to_claim_a_signer(made, tmp_path):
    """An unsigned entry hand-edited to `"signed_by": "release team"` once passed verify and showed
    up under `list --signed-by`; the claim is now held against the signature and the trust store."""
    (tmp_path / "keys").mkdir()
    pair = signing.new_key(tmp_path / "keys", "team", None)
    signing.trust_store().add(pair.public, "release team")
    unsigned = registry.add(made["noir"]).entry
    _edit_ref(unsigned, signed=True, signed_by="release team", key=signing.trust_store().trusted_keys()[0].fingerprint)
    registry.reindex()
    report = registry.verify_registry()
    assert not report.ok and any("claims a signature" in p for p in report.problems), report.problems
    assert registry.entries(signed_by="release team") == []  # the forged entry lists under nobody's key


def test_verify_catches_a_signed_ref_edited_to_another_signer(made, tmp_path):
    (tmp_path / "keys").mkdir()
    pair = signing.new_key(tmp_path / "keys", "team", None)
    signing.trust_store().add(pair.public, "release team")
    signing.sign(made["circle"], pair.private)
    entry = registry.add(made["circle"]).entry
    assert registry.verify_registry().ok
    _edit_ref(entry, signed_by="the auditors")
    report = registry.verify_registry()
    assert not report.ok and any("'the auditors'" in p for p in report.problems), report.problems


def test_a_ref_whose_blob_names_a_path_outside_is_a_problem_not_a_read(made):
    entry = registry.add(made["circle"]).entry
    _edit_ref(entry, blob="../../../../etc/passwd")
    report = registry.verify_registry()
    assert not report.ok and any("not a SHA-256 name" in p for p in report.problems), report.problems


def test_gc_finds_and_removes_what_killed_writers_left_everywhere(made, tmp_path):
    """A kill during `registry add` can leave a half-written ref, an index temporary, or a .sig
    whose blob never landed; verify reports them and gc removes them (a pid that is not running)."""
    entry = registry.add(made["circle"]).entry
    root = tmp_path / "registry"
    dead = 2**22 + 12345  # above the default pid_max: no process has it
    leftovers = [
        root / "refs" / entry.name / f".{entry.version}.json.{dead}.abc123.partial",
        root / f".index.json.{dead}.def456.partial",
        root / "blobs" / "sha256" / ("f" * 64 + ".sig"),
    ]
    for path in leftovers:
        path.write_bytes(b"half")
    alive = root / f".index.json.{os.getpid()}.ghi789.partial"  # a live writer's: never touched
    alive.write_bytes(b"busy")
    report = registry.verify_registry()
    assert report.ok and any("3 leftovers of killed writers" in n for n in report.notes), report.notes
    plan = registry.gc()
    assert set(leftovers) <= set(plan.temporaries) and alive not in plan.temporaries
    assert not any(p.exists() for p in leftovers) and alive.exists()
    assert registry.verify_registry().ok and (root / "blobs" / "sha256" / entry.blob).is_file()


def test_verify_refuses_a_layout_it_does_not_know_and_a_damaged_index_is_one_error(made, tmp_path):
    registry.add(made["circle"])
    root = tmp_path / "registry"
    marker = root / "registry.json"
    marker.write_text('{"layout_version": 2}')
    with pytest.raises(InputError, match="registry layout 2 is not 1"):
        registry.verify_registry()
    marker.write_text('{"layout_version": 1}')
    for damaged in ("[1, 2]", '{"entries": [1]}', "[" * 100_000 + "]" * 100_000):
        (root / "index.json").write_text(damaged)
        with pytest.raises(CorruptFileError, match="is damaged"):
            registry.entries()


def test_a_bundle_with_fields_of_the_wrong_type_is_malformed_not_a_crash(made):
    from patchkit.errors import TrustError
    from patchkit.io.signatures import read_bundle, signature_path_for

    sig = signature_path_for(made["circle"])
    sig.write_text(json.dumps({"dsseEnvelope": {"payload": "e30="}, "verificationMaterial": "a string"}))
    with pytest.raises(TrustError, match="not a model-signing bundle"):
        read_bundle(sig)


def test_a_refused_name_is_shown_with_its_control_characters_escaped_once():
    with pytest.raises(UsageError) as refused:
        registry.check_name("a\nb")
    assert "'a\\nb'" in refused.value.message and "\\\\n" not in refused.value.message
