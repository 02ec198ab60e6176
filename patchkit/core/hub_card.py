"""What a Hub model card may say, by the Hub's metadata rules: licence ids, base models, tags.

The Hub checks a card's YAML when it is pushed (`RepoCard.validate` asks the Hub, which needs
the network); these are the rules it applies to the fields patchkit writes, kept here so that
a card is right before it leaves the machine and a test can check one offline.
"""

from __future__ import annotations

import re
from typing import Any

# The Hub's licence identifiers (huggingface.co/docs/hub/repositories-licenses): lowercase, and
# `other` with `license_name`/`license_link` for anything else.
_LICENSE_IDS = """
    apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
    bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear
    c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0
    cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0
    cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl
    ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl
    lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0
    odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr
    deepfloyd-if-license fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 llama3.3
    llama4 gemma unknown other
"""
HUB_LICENSES = frozenset(_LICENSE_IDS.split())
PIPELINE_TAG = "text-to-image"
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}")
_FAMILY_TAGS = {"sd1": ["stable-diffusion"], "sd2": ["stable-diffusion"],
                "sdxl": ["stable-diffusion-xl", "stable-diffusion"]}  # fmt: skip


def hub_license(license_: str | None) -> dict[str, str]:
    """The card fields for a licence as the manifest records it (SPDX `Apache-2.0` -> `apache-2.0`);
    one the Hub does not list becomes `other` with its name kept in `license_name`."""
    if not license_:
        return {}
    lowered = license_.strip().lower()
    if lowered in HUB_LICENSES:
        return {"license": lowered}
    name = re.sub(r"[^a-z0-9.+-]+", "-", lowered).strip("-") or "custom"
    return {"license": "other", "license_name": name}


def is_hub_repo_id(text: str) -> bool:
    return _REPO_ID.fullmatch(text) is not None and ".." not in text


def hub_base_model(base: dict[str, Any]) -> str | None:
    """The base as the Hub's `base_model`: only a repo id resolved from the Hub (a revision was
    recorded); a local folder that looks like ORG/NAME, a file or the testbed is no Hub model."""
    reference = str(base.get("reference", ""))
    return reference if base.get("revision") and is_hub_repo_id(reference) else None


def card_tags(family: str, categories: list[str]) -> list[str]:
    tags = ["lora", *_FAMILY_TAGS.get(family, ["stable-diffusion"]), PIPELINE_TAG, "diffusers", "patchkit",
            "concept-removal", *categories]  # fmt: skip
    return list(dict.fromkeys(tags))


def card_problems(data: dict[str, Any]) -> list[str]:
    """What the Hub would refuse or misfile in a card's metadata (the fields patchkit writes)."""
    problems = []
    license_ = data.get("license")
    if license_ is not None and license_ not in HUB_LICENSES:
        problems.append(f"license {license_!r} is not a Hub licence id")
    if license_ == "other" and not data.get("license_name"):
        problems.append("license 'other' needs a license_name")
    base = data.get("base_model")
    if base is not None and not (isinstance(base, str) and is_hub_repo_id(base)):
        problems.append(f"base_model {base!r} is not a Hub repo id")
    if data.get("base_model_relation") is not None and base is None:
        problems.append("base_model_relation without a base_model")
    if data.get("pipeline_tag") not in (None, PIPELINE_TAG):
        problems.append(f"pipeline_tag {data.get('pipeline_tag')!r} is not {PIPELINE_TAG!r}")
    tags = data.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        problems.append("tags must be a list of non-empty strings")
    return problems
