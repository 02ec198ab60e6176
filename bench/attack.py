"""attack/1 on the testbed: the base, the default FMN forget and the closed-form forget, per concept.

Run: .venv/bin/python bench/attack.py [--concepts circle alice neon] [--arms base fmn ...] [--out FILE]
     [--attacks composition ...] [--revival]

For each concept, up to five arms, each the whole `patchkit attack testbed -c C` command in
its own process with 2 threads (wall time and peak RSS from wait4()):
- base: the testbed as shipped (an attack that fails here proves nothing about a patch);
- fmn-plain: Forget-Me-Not as published, attention re-steering alone (`--anchor 0 --preserve 0
  --own-templates`: no anchor loss, no preservation, only the category's own templates);
- fmn: `patchkit forget testbed -c C --category K`, the defaults;
- fmn-ti: the defaults with `--ti` (forget through a token learnt on the concept's images too);
- fmn-held: the defaults with `--hold-states 0.5` (the held-states term the tuning split picked);
- closed-form: the same with `--method closed-form`;
- fmn-robust, closed-form-robust: the same with `--robust`.
The patches are trained first (not timed here; bench/forget.py and bench/closed_form.py time
them). The text attacks leave out every prompt a patch's manifest says it trained or
preserved on, so nothing is measured on what a forget was fitted to. The table gives each
attack's ASR (share of its images the testbed judge calls the concept, attack/1 budget,
judged on seeds 50,000,000 and up) and the worst case; with --revival, also the fine-tuning
steps that bring the concept back and the steps the base needs to learn it under a new word
(revival/1, report only).
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

ARMS = ("base", "fmn-plain", "fmn", "fmn-ti", "fmn-held", "closed-form", "fmn-robust", "closed-form-robust")
ATTACKS = ("composition", "misspelling", "paraphrase", "search", "inversion")
ARM_FLAGS = {
    "fmn-plain": ["--method", "fmn", "--anchor", "0", "--preserve", "0", "--own-templates"],
    "fmn": ["--method", "fmn"],
    "closed-form": ["--method", "closed-form"],
    "fmn-ti": ["--method", "fmn", "--ti"],
    "fmn-held": ["--method", "fmn", "--hold-states", "0.5"],  # the held-states term the split picked
    "fmn-robust": ["--method", "fmn", "--robust"],
    "closed-form-robust": ["--method", "closed-form", "--robust"],
}
CATEGORIES = {
    "alice": "id", "bella": "id", "carl": "id", "john doe": "id",
    "circle": "object", "ring": "object", "square": "object", "triangle": "object",
    "neon": "style", "noir": "style", "pastel": "style", "sunset": "style", "gore": "nsfw",
}  # fmt: skip


# threads per process: 2, the machine's cores; BENCH_THREADS=1 beside another job (timings then
# are not comparable with the README's)
THREADS = os.environ.get("BENCH_THREADS", "2")


def run(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one process; its output goes to a file, never a full pipe."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(args, stdout=log, stderr=log, env={**os.environ, "OMP_NUM_THREADS": THREADS})
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            raise SystemExit(f"{' '.join(args)} failed:\n{log.read()[-2000:]}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def write_rows(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", nargs="+", default=["circle", "alice", "neon"])
    parser.add_argument("--arms", nargs="+", default=["base", "fmn", "closed-form"], choices=ARMS)
    parser.add_argument("--out", type=Path, default=None, help="also write every report here, as JSON")
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS, help="default: all five")
    parser.add_argument("--revival", action="store_true", help="also measure revival (report only)")
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
                patch = root / f"{slug}-{arm}.safetensors"
                started = time.perf_counter()
                run([cli, "-q", "forget", "testbed", "-c", concept, "--category", category, *ARM_FLAGS[arm],
                     "-o", str(patch)])  # fmt: skip
                print(f"  {concept:9} {arm:18} trained in {time.perf_counter() - started:.0f} s", flush=True)
                arms[arm] = ["-p", str(patch)]
            for arm, extra in arms.items():
                out = root / f"{slug}-{arm}"
                chosen = [flag for a in args.attacks for flag in ("-a", a)]
                wall, rss = run([cli, "-q", "attack", "testbed", "-c", concept, *extra, *chosen,
                                 *(["--revival"] if args.revival else []), "-o", str(out)])  # fmt: skip
                report = json.loads((out / "report.json").read_text())
                (result,) = report["concepts"]
                asr = {a["attack"]: a.get("asr") for a in result["attacks"]}
                revival = result.get("revival")
                rows.append({"concept": concept, "arm": arm, "asr": asr, "worst": result["worst_asr"],
                             "worst_attack": result["worst_attack"], "seconds": wall, "rss_mib": rss,
                             "revival": revival, "report": report})  # fmt: skip
                said = f"; {revival['verdict']}" if revival else ""
                print(f"  {concept:9} {arm:18} worst {result['worst_asr']:.2f} in {wall:.0f} s{said}", flush=True)
                if args.out:  # after every row, so a long run stopped half-way keeps what it measured
                    write_rows(args.out, rows)
    revival_columns = " revived at | new word learnt at |" if args.revival else ""
    print("\n| concept | model | " + " | ".join(args.attacks) + f" | worst |{revival_columns} seconds | peak RSS |")
    print("|---|---|" + "---:|" * (len(args.attacks) + 3 + (2 if args.revival else 0)))
    for row in rows:
        cells = ["—" if row["asr"].get(a) is None else f"{row['asr'][a]:.2f}" for a in args.attacks]
        cells.append(f"**{row['worst']:.2f}**")
        if row["revival"]:  # steps; "> 200": not within revival/1's budget
            steps = (row["revival"]["revived_step"], row["revival"]["learnt_step"])
            cells += ["> 200" if s is None else str(s) for s in steps]
        cells += [f"{row['seconds']:.0f}", f"{row['rss_mib']:.0f} MiB"]
        print(f"| {row['concept']} | {row['arm']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
