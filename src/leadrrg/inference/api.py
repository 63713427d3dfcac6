"""The Python API: `leadrrg.load(run_dir)` -> a `ReportGenerator`, loaded once, for one study or many.

    import leadrrg
    generator = leadrrg.load("runs/demo/lead")              # device="auto": CUDA when available
    result = generator.generate("frontal.png", evidence=True)
    print(result.report, result.findings, result.expert_probs)
    results = generator.generate_batch([["a.png", "a_lat.dcm"], ["b.png"]], num_beams=3, strategy="beam")

`ReportGenerator.decode` is the one code path from image tensors to results for every user of a trained run:
`generate`, `generate_batch`, every mode of the `leadrrg generate` command (`leadrrg.inference.batch`), the HTTP
service and `leadrrg.inference.predict.generate_split` (evaluation, diagnosis, experiments, the demo) go through it.
Below it, `leadrrg.inference.decoding.generate_reports` is the one decoding function (training's validation calls
it directly).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers

from leadrrg import __version__
from leadrrg.config import DecodeConfig, RunConfig
from leadrrg.errors import LeadrrgError
from leadrrg.inference.calibrate import with_run_thresholds
from leadrrg.inference.decoding import generate_reports
from leadrrg.inference.evidence import (
    compact_evidence,
    contradictions,
    expert_thresholds,
    hedge_floors,
    token_pieces,
)
from leadrrg.inference.inputs import study_tensors, to_gray
from leadrrg.inference.quantize import quantize_decoder
from leadrrg.inference.rerank import rerank
from leadrrg.inference.result import ReportResult, label_findings
from leadrrg.inference.steps import Generators
from leadrrg.labeler.attributes import report_attributes
from leadrrg.labeler.rules import report_defects
from leadrrg.model.grounding import decoder_probs
from leadrrg.progress import Progress
from leadrrg.runs.files import load_run

EVIDENCE_MODES = (False, True, "full")


def resolve_device(name: str | torch.device) -> torch.device:
    """'auto' (CUDA when available) | 'cpu' | 'cuda' | 'cuda:N' -> a device; LeadrrgError when unavailable."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LeadrrgError(f"device {name!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LeadrrgError(
            f"device {name}: CUDA is not available on this machine; use --device cpu (or auto)"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise LeadrrgError(f"device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def load(
    run_dir: str | Path, device: str | torch.device = "auto", seed: int = 0, overrides: Sequence[str] = ()
) -> ReportGenerator:
    """Load a trained run directory (written by `leadrrg train`) for inference, once. `seed` seeds sampling
    (decode.strategy=sample). `overrides`: typed `KEY=VALUE` settings applied to the run's config before the
    model is built: decode.*, data.*, and the model's movable settings, e.g. `model.decoder.pretrained_path=DIR`
    when the base model has moved (its fingerprint is checked)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LeadrrgError(
            f"run directory {run_dir} does not exist; expected the --out directory of leadrrg train"
        )
    device = resolve_device(device)
    model, tokenizer, config = load_run(run_dir, device=device, overrides=overrides)
    quantize_decoder(model, config.decode.quantize)  # decode.quantize=int8: the LM's linear layers, CPU only
    config = with_run_thresholds(config, run_dir)  # decode.thresholds=calibrated: RUN/thresholds.json
    return ReportGenerator(model, tokenizer, config, seed=seed, name=run_dir.name)


class ReportGenerator:
    """A loaded model with its tokenizer and run config. Not thread-safe: call it from one thread at a time
    (the service runs every batch on one worker thread)."""

    def __init__(self, model, tokenizer, config: RunConfig, seed: int = 0, name: str = ""):
        self.model = model  # generate_reports switches to eval mode and back; loading leaves it in eval
        self.tokenizer = tokenizer
        self.config = config
        self.name = name
        self.device = next(model.parameters()).device
        self.sampler = torch.Generator(device=self.device)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the sampling generator (decode.strategy=sample; decode.rerank's candidates) from `seed`."""
        self.seed = seed
        self.sampler.manual_seed(seed)

    @property
    def max_views(self) -> int:
        return self.config.model.max_views

    @property
    def expert_names(self) -> list[str]:
        """The experts' observation names ([] for a model without experts, fusion none)."""
        if not self.config.model.injection.has_experts:
            return []
        return list(self.config.model.experts.names)

    def decode_config(self, **overrides: Any) -> DecodeConfig:
        """The run's decode settings with keyword overrides (e.g. strategy="beam", num_beams=4), validated."""
        fields = {f.name for f in dataclasses.fields(DecodeConfig)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise LeadrrgError(f"unknown decode setting(s) {unknown}; expected some of {sorted(fields)}")
        for name in ("dtype", "quantize"):  # applied to the weights when the run was loaded
            if overrides.get(name, getattr(self.config.decode, name)) != getattr(self.config.decode, name):
                raise LeadrrgError(
                    f"decode setting {name}={overrides[name]!r}: the weights were cast when the run was "
                    f"loaded ({name}={getattr(self.config.decode, name)}); expected "
                    f"leadrrg.load(run, overrides=['decode.{name}=...'])"
                )
        return dataclasses.replace(self.config.decode, **overrides)

    # ----------------------------------------------------------------------------------------------
    # Inputs

    def prepare(self, images: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """One study (an image or a list of its views, frontal first) -> images (V, C, S, S), view_mask (V,)."""
        views = list(images) if isinstance(images, (list, tuple)) else [images]
        return self.prepare_arrays([to_gray(view) for view in views])

    def prepare_arrays(self, views: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Gray float32 (H, W) views in [0, 1] -> images (V, C, S, S), view_mask (V,)."""
        return study_tensors(views, self.config.model.vision, self.max_views)

    # ----------------------------------------------------------------------------------------------
    # Generation

    def generate(
        self,
        images: Any,
        evidence: bool | str = False,
        expert_probs: Mapping[str, float] | Sequence[float] | None = None,
        **decode_overrides: Any,
    ) -> ReportResult:
        """A report for one study: `images` is one view or a list of views (path to PNG / JPEG / DICOM, PIL
        image, array, tensor). `evidence`: False, True (compact) or "full" (also the (T, L) gates and (T, L, K)
        expert weights). `expert_probs` replaces what the decoder reads from the experts, a what-if: name -> p
        for some experts (the others keep the model's own p), or K numbers in `expert_names` order."""
        decode = self.decode_config(**decode_overrides)
        study_images, view_mask = self.prepare(images)
        study_images, view_mask = study_images[None], view_mask[None]
        rows = None
        if expert_probs is not None:
            rows = self.expert_rows([expert_probs], study_images, view_mask)
        (result,) = self.decode(study_images, view_mask, decode, evidence, rows)
        result.images = _paths(images)
        return result

    def generate_batch(
        self,
        studies: Iterable[Any],
        evidence: bool | str = False,
        batch_size: int | None = None,
        progress: bool = False,
        **decode_overrides: Any,
    ) -> list[ReportResult]:
        """Reports for many studies (each as in `generate`), decoded `batch_size` at a time (default
        decode.batch_size), in order. Results do not depend on the batch size."""
        if batch_size:  # checked by DecodeConfig, as every decode setting (None or 0: the run's)
            decode_overrides["batch_size"] = batch_size
        decode = self.decode_config(**decode_overrides)
        studies = list(studies)
        size = decode.batch_size
        results: list[ReportResult] = []
        with Progress(len(studies), "generate", enabled=progress) as bar:
            for start in range(0, len(studies), size):
                chunk = studies[start : start + size]
                prepared = [self.prepare(study) for study in chunk]
                images = torch.stack([p[0] for p in prepared])
                view_mask = torch.stack([p[1] for p in prepared])
                batch = self.decode(images, view_mask, decode, evidence)
                for study, result in zip(chunk, batch):
                    result.images = _paths(study)
                results += batch
                bar.update(len(batch))
        return results

    def decode(
        self,
        images: torch.Tensor,
        view_mask: torch.Tensor,
        decode: DecodeConfig | None = None,
        evidence: bool | str = False,
        expert_probs: torch.Tensor | None = None,
        attribute_probs: torch.Tensor | None = None,
    ) -> list[ReportResult]:
        """The one code path: images (B, V, C, S, S), view_mask (B, V) -> B results. `expert_probs` (B, K)
        replaces the experts' probabilities, `attribute_probs` (B, K, 2, 3) their side and severity (see
        `leadrrg.inference.decoding.generate_reports`)."""
        if evidence not in EVIDENCE_MODES:
            raise LeadrrgError(f"evidence is {evidence!r}; expected False, True or 'full'")
        decode = decode or self.config.decode
        results = self._results(images, view_mask, decode, evidence, expert_probs, attribute_probs)
        return self.rerank_results(
            results, images, view_mask, decode, evidence, expert_probs, attribute_probs
        )

    def rerank_results(
        self,
        results: list[ReportResult],
        images: torch.Tensor,
        view_mask: torch.Tensor,
        decode: DecodeConfig,
        evidence: bool | str = False,
        expert_probs: torch.Tensor | None = None,
        attribute_probs: torch.Tensor | None = None,
    ) -> list[ReportResult]:
        """`results` (decoded with rerank 0) after `decode.rerank` (`leadrrg.inference.rerank`). A study's candidates
        depend on the seed alone: studies of several batches can be reranked together (`generate_split`)."""
        if not (decode.rerank and self.expert_names):
            return results

        def redecode(rows: list[int], config: DecodeConfig, generators: Generators) -> list[ReportResult]:
            index = torch.tensor(rows, device=images.device)
            probs, attributes = (None if t is None else t[index] for t in (expert_probs, attribute_probs))
            return self._results(
                images[index], view_mask[index], config, evidence, probs, attributes, generators
            )

        return rerank(results, decode, redecode, self.seed, self.device)

    def _results(
        self,
        images: torch.Tensor,
        view_mask: torch.Tensor,
        decode: DecodeConfig,
        evidence: bool | str,
        expert_probs: torch.Tensor | None,
        attribute_probs: torch.Tensor | None,
        generator: Generators = None,
    ) -> list[ReportResult]:
        """One decoding pass (`generate_reports`) -> its results, labelled and checked against the experts."""
        reports = generate_reports(
            self.model,
            self.tokenizer,
            images,
            view_mask,
            decode,
            return_evidence=bool(evidence),
            generator=self.sampler if generator is None else generator,
            expert_probs=expert_probs,
            attribute_probs=attribute_probs,
        )
        results = []
        for report in reports:
            result = ReportResult(
                report=report.text,
                expert_probs=dict(report.expert_probs or {}),
                findings=label_findings(report.text),
                expert_attributes=report.expert_attributes or {},
            )
            if result.expert_probs:
                result.thresholds = expert_thresholds(decode, result.expert_probs)
                hedges = self.config.model.grounding.hedge
                result.hedge_floors = hedge_floors(decode, list(result.expert_probs), hedges)
                result.contradictions = contradictions(
                    result.expert_probs,
                    result.thresholds,
                    result.findings,
                    result.hedge_floors,
                    result.expert_attributes,
                    report_attributes(report.text) if result.expert_attributes else None,
                    report_defects(report.text)[0],
                )
            if evidence:
                result.evidence = compact_evidence(
                    token_pieces(self.tokenizer, report.token_ids),
                    report.gates,
                    report.alpha,
                    self.expert_names,
                    full=evidence == "full",
                )
            results.append(result)
        return results

    def check_expert_probs(self, override: Mapping[str, Any]) -> dict[str, float]:
        """A what-if's `{expert name: p}` checked: known names, each p a number in [0, 1]; -> {name: float}.
        LeadrrgError naming the bad entry and what was expected (the service answers it with 400)."""
        names = self.expert_names
        if not names:
            raise LeadrrgError("expert_probs given but this model has no experts (fusion none)")
        unknown = sorted(str(name) for name in override if name not in names)
        if unknown:
            raise LeadrrgError(f"expert_probs names unknown expert(s) {unknown}; expected some of {names}")
        checked = {}
        for name, value in override.items():
            number = _probability(value)
            if number is None:
                raise LeadrrgError(f"expert_probs[{name!r}] is {value!r}; expected a probability in [0, 1]")
            checked[name] = number
        return checked

    def expert_probs_of(self, images: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
        """The experts' own p (B, K) for images (B, V, C, S, S), view_mask (B, V): what the decoder reads
        without an override (on the CPU)."""
        model = self.model
        config = model.config
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                study = model.encode_images(images.to(self.device), view_mask.to(self.device))
                probs = decoder_probs(config.grounding, config.label_policy, study.expert_logits)
                return probs.float().cpu().clone()
        finally:
            model.train(was_training)

    def expert_rows(
        self, overrides: Sequence[Any], images: torch.Tensor, view_mask: torch.Tensor
    ) -> torch.Tensor:
        """What-ifs -> the (B, K) p the decoder reads, one per study of images (B, ...): each override is None
        (the model's own p), a `{name: p}` for some experts merged into the model's own p, or K numbers."""
        names = self.expert_names
        if not names:
            raise LeadrrgError("expert_probs given but this model has no experts (fusion none)")
        if len(overrides) != images.shape[0]:
            raise LeadrrgError(
                f"{len(overrides)} expert_probs for {images.shape[0]} studies; expected one each"
            )
        own = None
        if any(o is None or isinstance(o, Mapping) for o in overrides):
            own = self.expert_probs_of(images, view_mask).tolist()
        rows = []
        for index, override in enumerate(overrides):
            if override is None or isinstance(override, Mapping):
                row = list(own[index])
                for name, p in self.check_expert_probs(override or {}).items():
                    row[names.index(name)] = p
            else:
                row = [_probability(v) for v in override]
                if len(row) != len(names) or None in row:
                    raise LeadrrgError(
                        f"expert_probs is {list(override)[:20]}; expected {len(names)} probabilities in "
                        f"[0, 1], one per expert in the order {names}"
                    )
            rows.append(row)
        return torch.tensor(rows, dtype=torch.float32)

    def summary(self) -> dict[str, Any]:
        """What is loaded: the run's name, model and decode settings, versions (for `GET /v1/model`)."""
        model = self.config.model
        return {
            "run": self.name,
            "preset": self.config.preset,
            "fusion": model.injection.fusion,
            "experts": self.expert_names,
            "max_views": model.max_views,
            "image_size": model.vision.image_size,
            "vision": model.vision.name,
            "decoder": model.decoder.backbone,
            "decode": dataclasses.asdict(self.config.decode),
            "device": str(self.device),
            "versions": {
                "leadrrg": __version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
        }


def _probability(value: Any) -> float | None:
    """`value` as a float in [0, 1], or None (not a number, NaN, out of range)."""
    if isinstance(value, (str, bytes)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0.0 <= number <= 1.0 else None


def _paths(images: Any) -> list[str] | None:
    """A study's image paths as strings when every view was given as a path, else None."""
    views = list(images) if isinstance(images, (list, tuple)) else [images]
    if views and all(isinstance(v, (str, os.PathLike)) for v in views):
        return [str(v) for v in views]
    return None
