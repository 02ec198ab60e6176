"""Stacked against fused: does loading two forgets together undo one of them? (testbed)

Run: .venv/bin/python bench/stack.py [--out FILE]

Four FMN forgets are trained with the defaults (circle and noir, each plain and with --ti).
For each pair, the two patches are scored (1) loaded together as two adapters, as a diffusers
user stacks them (`patchkit score -p A -p B`; `merge --method concat` is the same delta), and
(2) merged with `patchkit merge --method fuse --base testbed`. The bench is the testbed's
own prompts for circle ("a photo of a circle", 32 images), noir ("a <shape> in the style of
noir", 4 prompts x 8) and two bystanders, ring and neon: none of them is a prompt any patch
trained on, and the fuse's one weight (PRESERVE_WEIGHT = 1) was set before this ran, not
picked on it. The drift column is what `merge --method fuse` reports: how far the other
patch moves each patch's edit of its own training prompts (stacked -> fused).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PATCHKIT = [sys.executable, "-m", "patchkit", "--quiet"]
PATCHES = {
    "no-circle": ["-c", "circle", "--category", "object"],
    "ti-circle": ["-c", "circle", "--category", "object", "--ti"],
    "no-noir": ["-c", "noir", "--category", "style"],
    "ti-noir": ["-c", "noir", "--category", "style", "--ti"],
}
PAIRS = (("ti-circle", "no-noir"), ("ti-circle", "ti-noir"), ("no-circle", "no-noir"))
PER_PROMPT = {"circle": 32, "noir": 8, "ring": 16, "neon": 4}


def _run(args: list[str]) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    done = subprocess.run([*PATCHKIT, *args], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"patchkit {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def _bench(folder: Path) -> Path:
    from patchkit.testbed.conceptbench_build import build_testbed_bench

    data = build_testbed_bench()
    data["concepts"] = [dict(c, images_per_prompt=PER_PROMPT[c["name"]]) for c in data["concepts"]
                        if c["name"] in PER_PROMPT]  # fmt: skip
    path = folder / "bench.json"
    path.write_text(json.dumps(data))
    return path


def _scores(bench: Path, patches: list[Path]) -> dict[str, float]:
    args = ["score", "testbed", "--bench", str(bench), "--json"]
    for patch in patches:
        args += ["-p", str(patch)]
    report = json.loads(_run(args))
    return {c["concept"]: c["after"]["score"] for c in report["concepts"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="patchkit-bench-stack-") as name:
        folder = Path(name)
        bench = _bench(folder)
        for patch, options in PATCHES.items():
            _run(["forget", "testbed", *options, "-o", str(folder / f"{patch}.safetensors")])
        for first, second in PAIRS:
            pair = [folder / f"{first}.safetensors", folder / f"{second}.safetensors"]
            fused = folder / f"{first}+{second}.safetensors"
            merged = json.loads(_run(["merge", *map(str, pair), "--method", "fuse", "--base", "testbed",
                                      "-o", str(fused), "--json"]))  # fmt: skip
            stacked, fitted = _scores(bench, pair), _scores(bench, [fused])
            row = {"pair": f"{first} + {second}", "stacked": stacked, "fused": fitted, "drifts": merged["drifts"]}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(
        "| pair | circle stacked → fused | noir stacked → fused | ring | neon | drift circle, noir (stacked → fused) |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        s, f, d = row["stacked"], row["fused"], row["drifts"]
        drift = ", ".join(f"{x['stacked']:.0%} → {x['fused']:.0%}" for x in d)
        print(
            f"| {row['pair']} | {s['circle']:.2f} → {f['circle']:.2f} | {s['noir']:.2f} → {f['noir']:.2f} | "
            f"{s['ring']:.2f} → {f['ring']:.2f} | {s['neon']:.2f} → {f['neon']:.2f} | {drift} |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
