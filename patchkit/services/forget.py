"""`patchkit forget` and `patchkit correct`: plan the request, then run the method it names.

Two methods write the same patch (diffusers/PEFT LoRA file, manifest, signing, merge, stack
and apply alike): Forget-Me-Not, trained (services.fmn_forget), and the closed-form edit
of the cross-attention projections (services.closed_form_forget). Each method's module is
imported only when it runs: FMN's pulls in diffusers, the closed form needs only the text
encoder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from patchkit.core.progress import Progress
from patchkit.services.forget_plan import ForgetPlan, default_name, embeddings_path, plan_forget
from patchkit.services.forget_record import ForgetResult
from patchkit.services.forget_request import ForgetRequest

__all__ = ["ForgetPlan", "ForgetResult", "default_name", "embeddings_path", "forget", "plan_forget"]


def forget(
    request: ForgetRequest,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
    planned: Callable[[ForgetPlan], None] | None = None,
) -> ForgetResult:
    """Forget (or, for concepts with a target, correct) the request's concepts; write the patch atomically.

    `warn` hears about training prompts dropped because the model's context truncates them;
    `planned` hears the plan once every check passed, before any work (a refusal prints nothing else).
    """
    plan = plan_forget(request)
    if planned is not None:
        planned(plan)
    if request.method == "closed-form":
        from patchkit.services import closed_form_forget

        result = closed_form_forget.run(plan, progress, warn)
    else:
        from patchkit.services import fmn_forget

        result = fmn_forget.run(plan, progress, warn)
    return _with_kohya(result) if request.kohya else result


def _with_kohya(result: ForgetResult) -> ForgetResult:
    """The same deltas in the kohya layout beside the patch; if that cannot be written, neither is kept."""
    from patchkit.services.export import write_kohya_twin

    return dataclasses.replace(result, kohya=write_kohya_twin(result.output, with_it=[result.embeddings]))
