"""`registry list --concept` over 10,000 entries: the index against a naive scan of every manifest.

Run: .venv/bin/python bench/registry.py [--entries 10000] [--root /tmp/patchkit-bench]

The entries are written straight into a registry's refs/ (a real manifest, renamed and given
one of 200 concepts each), then `registry reindex` builds the index, as it would after a
restore. Both arms answer the same question in the same process: which entries forget
"concept-7"? The CLI row adds process start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def build(root: Path, count: int) -> None:
    from patchkit.services import registry

    manifest = {
        "schema_version": 1, "patch_id": "sha256:" + "0" * 64, "name": "x", "version": "1.0.0",
        "base": {"family": "sd1", "reference": "sd15", "revision": None, "fingerprint": "a" * 64, "dtype": "float16"},
        "concepts": [], "method": {"name": "import", "settings": {}}, "created_at": "2026-01-01T00:00:00+00:00",
        "tool": "patchkit bench",
    }  # fmt: skip
    store = registry.open_registry(root)
    store.ensure()
    for i in range(count):
        name = f"patch-{i:05d}"
        concept = {"name": f"concept-{i % 200}", "category": ("id", "object", "style")[i % 3], "action": "forget",
                   "token": f"concept-{i % 200}"}  # fmt: skip
        record = {"name": name, "version": "1.0.0", "blob": f"{i:064x}", "patch_id": manifest["patch_id"],
                  "manifest": dict(manifest, name=name, concepts=[concept]), "signed": False, "signed_by": None,
                  "added_at": "2026-01-01T00:00:00+00:00"}  # fmt: skip
        folder = store.refs / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "1.0.0.json").write_text(json.dumps(record))


def naive(root: Path, concept: str) -> list[str]:
    found = []
    for path in sorted((root / "refs").glob("*/*.json")):
        record = json.loads(path.read_text())
        if any(c["name"] == concept for c in record["manifest"]["concepts"]):
            found.append(f"{record['name']}@{record['version']}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--root", type=Path, default=Path("/tmp/patchkit-bench"))
    args = parser.parse_args()
    from patchkit.services import registry

    root = args.root / "registry-bench"
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    build(root, args.entries)
    built = time.perf_counter() - start
    start = time.perf_counter()
    registry.reindex(root)
    reindexed = time.perf_counter() - start

    rows = []
    for label, run in (
        ("patchkit registry list --concept (index)", lambda: registry.entries(root, concept="concept-7")),
        ("naive: read every manifest", lambda: naive(root, "concept-7")),
    ):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            found = run()
            times.append(time.perf_counter() - start)
        rows.append((label, min(times), len(found)))
    command = [sys.executable, "-m", "patchkit", "registry", "list", "--concept", "concept-7", "--json",
               "--registry", str(root)]  # fmt: skip
    start = time.perf_counter()
    listed = json.loads(subprocess.run(command, capture_output=True, check=True, env={**os.environ}).stdout)
    rows.append(("`patchkit registry list --concept` CLI, whole process", time.perf_counter() - start, len(listed)))

    print(f"{args.entries} entries (refs written in {built:.1f} s, `registry reindex` {reindexed:.2f} s); best of 3")
    print("| arm | seconds | matches |")
    print("|---|---:|---:|")
    for label, seconds, matches in rows:
        print(f"| {label} | {seconds:.3f} | {matches} |")
    print(f"\nindex vs naive: {rows[1][1] / rows[0][1]:.0f}x faster")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
