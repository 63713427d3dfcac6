"""StudyDataset: shapes, normalisation, padding, letterbox, augmentation determinism, bad images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from leadrrg.config import DataConfig, VisionConfig
from leadrrg.data.dataset import StudyDataset, letterbox
from leadrrg.data.manifests import Study, load_studies
from leadrrg.errors import LeadrrgError
from tests.fixtures_data import make_iu_xray, make_jsonl

VISION = VisionConfig(image_size=32, channels=3, mean=0.5, std=0.25)


def test_items_follow_the_contract(tmp_path: Path) -> None:
    studies = load_studies(DataConfig(format="jsonl", root=str(make_jsonl(tmp_path))), "train")
    dataset = StudyDataset(studies, VISION, max_views=2, train=False)
    assert len(dataset) == 6
    item = dataset[1]
    assert set(item) == {"id", "images", "view_mask", "report", "labels", "decoder_labels"}
    assert torch.equal(
        item["decoder_labels"].nan_to_num(7), item["labels"].nan_to_num(7)
    )  # no counterfactual
    assert item["images"].shape == (2, 3, 32, 32) and item["images"].dtype == torch.float32
    assert item["view_mask"].tolist() == [True, False] and item["view_mask"].dtype == torch.bool
    assert torch.all(item["images"][1] == 0)  # the missing view is zero-padded
    assert torch.equal(item["images"][0, 0], item["images"][0, 2])  # gray repeated to 3 channels
    assert item["labels"].shape == (14,) and torch.isnan(item["labels"]).any()
    assert item["id"] == studies[1].id and item["report"] == studies[1].report


def test_normalisation_uses_vision_mean_and_std(tmp_path: Path) -> None:
    Image.fromarray(np.full((20, 20), 255, np.uint8)).save(tmp_path / "white.png")
    study = Study("w", "test", [str(tmp_path / "white.png")], "r .", None)
    item = StudyDataset([study], VisionConfig(image_size=16, channels=1, mean=0.5, std=0.25), 1, train=False)[
        0
    ]
    assert torch.allclose(item["images"], torch.full((1, 1, 16, 16), 2.0))  # (1 - 0.5) / 0.25
    assert torch.isnan(item["labels"]).all()  # unlabelled study


def test_letterbox_keeps_aspect_and_pads_black() -> None:
    wide = torch.ones(10, 40)
    out = letterbox(wide, 32)  # 10x40 -> 8x32 centred, 12 black rows above and below
    assert out.shape == (32, 32)
    assert out[:12].abs().sum() == 0 and out[-12:].abs().sum() == 0
    assert torch.allclose(out[12:20], torch.ones(8, 32))


def test_two_views_for_iu_xray(tmp_path: Path) -> None:
    studies = load_studies(DataConfig(format="iu_xray", root=str(make_iu_xray(tmp_path))), "test")
    item = StudyDataset(studies, VISION, max_views=2, train=False)[0]
    assert item["view_mask"].tolist() == [True, True]
    assert not torch.equal(item["images"][0], item["images"][1])
    assert StudyDataset(studies, VISION, max_views=1, train=False)[0]["images"].shape == (1, 3, 32, 32)


def test_augmentation_only_when_training_and_seeded(tmp_path: Path) -> None:
    studies = load_studies(DataConfig(format="jsonl", root=str(make_jsonl(tmp_path))), "train")
    evaluation = StudyDataset(studies, VISION, 1, train=False)
    assert torch.equal(evaluation[0]["images"], evaluation[0]["images"])
    train = StudyDataset(studies, VISION, 1, train=True)
    torch.manual_seed(0)
    first = train[0]["images"]
    torch.manual_seed(0)
    again = train[0]["images"]
    assert torch.equal(first, again)
    assert not torch.equal(first, train[0]["images"])  # a fresh draw differs
    assert (first - evaluation[0]["images"]).abs().mean() < 1.0  # small, not a different image
    plain = StudyDataset(studies, VISION, 1, train=True, augment=False)  # data.augment=false
    assert torch.equal(plain[0]["images"], evaluation[0]["images"])


def test_dataloader_workers_are_deterministic(tmp_path: Path) -> None:
    studies = load_studies(DataConfig(format="jsonl", root=str(make_jsonl(tmp_path))), "train")
    dataset = StudyDataset(studies, VISION, 1, train=True)

    def run() -> torch.Tensor:
        loader = DataLoader(
            dataset,
            batch_size=3,
            num_workers=2,
            generator=torch.Generator().manual_seed(7),
            collate_fn=lambda items: torch.stack([i["images"] for i in items]),
        )
        return torch.cat(list(loader))

    assert torch.equal(run(), run())


def test_bad_images_raise_or_are_skipped_with_a_count(tmp_path: Path) -> None:
    root = make_iu_xray(tmp_path)
    studies = load_studies(DataConfig(format="iu_xray", root=str(root)), "train")
    Path(studies[0].images[1]).write_bytes(b"garbage")  # one view of study 0
    Path(studies[2].images[0]).unlink()  # both views of study 2
    Path(studies[2].images[1]).write_bytes(b"")
    with pytest.raises(LeadrrgError, match=str(studies[0].images[1])):
        StudyDataset(studies, VISION, 2, train=False)[0]
    dataset = StudyDataset(studies, VISION, 2, train=False, skip_bad_images=True)
    assert dataset.skipped_images == 3 and dataset.skipped_studies == 1 and len(dataset) == 5
    assert dataset[0]["view_mask"].tolist() == [True, False]
    assert {path for path, _ in dataset.bad_images} == {studies[0].images[1], *studies[2].images}


def test_data_augment_reaches_the_training_set_only(tmp_path: Path) -> None:
    from leadrrg.collectives import DistContext
    from leadrrg.data.synth.generate import synthesize
    from leadrrg.train.build import build_task
    from tests.test_train_helpers import tiny_config

    data = synthesize(tmp_path / "data", {"train": 8, "val": 2, "test": 2}, size=32, seed=0)
    for value in (True, False):
        task = build_task(tiny_config(data, f"data.augment={str(value).lower()}"), DistContext())
        assert task.train_dataset.augment is value and task.val_dataset.augment is False
