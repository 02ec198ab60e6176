"""The only package that imports diffusers and transformers.

Importing it quietens their loggers and progress bars: patchkit reports progress itself,
on stderr, and the libraries' own bars would garble it.
"""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", message=".*torch_dtype.*is deprecated.*")
# peft warns on every second adapter; a stack of patches is several adapters on purpose
warnings.filterwarnings("ignore", message=".*Already found a `peft_config` attribute in the model.*")


def quiet_libraries() -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
