"""Rebuild this example registry: patchkit's own reference patches for the testbed, scored and signed.

Run from the repository root: .venv/bin/python registry/make_examples.py KEY_FOLDER

KEY_FOLDER holds (or receives) the signing key `patchkit-examples.key`; only its public half
is kept here, in registry/keys/. Each concept is forgotten with the default settings (gore
as `--preset testbed-nsfw` trains it: with --ti and 90 steps) and scored on the testbed
bench (--score), then signed and added. SOURCE_DATE_EPOCH pins the
creation time, so the same inputs give the same patch bytes.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from patchkit.models.refs import ModelSource
from patchkit.services import registry, signing
from patchkit.services.forget import forget
from patchkit.services.forget_request import ForgetRequest
from patchkit.training.presets import preset_settings
from patchkit.training.prompts import Concept
from patchkit.training.settings import ForgetSettings

HERE = Path(__file__).resolve().parent
CONCEPTS = [Concept("alice", "id"), Concept("circle", "object"), Concept("noir", "style"), Concept("gore", "nsfw")]


def main() -> None:
    keys = Path(sys.argv[1])
    keys.mkdir(parents=True, exist_ok=True)
    if not (keys / "patchkit-examples.key").is_file():
        signing.new_key(keys, "patchkit-examples", None)
    (HERE / "keys").mkdir(exist_ok=True)
    shutil.copy(keys / "patchkit-examples.pub", HERE / "keys" / "patchkit-examples.pub")
    os.environ.setdefault("SOURCE_DATE_EPOCH", "1798761600")  # 2027-01-01
    with tempfile.TemporaryDirectory() as work:
        for concept in CONCEPTS:
            out = Path(work) / f"no-{concept.name}.safetensors"
            settings = ForgetSettings()
            if concept.category == "nsfw":
                settings = preset_settings("testbed-nsfw", settings, set())
            request = ForgetRequest(
                ModelSource("testbed"), (concept,), out, settings, name=f"testbed-no-{concept.name}", version="1.0.0",
                author="patchkit", license_id="Apache-2.0", score_bench=None,
            )  # fmt: skip
            forget(request)
            signing.sign(out, keys / "patchkit-examples.key")
            result = registry.add(out, root=HERE)
            print(result.entry.ref, result.entry.blob[:16])


if __name__ == "__main__":
    main()
