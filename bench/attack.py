"""attack/1 on the testbed: the base, the default FMN forget and the closed-form forget, per concept.

Run: .venv/bin/python bench/attack.py [--concepts circle alice neon] [--arms base fmn ...] [--out FILE]

For each concept, up to five arms, each the whole `patchkit attack testbed -c C` command in
its own process with 2 threads (wall time and peak RSS from wait4()):
- base: the testbed as shipped (an attack that fails here proves nothing about a patch);
- fmn: `patchkit forget testbed -c C --category K`, the defaults;
- closed-form: the same with `--method closed-form`;
- fmn-robust, closed-form-robust: the same with `--robust`.
The patches are trained first (not timed here; bench/forget.py and bench/closed_form.py time
them). The text attacks leave out every prompt a patch's manifest says it trained or
preserved on, so nothing is measured on what a forget was fitted to. The table gives each
attack's ASR (share of its images the testbed judge calls the concept, attack/1 budget,
judged on seeds 50,000,000 and up) and the worst case.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARMS = ("base", "fmn", "closed-form", "fmn-robust", "closed-form-robust")
ATTACKS = ("composition", "misspelling", "paraphrase", "search", "inversion")
CATEGORIES = {
    "alice": "id", "bella": "id", "carl": "id", "john doe": "id",
    "circle": "object", "ring": "object", "square": "object", "triangle": "object",
    "neon": "style", "noir": "style", "pastel": "style", "sunset": "style", "gore": "nsfw",
}  # fmt: skip


def run(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one process; its output goes to a file, never a full pipe."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(args, stdout=log, stderr=log, env={**os.environ, "OMP_NUM_THREADS": "2"})
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            raise SystemExit(f"{' '.join(args)} failed:\n{log.read()[-2000:]}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", nargs="+", default=["circle", "alice", "neon"])
    parser.add_argument("--arms", nargs="+", default=["base", "fmn", "closed-form"], choices=ARMS)
    parser.add_argument("--out", type=Path, default=None, help="also write every report here, as JSON")
    args = parser.parse_args()
    cli = str(Path(sys.executable).with_name("patchkit"))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for concept in args.concepts:
            category = CATEGORIES[concept]
            slug = concept.replace(" ", "-")
            arms: dict[str, list[str]] = {}
            for arm in args.arms:
                if arm == "base":
                    arms[arm] = []
                    continue
                method, robust = arm.removesuffix("-robust"), arm.endswith("-robust")
                patch = root / f"{slug}-{arm}.safetensors"
                started = time.perf_counter()
                run([cli, "-q", "forget", "testbed", "-c", concept, "--category", category, "--method", method,
                     *(["--robust"] if robust else []), "-o", str(patch)])  # fmt: skip
                print(f"  {concept:9} {arm:18} trained in {time.perf_counter() - started:.0f} s", flush=True)
                arms[arm] = ["-p", str(patch)]
            for arm, extra in arms.items():
                out = root / f"{slug}-{arm}"
                wall, rss = run([cli, "-q", "attack", "testbed", "-c", concept, *extra, "-o", str(out)])
                report = json.loads((out / "report.json").read_text())
                (result,) = report["concepts"]
                asr = {a["attack"]: a.get("asr") for a in result["attacks"]}
                rows.append({"concept": concept, "arm": arm, "asr": asr, "worst": result["worst_asr"],
                             "worst_attack": result["worst_attack"], "seconds": wall, "rss_mib": rss,
                             "report": report})  # fmt: skip
                print(f"  {concept:9} {arm:18} worst {result['worst_asr']:.2f} in {wall:.0f} s", flush=True)
    print("\n| concept | model | " + " | ".join(ATTACKS) + " | worst | seconds | peak RSS |")
    print("|---|---|" + "---:|" * (len(ATTACKS) + 3))
    for row in rows:
        cells = ["—" if row["asr"].get(a) is None else f"{row['asr'][a]:.2f}" for a in ATTACKS]
        print(f"| {row['concept']} | {row['arm']} | " + " | ".join(cells)
              + f" | **{row['worst']:.2f}** | {row['seconds']:.0f} | {row['rss_mib']:.0f} MiB |")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
