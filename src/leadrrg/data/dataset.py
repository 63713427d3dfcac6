"""`StudyDataset`: studies -> normalised image tensors, view mask, report and labels.

Geometry: each view is resized to fit `vision.image_size` keeping its aspect ratio (antialiased bilinear)
and centred on a black square (letterbox), so anatomy is not stretched; a square image is a plain resize.
Then pixels in [0, 1] are normalised with `vision.mean` / `vision.std` and repeated to `vision.channels`.

Augmentation (train=True and augment=True, `data.augment`): a small random affine (rotation within 5 degrees, scale 0.95-1.05,
shift within 4%) and brightness/contrast jitter within 10%, drawn from torch's global generator. A
DataLoader seeds each worker's generator from its base seed (itself drawn from the main process's
generator, or the DataLoader's `generator`), so with `torch.manual_seed` the stream is reproducible.

Bad images: `find_bad_images` checks every view's header (exists, non-empty, parses, size, checksums, JPEG end
marker); training runs it on every split before the first step, once per run (the processes of a DDP run each
check a share and gather the result, `bad_images=`). With `skip_bad_images=False` loading raises
`LeadrrgError` naming the file. With True, the same pre-check in the constructor drops unreadable views and studies
left with none (`skipped_images` / `skipped_studies` count them), and a view that passes the header check but fails
to decode is masked out when the item is loaded (the next study stands in when none of its views load).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from leadrrg.config import VisionConfig
from leadrrg.constants import NUM_OBSERVATIONS, UNCERTAIN
from leadrrg.data.attributes import attribute_targets
from leadrrg.data.counterfactual import CounterfactualEditor
from leadrrg.data.images import check_image, load_image
from leadrrg.data.manifests import Study
from leadrrg.errors import LeadrrgError
from leadrrg.labeler.attributes import report_attributes
from leadrrg.labeler.rules import label_text

logger = logging.getLogger(__name__)

MAX_ROTATION_DEGREES = 5.0
MAX_SCALE_CHANGE = 0.05
MAX_SHIFT = 0.04  # fraction of the image side
MAX_BRIGHTNESS = 0.10  # additive, in [0, 1] pixel units
MAX_CONTRAST = 0.10  # multiplicative around the mean


def letterbox(image: torch.Tensor, size: int) -> torch.Tensor:
    """(H, W) in [0, 1] -> (size, size): resize the longer side to `size`, pad the shorter with zeros."""
    height, width = image.shape
    scale = size / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    resized = F.interpolate(
        image[None, None], size=(new_height, new_width), mode="bilinear", align_corners=False, antialias=True
    )[0, 0].clamp_(0.0, 1.0)  # (h, w)
    out = image.new_zeros(size, size)
    top, left = (size - new_height) // 2, (size - new_width) // 2
    out[top : top + new_height, left : left + new_width] = resized
    return out


def augment(image: torch.Tensor) -> torch.Tensor:
    """(S, S) in [0, 1] -> (S, S): a small random affine and brightness/contrast jitter."""
    uniform = lambda bound: (torch.rand(()) * 2 - 1).item() * bound  # noqa: E731
    angle = math.radians(uniform(MAX_ROTATION_DEGREES))
    scale = 1.0 + uniform(MAX_SCALE_CHANGE)
    shift_x, shift_y = uniform(MAX_SHIFT) * 2, uniform(MAX_SHIFT) * 2  # affine_grid's [-1, 1] units
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[cos, -sin, shift_x], [sin, cos, shift_y]], dtype=image.dtype)[None]  # (1, 2, 3)
    grid = F.affine_grid(theta, [1, 1, *image.shape], align_corners=False)
    image = F.grid_sample(
        image[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )[0, 0]
    contrast, brightness = 1.0 + uniform(MAX_CONTRAST), uniform(MAX_BRIGHTNESS)
    mean = image.mean()
    return ((image - mean) * contrast + mean + brightness).clamp_(0.0, 1.0)


def image_paths(studies: Sequence[Study], max_views: int) -> list[str]:
    """The first `max_views` views of each study, in study order, each path once."""
    return list(dict.fromkeys(path for study in studies for path in study.images[:max_views]))


def check_paths(
    paths: Sequence[str], workers: int = 8, progress: Callable[[int], None] | None = None
) -> list[tuple[str, str]]:
    """(path, reason) of every unreadable image of `paths` (header-level check), in order; `progress(n)` is called
    as images are checked."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        reasons = []
        for reason in pool.map(check_image, paths):
            reasons.append(reason)
            if progress is not None and len(reasons) % 1000 == 0:
                progress(1000)
    if progress is not None and len(reasons) % 1000:
        progress(len(reasons) % 1000)
    return [(path, reason) for path, reason in zip(paths, reasons) if reason is not None]


def find_bad_images(studies: Sequence[Study], max_views: int, workers: int = 8) -> list[tuple[str, str]]:
    """(path, reason) of every unreadable view among the first `max_views` of each study (header-level check),
    in study order, each path once."""
    return check_paths(image_paths(studies, max_views), workers)


def bad_images_of(
    studies: Sequence[Study], max_views: int, known: Sequence[tuple[str, str]] | None
) -> list[tuple[str, str]]:
    """`find_bad_images`, or when the images were checked already (`known`: every bad (path, reason) of a set of
    paths that includes these studies' views, e.g. from one check shared by the processes of a run) its entries
    for these studies."""
    if known is None:
        return find_bad_images(studies, max_views)
    reasons = dict(known)
    return [(path, reasons[path]) for path in image_paths(studies, max_views) if path in reasons]


def raise_on_bad_images(
    studies: Sequence[Study],
    max_views: int,
    where: str,
    hint: str = "",
    known: Sequence[tuple[str, str]] | None = None,
) -> None:
    """A LeadrrgError naming the first unreadable image of `studies` (and how many there are), if any (`known`: as
    `bad_images_of`)."""
    bad = bad_images_of(studies, max_views, known)
    if bad:
        raise LeadrrgError(f"{len(bad)} image(s) of {where} are unreadable; first: {bad[0][1]}{hint}")


class StudyDataset(Dataset):
    """Items: {"id": str, "images": (V, C, S, S) float, "view_mask": (V,) bool, "report": str,
    "labels": (14,) float with NaN for not mentioned (all NaN when the study has no labels),
    "decoder_labels": (14,) the labels the decoder reads under truth forcing: `labels`, or for a counterfactual
    study (training only, a `counterfactual_rate` share) the labels with one finding flipped, and "report" the
    report edited to match (`leadrrg.data.counterfactual`); with `attributes`, "attributes" (14, 2) the side and
    severity value indices the experts learn (the image's truth when the study has it, else what its report states)
    and "decoder_attributes" (14, 2) what the (possibly edited) report states, which the decoder reads; a
    `side_flip_rate` share of the other training studies has one lateral finding's side swapped in its report}.
    With `hedge`, a finding present in "decoder_labels" that the (possibly edited) report hedges (the labeler reads
    it uncertain) is marked -1 there, so the decoder reads it as hedged (`model.grounding.hedge`); a
    `hedge_edit_rate` share of the training studies first has one asserted finding restated as hedged.

    With `images_only` (set by stage 1, which trains the experts on the labels alone) an item is the images, view
    mask, labels and, with `attributes`, the attribute targets: no report edit, hedge or decoder target is made, and
    the images and targets are the ones the full item would hold (`collate_images` batches them).

    A study with more than `max_views` images keeps its first `max_views` (readers put frontal views
    first); fewer are zero-padded and masked out.
    """

    def __init__(
        self,
        studies: Sequence[Study],
        vision: VisionConfig,
        max_views: int,
        train: bool,
        skip_bad_images: bool = False,
        counterfactual: CounterfactualEditor | None = None,
        counterfactual_rate: float = 0.0,
        augment: bool = True,
        side_flip_rate: float = 0.0,
        attributes: bool = False,
        bad_images: Sequence[tuple[str, str]] | None = None,
        hedge: bool = False,
        hedge_edit_rate: float = 0.0,
    ):
        if max_views < 1:
            raise LeadrrgError(f"max_views is {max_views}; expected at least 1")
        self.vision = vision
        self.max_views = max_views
        self.train = train
        self.augment = train and augment
        self.skip_bad_images = skip_bad_images
        self.counterfactual = counterfactual if train and counterfactual_rate > 0 else None
        self.counterfactual_rate = counterfactual_rate
        self.side_flipper = counterfactual if train and side_flip_rate > 0 else None
        self.side_flip_rate = side_flip_rate
        self.attributes = attributes
        self.hedge = hedge
        self.hedger = counterfactual if train and hedge and hedge_edit_rate > 0 else None
        self.hedge_edit_rate = hedge_edit_rate
        self.images_only = False
        self.skipped_images = 0
        self.skipped_studies = 0
        self.bad_images: list[tuple[str, str]] = []  # (path, reason) of every skipped view
        self.studies = list(studies)
        if skip_bad_images:
            self.studies = self._drop_unreadable(self.studies, bad_images)

    def _drop_unreadable(self, studies: list[Study], known: Sequence[tuple[str, str]] | None) -> list[Study]:
        kept = []
        self.bad_images = bad_images_of(studies, self.max_views, known)
        bad = {path for path, _ in self.bad_images}
        for study in studies:
            good = [path for path in study.images[: self.max_views] if path not in bad]
            self.skipped_images += len(study.images[: self.max_views]) - len(good)
            if good:
                kept.append(dataclasses.replace(study, images=good))
            else:
                self.skipped_studies += 1
        if self.skipped_images:
            logger.warning(
                "skipped %d unreadable images (%d studies left without images); first: %s",
                self.skipped_images,
                self.skipped_studies,
                self.bad_images[0][1],
            )
        return kept

    def __len__(self) -> int:
        return len(self.studies)

    def load_view(self, path: str) -> torch.Tensor:
        """One image path -> (C, S, S) normalised tensor (augmented when training with `augment`)."""
        size = self.vision.image_size
        image = letterbox(torch.from_numpy(load_image(path)), size)  # (S, S)
        if self.augment:
            image = augment(image)
        image = (image - self.vision.mean) / self.vision.std
        return image[None].expand(self.vision.channels, size, size).contiguous()  # (C, S, S)

    def load_views(self, study: Study) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (V, C, S, S), view_mask (V,)); with skip_bad_images a view that fails to decode is masked out."""
        size, channels = self.vision.image_size, self.vision.channels
        images = torch.zeros(self.max_views, channels, size, size)  # (V, C, S, S)
        view_mask = torch.zeros(self.max_views, dtype=torch.bool)  # (V,)
        for view, path in enumerate(study.images[: self.max_views]):
            try:
                images[view] = self.load_view(path)
            except LeadrrgError as exc:
                if not self.skip_bad_images:
                    raise
                logger.warning("skipped an image that failed to decode: %s", exc)
                continue
            view_mask[view] = True
        return images, view_mask

    def __getitem__(self, index: int) -> dict:
        study = self.studies[index]
        images, view_mask = self.load_views(study)
        # skip_bad_images: when none of the study's views decodes, the next study stands in.
        for offset in range(1, len(self.studies)):
            if view_mask.any():
                break
            study = self.studies[(index + offset) % len(self.studies)]
            images, view_mask = self.load_views(study)
        if not view_mask.any():
            raise LeadrrgError("no image of any study could be decoded; expected readable radiographs")
        if study.labels is None:
            labels = torch.full((NUM_OBSERVATIONS,), float("nan"))
        else:
            labels = torch.from_numpy(np.asarray(study.labels, dtype=np.float32).copy())
        if self.images_only:
            item = {"id": study.id, "images": images, "view_mask": view_mask, "labels": labels}
            if self.attributes:
                item["attributes"] = torch.from_numpy(attribute_targets(self._truth_attributes(study)))
            return item
        report, decoder_labels = study.report, labels
        if self.counterfactual is not None and float(torch.rand(())) < self.counterfactual_rate:
            edited = self.counterfactual.edit(study.report, labels.numpy())
            if edited is not None:
                report, decoder_labels = edited[0], torch.from_numpy(edited[1])
        elif self.side_flipper is not None and float(torch.rand(())) < self.side_flip_rate:
            report = self.side_flipper.flip_side(study.report) or report
        if self.hedger is not None and float(torch.rand(())) < self.hedge_edit_rate:
            report = self.hedger.hedge(report, decoder_labels.numpy()) or report
        if self.hedge:
            decoder_labels = hedged_labels(decoder_labels, report)
        item = {
            "id": study.id,
            "images": images,
            "view_mask": view_mask,
            "report": report,
            "labels": labels,
            "decoder_labels": decoder_labels,
        }
        if self.attributes:
            item["attributes"] = torch.from_numpy(attribute_targets(self._truth_attributes(study)))
            item["decoder_attributes"] = torch.from_numpy(attribute_targets(report_attributes(report)))
        return item

    @staticmethod
    def _truth_attributes(study: Study) -> dict:
        """What the experts learn of a study's sides and severities: the image's truth, else its report's."""
        return study.attributes if study.attributes is not None else report_attributes(study.report)


def hedged_labels(labels: torch.Tensor, report: str) -> torch.Tensor:
    """(14,) labels with each finding they have present that `report` hedges (uncertain to the labeler) set to -1."""
    stated = torch.from_numpy(np.asarray(label_text(report), dtype=np.float32))
    return torch.where((labels == 1.0) & (stated == UNCERTAIN), UNCERTAIN, labels)
