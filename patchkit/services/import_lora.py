"""`patchkit import`: a LoRA or an edited state dict made by another tool, as a patchkit patch.

Three kinds of file are read, told apart by their keys:

- a diffusers/PEFT LoRA (`unet.<module>.lora_A.weight`, also PEFT's own `base_model.model.`
  prefix and adapter-named keys) is kept as it is;
- a kohya LoRA (`lora_unet_<module>.lora_down.weight` + `.alpha`, as A1111, ComfyUI and
  civitai files are) is renamed with diffusers' converter, each alpha folded into lora_B;
- whole edited UNet weights (what ESD and UCE save; diffusers or original-SD names) become
  the difference from the base, factored by truncated SVD (core/low_rank.py), with the error
  that costs reported, and refused past `max_error`.

Every module must exist in the base with the shapes the factors need, or the import is
refused naming the first one that does not. The manifest binds the patch to the base's
fingerprint, so it is scored, attacked, signed, registered, merged, stacked and applied like
any patch patchkit trains.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from patchkit.core import low_rank
from patchkit.core.dtypes import FLOATS
from patchkit.core.layouts import kohya_sibling
from patchkit.core.ldm_layout import unet_key_from_ldm
from patchkit.core.lora_names import is_kohya_name
from patchkit.core.manifest import ConceptRecord, new_manifest
from patchkit.core.names import check_name, check_version
from patchkit.core.patch_id import patch_id_of
from patchkit.core.world import CATEGORIES
from patchkit.errors import CorruptFileError, InputError, ModelMismatchError, PickleRefusedError, UsageError
from patchkit.io.atomic import check_output_path
from patchkit.io.regular import not_a_file
from patchkit.io.safetensors_io import PICKLE_SUFFIXES, Header, read_header, refuse_pickle
from patchkit.io.tensor_spans import SpanReader
from patchkit.models import weights
from patchkit.models.refs import ModelSource
from patchkit.services.export import write_kohya_twin
from patchkit.services.patches import base_record, created_at, write_patch

_PEFT = re.compile(r"(?P<module>.+)\.lora_(?P<factor>[AB])(?:\.[A-Za-z0-9_-]+)?\.weight")
_TEXT_ENCODER = ("lora_te", "text_encoder", "te_", "cond_stage_model.", "conditioner.")


@dataclass(frozen=True)
class ImportRequest:
    source: Path
    model: ModelSource
    concepts: Sequence[str]
    category: str
    output: Path
    method: str | None = None  # the tool that made the source (esd, uce, spm, mace, kohya, ...): recorded
    rank: int | None = None  # whole weights only: the SVD rank; None picks the least within max_error
    max_error: float = 0.01  # whole weights only: the largest relative error any module may have
    name: str | None = None
    version: str = "1.0.0"
    author: str | None = None
    license_id: str | None = None
    allow_pickle: bool = False
    kohya: bool = False
    force: bool = False


@dataclass(frozen=True)
class SvdFit:
    """How edited weights were cut to a LoRA: the rank, and the relative error it costs."""

    rank: int
    error: float  # the whole patch
    worst: float  # the worst module
    worst_module: str
    unchanged: int  # weights the source holds but did not change


@dataclass(frozen=True)
class ImportResult:
    output: Path
    kind: str  # peft, kohya or weights
    modules: int
    rank: int
    patch_id: str
    error: float | None  # weights only: relative Frobenius error of the whole patch
    worst_error: float | None  # weights only: the largest error of one module
    worst_module: str | None
    unchanged: int  # weights only: modules the source holds but did not change
    kohya: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {"output": str(self.output), "kind": self.kind, "modules": self.modules, "rank": self.rank,
                "patch_id": self.patch_id, "svd_error": self.error, "worst_module_error": self.worst_error,
                "worst_module": self.worst_module, "unchanged_modules": self.unchanged,
                "kohya": str(self.kohya) if self.kohya else None}  # fmt: skip


def import_lora(request: ImportRequest, say: Callable[[str], None] | None = None) -> ImportResult:
    _check_request(request)
    tensors = _read_source(request)
    kind = kind_of(tensors, request.source)
    ref = request.model.resolve()
    info = weights.describe(ref)
    spans = weights.model_spans(ref)["unet"]
    if kind == "weights":
        factors, fit = _from_weights(tensors, spans, info.configs["unet"], request, say)
    else:
        factors, fit = _from_lora(tensors, kind, spans), None
    ranks = sorted({int(v.shape[0]) for k, v in factors.items() if k.endswith(".lora_A.weight")})
    parts = sorted({".".join(k.removeprefix("unet.").split(".lora_")[0].split(".")[-2:]) for k in factors})
    settings: dict[str, Any] = {"source": kind, "source_file": request.source.name, "source_method": request.method}
    if fit is not None:
        settings.update(svd_rank=fit.rank, svd_error=fit.error, svd_worst_error=fit.worst,
                        svd_max_error=request.max_error)  # fmt: skip
    manifest = new_manifest(
        patch_id=patch_id_of(factors),
        name=check_name(request.name or _default_name(request)),
        version=check_version(request.version),
        base=base_record(info, request.model.reference),
        concepts=[_concept(c, request.category) for c in request.concepts],
        method={"name": "import", "settings": settings},
        layout={"keys": "peft", "rank": max(ranks), "modules": parts},
        created_at=created_at(),
        author=request.author,
        license=request.license_id,
    )
    write_patch(request.output, factors, manifest, family=info.family, rank=max(ranks), resolution=info.resolution,
                base_name=request.model.reference)  # fmt: skip
    twin = write_kohya_twin(request.output) if request.kohya else None
    return ImportResult(
        request.output, kind, sum(1 for k in factors if k.endswith(".lora_A.weight")), max(ranks),
        manifest["patch_id"], fit.error if fit else None, fit.worst if fit else None,
        fit.worst_module if fit else None, fit.unchanged if fit else 0, twin,
    )  # fmt: skip


def _check_request(request: ImportRequest) -> None:
    if not request.concepts or any(not c.strip() for c in request.concepts):
        raise UsageError("say which concept the source removes", hint="--concept 'van gogh' --category style")
    if request.category not in CATEGORIES:
        raise UsageError(f"unknown category {request.category!r}", hint=f"use one of: {', '.join(CATEGORIES)}")
    if request.rank is not None and not 1 <= request.rank <= 1024:
        raise UsageError(f"--rank must be between 1 and 1024, not {request.rank}", hint="try --rank 8")
    if not 0.0 <= request.max_error < 1.0:
        raise UsageError(f"--max-error must be in [0, 1), not {request.max_error}", hint="0.01 allows 1% per module")
    check_output_path(request.output, force=request.force)
    if request.kohya:
        check_output_path(kohya_sibling(request.output), force=request.force)


class SourceTensors(Mapping[str, torch.Tensor]):
    """The source's tensors, read one at a time when asked for (an edited UNet is gigabytes; only
    one tensor of it need be in memory), each refused if it holds NaN or Inf."""

    def __init__(self, path: Path, header: Header, shown: Path) -> None:
        self._path, self._names, self._shown = path, sorted(header.tensors), shown

    def __getitem__(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self._path), "pt") as handle:
            value: torch.Tensor = handle.get_tensor(key)
        if not bool(torch.isfinite(value).all()):
            raise CorruptFileError(f"{self._shown}: tensor {key!r} holds NaN or Inf",
                                   hint="the file is damaged, or the tool that wrote it diverged")  # fmt: skip
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _read_source(request: ImportRequest) -> SourceTensors:
    path = request.source
    try:  # a FIFO, a link to nowhere, a truncated or malformed file: one line
        header = None if path.suffix.lower() in PICKLE_SUFFIXES else read_header(path)
    except PickleRefusedError:  # not safetensors, and it looks like a torch pickle (ESD writes .pt)
        header = None
    if header is None:
        if not request.allow_pickle:
            refuse_pickle(path, allowable=True)
        from patchkit.models.pickles import pickle_to_safetensors

        reason = not_a_file(path)  # torch.load on a FIFO would wait forever
        if reason is not None:
            raise InputError(f"{path} {reason}", hint="give the file the eraser wrote")
        path = pickle_to_safetensors(path)
        header = read_header(path)
    unsupported = next((k for k, v in header.tensors.items() if v.dtype not in FLOATS), None)
    if unsupported is not None:
        raise CorruptFileError(f"{request.source}: tensor {unsupported!r} is {header.tensors[unsupported].dtype}, "
                               "not a float", hint="a LoRA or a state dict holds float weights")  # fmt: skip
    if not header.tensors:
        raise InputError(f"{request.source} holds no tensors", hint="give the LoRA or state dict the eraser wrote")
    return SourceTensors(path, header, request.source)


def kind_of(tensors: Mapping[str, torch.Tensor], source: Path) -> str:
    """peft, kohya or weights, by the keys; text-encoder keys and unknown layouts are refused."""
    text = next((k for k in tensors if k.startswith(_TEXT_ENCODER)), None)
    if text is not None:
        raise InputError(
            f"{source}: {text!r} is a text-encoder weight; patchkit patches change only the UNet",
            hint="import the UNet part alone (an eraser that edits the text encoder is out of scope)",
        )
    names = list(tensors)
    if all(is_kohya_name(k) for k in names):
        return "kohya"
    if all(_PEFT.fullmatch(k) for k in names):
        return "peft"
    if any(".lora" in k or "lora_" in k for k in names):
        odd = next(k for k in names if not (_PEFT.fullmatch(k) or is_kohya_name(k)))
        raise InputError(f"{source}: LoRA key {odd!r} is in no layout patchkit reads",
                         hint="save the LoRA in the diffusers/PEFT or the kohya layout")  # fmt: skip
    return "weights"


def _peft_module(key: str) -> str:
    """The UNet module a PEFT factor belongs to, without the prefixes PEFT or diffusers put first."""
    match = _PEFT.fullmatch(key)
    assert match is not None
    return match["module"].removeprefix("base_model.model.").removeprefix("unet.")


def _from_lora(tensors: Mapping[str, torch.Tensor], kind: str, spans: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    if kind == "kohya":
        from patchkit.backend.kohya import kohya_to_peft

        tensors = kohya_to_peft(dict(tensors))
    factors: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        match = _PEFT.fullmatch(key)
        assert match is not None
        factors[f"unet.{_peft_module(key)}.lora_{match['factor']}.weight"] = value.float().contiguous()
    for key in sorted(factors):
        if key.endswith(".lora_A.weight"):
            module = key.removeprefix("unet.").removesuffix(".lora_A.weight")
            down, up = factors[key], factors.get(f"unet.{module}.lora_B.weight")
            _check_module(module, spans, down, up)
    orphan = next((k for k in sorted(factors) if k.endswith(".lora_B.weight")
                   and k.replace(".lora_B.", ".lora_A.") not in factors), None)  # fmt: skip
    if orphan is not None:
        raise InputError(f"LoRA factor {orphan!r} has no lora_A beside it", hint="the LoRA file is incomplete")
    return factors


def _check_module(module: str, spans: Mapping[str, Any], down: torch.Tensor, up: torch.Tensor | None) -> None:
    span = spans.get(f"{module}.weight")
    if span is None:
        raise ModelMismatchError(f"module {module!r} is not in the base's UNet",
                                 hint="import against the base the LoRA was trained for")  # fmt: skip
    if up is None:
        raise InputError(f"module {module!r} has lora_A but no lora_B", hint="the LoRA file is incomplete")
    shape = tuple(span.shape)
    if len(shape) != 2 or down.ndim != 2 or up.ndim != 2 or up.shape[1] != down.shape[0] \
            or (up.shape[0], down.shape[1]) != shape:  # fmt: skip
        raise ModelMismatchError(
            f"module {module!r}: factors {tuple(up.shape)} x {tuple(down.shape)} do not make the base's {shape}",
            hint="import against the base the LoRA was trained for (SD 1.5, 2.1 and XL differ in width)",
        )


def _unet_name(key: str, config: Mapping[str, Any]) -> str | None:
    """A whole-weight key as the diffusers UNet names it: diffusers names with or without `unet.`,
    or the original SD names (`model.diffusion_model.input_blocks...`)."""
    if key.startswith("model.diffusion_model."):
        return unet_key_from_ldm(key.removeprefix("model.diffusion_model."), config)
    return key.removeprefix("unet.")


def _from_weights(tensors: Mapping[str, torch.Tensor], spans: Mapping[str, Any], config: Mapping[str, Any],
                  request: ImportRequest, say: Callable[[str], None] | None,
                  ) -> tuple[dict[str, torch.Tensor], SvdFit]:  # fmt: skip
    spectra: dict[str, low_rank.Spectrum] = {}
    unchanged = 0
    with SpanReader() as reader:
        for key in sorted(tensors):
            name = _unet_name(key, config)
            span = spans.get(name) if name is not None else None
            if span is None:
                raise ModelMismatchError(f"{request.source}: weight {key!r} is not in the base's UNet",
                                         hint="import against the base the eraser edited")  # fmt: skip
            value = tensors[key]
            if tuple(value.shape) != tuple(span.shape):
                raise ModelMismatchError(
                    f"{request.source}: weight {key!r} is {tuple(value.shape)}, the base's is {tuple(span.shape)}",
                    hint="import against the base the eraser edited",
                )
            base_value = reader.tensor(span)
            if value.dtype == base_value.dtype and torch.equal(value, base_value):  # most of an ESD file: cheap
                unchanged += 1
                continue
            delta = value.double() - base_value.double()
            if not bool(delta.any()):
                unchanged += 1
                continue
            if delta.ndim != 2:
                hint = "patchkit patches are LoRAs of linear layers (attention, projections)"
                raise InputError(f"{request.source}: {key!r} changed, and it is not a linear weight", hint=hint)
            spectra[str(name).removesuffix(".weight")] = low_rank.spectrum(delta)
    if not spectra:
        raise InputError(f"{request.source} changes nothing in the base: every weight equals the base's",
                         hint="import against the base the eraser started from")  # fmt: skip
    rank = request.rank or low_rank.smallest_rank(spectra, request.max_error)
    if rank is None:
        worst = max(spectra.items(), key=lambda item: item[1].error(low_rank.MAX_AUTO_RANK))
        raise InputError(
            f"{request.source}: no rank up to {low_rank.MAX_AUTO_RANK} keeps every module within "
            f"{request.max_error:.1%} ({worst[0]} is still {worst[1].error(low_rank.MAX_AUTO_RANK):.1%} off)",
            hint="pass --rank R to accept the error at that rank, or raise --max-error",
        )
    errors = {module: s.error(rank) for module, s in spectra.items()}
    worst_module = max(errors, key=lambda m: errors[m])
    factors: dict[str, torch.Tensor] = {}
    for module, s in spectra.items():
        down, up = s.factors(min(rank, int(s.s.shape[0])))
        factors[f"unet.{module}.lora_A.weight"], factors[f"unet.{module}.lora_B.weight"] = down, up
    fit = SvdFit(rank, low_rank.overall_error(spectra, rank), errors[worst_module], worst_module, unchanged)
    if say is not None:
        say(f"{len(spectra)} modules changed ({unchanged} unchanged); rank {rank}: "
            f"error {fit.error:.2%} overall, at most {fit.worst:.2%} ({worst_module})")  # fmt: skip
        if fit.worst > request.max_error:
            say(f"warning: --rank {rank} leaves {worst_module} {fit.worst:.1%} off, past --max-error "
                f"{request.max_error:.1%}: the patch is not the edit it came from")  # fmt: skip

    return factors, fit


def _concept(name: str, category: str) -> ConceptRecord:
    return {"name": name, "category": category, "action": "forget", "token": name}


def _default_name(request: ImportRequest) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", "-".join(["import", *request.concepts[:3]]).lower()).strip("-")
    return slug[:100] or "import"
