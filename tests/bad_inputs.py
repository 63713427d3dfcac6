"""A corpus of bad inputs, generated (no checked-in binaries): damaged images, malformed data files, broken run
directories, bad overrides and output paths. Each `Case` is one command line against one bad input, with what a
user must see: the exit code, the words that name the input, and the outputs that must not be left behind.

    workspace = Workspace(tmp, data_root, run_dir)   # a good tiny data root and a good trained run
    cases = build_cases(workspace)                   # name -> Case (each builds its own copy of the bad input)
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tests.test_train_helpers import TINY_MODEL, TINY_TRAIN

# --------------------------------------------------------------------------------------------------
# Damaged images


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def corrupt_png(path: Path) -> Path:
    """A PNG with one byte of its pixel data flipped (the chunk checksum no longer matches)."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 48), 128, np.uint8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[data.index(b"IDAT") + 6] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def undecodable_png(path: Path) -> Path:
    """A PNG whose header and checksums are fine but whose pixel stream is not zlib: only decoding finds it."""
    header = struct.pack(">IIBBBBB", 48, 40, 8, 0, 0, 0, 0)
    body = _chunk(b"IHDR", header) + _chunk(b"IDAT", b"not a zlib stream " * 4) + _chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((40, 48)) * 255).astype(np.uint8)).save(buffer, "JPEG")
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


# --------------------------------------------------------------------------------------------------
# The workspace and the cases


@dataclass
class Case:
    argv: list[str]
    named: tuple[str, ...]  # each must appear in stderr
    rc: int = 2
    absent: tuple[Path, ...] = ()  # outputs that must not exist afterwards
    present: tuple[Path, ...] = ()  # files that must still exist afterwards (not deleted by the failure)


@dataclass
class Workspace:
    tmp: Path
    data_root: Path  # a good tiny jsonl data root (train, val, test)
    run_dir: Path  # a good run trained on it
    _count: list[int] = field(default_factory=lambda: [0])

    def fresh(self, name: str) -> Path:
        self._count[0] += 1
        path = self.tmp / f"{self._count[0]:02d}-{name}"
        path.mkdir(parents=True)
        return path

    def data(self, name: str) -> Path:
        """A copy of the good data root, to damage."""
        return Path(shutil.copytree(self.data_root, self.fresh(name) / "data"))

    def run(self, name: str) -> Path:
        """A copy of the good run, to damage."""
        return Path(shutil.copytree(self.run_dir, self.fresh(name) / "run"))

    def manifest(self, root: Path) -> list[dict]:
        return [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]

    def write_manifest(self, root: Path, entries: list[dict]) -> None:
        (root / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))

    def image_of(self, root: Path, split: str) -> Path:
        entry = next(e for e in self.manifest(root) if e["split"] == split)
        return root / entry["images"][0]


def train_argv(data: Path, out: Path, *overrides: str) -> list[str]:
    sets = [
        item
        for override in (*TINY_MODEL, *TINY_TRAIN, "data.format=jsonl", "train.max_steps=2", *overrides)
        for item in ("--set", override)
    ]
    return ["train", "--preset", "demo", "--data", str(data), "--out", str(out), "--quiet", *sets]


def generate_argv(run: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--run", str(run), "--data", str(data), "--out", str(out), *extra]


def check_argv(root: Path, layout: str = "jsonl") -> list[str]:
    return ["data", "check", "--format", layout, "--root", str(root), "--workers", "1"]


def _non_utf8(path: Path) -> Path:
    path.write_bytes(path.read_bytes().replace(b"The", b"Th\xe9", 1).replace(b"s0", b"s\xff0", 1))
    return path


def build_cases(ws: Workspace) -> dict[str, Case]:
    cases: dict[str, Case] = {}

    def add(name: str, case: Case) -> None:
        assert name not in cases, name
        cases[name] = case

    # Non-UTF-8 data files, for every command that reads them.
    root = ws.data("non_utf8_manifest")
    _non_utf8(root / "manifest.jsonl")
    out = root.parent / "out"
    add("data_check/non_utf8_manifest", Case(check_argv(root), ("manifest.jsonl", "UTF-8")))
    add("train/non_utf8_manifest", Case(train_argv(root, out), ("manifest.jsonl", "UTF-8"), absent=(out,)))
    preds = root.parent / "preds.jsonl"
    add(
        "generate/non_utf8_manifest",
        Case(generate_argv(ws.run_dir, root, preds), ("manifest.jsonl", "UTF-8"), absent=(preds,)),
    )
    root = ws.data("non_utf8_annotation")
    annotation = {"train": [], "test": []}
    for entry in ws.manifest(root):
        if entry["split"] in annotation:
            relative = str(Path(entry["images"][0]).relative_to("images"))
            annotation[entry["split"]].append(
                {"id": entry["id"], "report": entry["report"], "image_path": [relative]}
            )
    (root / "annotation.json").write_text(json.dumps(annotation))
    _non_utf8(root / "annotation.json")
    add("data_check/non_utf8_annotation", Case(check_argv(root, "iu_xray"), ("annotation.json", "UTF-8")))
    root = ws.data("non_utf8_label_csv")
    (root / "labels.csv").write_bytes(b"id,Cardiomegaly\ns0000,1.0\ns0001,0.0 \xff\n")
    out = root.parent / "out"
    add(
        "train/non_utf8_label_csv",
        Case(train_argv(root, out, "data.label_file=labels.csv"), ("labels.csv", "UTF-8"), absent=(out,)),
    )

    # The other layouts' data files: CheXpert Plus's CSV and label JSON lines, MIMIC-CXR's label CSV.
    from tests.fixtures_data import make_chexpert_plus, make_mimic_cxr

    root = make_chexpert_plus(ws.fresh("chexpert_plus_ragged") / "data")
    csv_path = root / "df_chexpert_plus_240401.csv"
    rows = csv_path.read_text().split("\n")
    rows[3] += ",an extra field"
    csv_path.write_text("\n".join(rows))
    add(
        "data_check/chexpert_plus_ragged_row",
        Case(check_argv(root, "chexpert_plus"), (str(csv_path), "line 4")),
    )
    root = make_chexpert_plus(ws.fresh("chexpert_plus_labels") / "data")
    labels = root / "chexbert_labels" / "findings_fixed.json"
    labels.write_text(labels.read_text() + '{"path_to_image": "train/x.jpg", "Edema": \n')
    add(
        "data_check/chexpert_plus_torn_label_line",
        Case(check_argv(root, "chexpert_plus"), (str(labels), "line 21")),
    )
    root = make_mimic_cxr(ws.fresh("mimic_label_value") / "data")
    labels = root / "mimic-cxr-2.0.0-chexpert.csv"
    rows = labels.read_text().split("\n")
    rows[1] = rows[1].replace("1.0", "2.0", 1) if "1.0" in rows[1] else rows[1].replace(",0.0", ",2.0", 1)
    labels.write_text("\n".join(rows))
    add(
        "data_check/mimic_label_value_two",
        Case(check_argv(root, "mimic_cxr"), (str(labels), "line 2", "'2.0'")),
    )

    # Malformed CSV: never rows merged or shifted.
    folder = ws.fresh("label_csv")
    unterminated = folder / "unterminated.csv"
    unterminated.write_text('Reports\n"no effusion.\nheart normal.\n"lungs clear."\nno pneumothorax.\n')
    out = folder / "labels.csv"
    add(
        "label/unterminated_quote",
        Case(["label", str(unterminated), "--out", str(out)], ("unterminated.csv", "line 2"), absent=(out,)),
    )
    ragged = folder / "ragged.csv"
    ragged.write_text("id,Reports\n1,heart normal.\n2,no effusion,extra\n")
    add(
        "label/ragged_row",
        Case(["label", str(ragged), "--out", str(out)], ("ragged.csv", "line 3"), absent=(out,)),
    )
    root = ws.data("label_csv_unterminated")
    (root / "labels.csv").write_text('id,Cardiomegaly\ns0000,"1.0\ns0001,0.0\n')
    out = root.parent / "out"
    add(
        "train/label_csv_unterminated_quote",
        Case(train_argv(root, out, "data.label_file=labels.csv"), ("labels.csv", "line 2"), absent=(out,)),
    )

    # Image paths that leave the data root.
    root = ws.data("path_escape")
    outside = root.parent / "outside.png"
    shutil.copy(ws.image_of(root, "train"), outside)
    entries = ws.manifest(root)
    entries[0]["images"] = ["../outside.png"]
    ws.write_manifest(root, entries)
    out = root.parent / "out"
    add("data_check/path_escape", Case(check_argv(root), ("../outside.png", "outside the data root")))
    add("data_check/path_escape_opted_in", Case([*check_argv(root), "--allow-outside-root"], ("OK",), rc=0))
    add(
        "train/path_escape",
        Case(train_argv(root, out), ("../outside.png", "outside the data root"), absent=(out,)),
    )
    root = ws.data("absolute_path")
    entries = ws.manifest(root)
    test_index = next(i for i, e in enumerate(entries) if e["split"] == "test")
    entries[test_index]["images"] = ["/etc/passwd"]
    ws.write_manifest(root, entries)
    preds = root.parent / "preds.jsonl"
    add(
        "generate/absolute_path",
        Case(
            generate_argv(ws.run_dir, root, preds), ("/etc/passwd", "outside the data root"), absent=(preds,)
        ),
    )
    root = ws.data("symlink_escape")
    target = ws.image_of(root, "train")
    target.unlink()
    target.symlink_to(outside)
    add("data_check/symlink_escape", Case(check_argv(root), (str(outside), "outside the data root")))

    # Damaged images: refused before the first step (train and val), before any decoding (generate).
    root = ws.data("corrupt_train_png")
    bad = corrupt_png(ws.image_of(root, "train"))
    out = root.parent / "out"
    add("train/corrupt_png", Case(train_argv(root, out), (str(bad), "skip_bad_images"), absent=(out,)))
    root = ws.data("truncated_train_jpeg")
    entries = ws.manifest(root)
    jpeg = truncated_jpeg(root / "images" / "truncated.jpg")
    entries[0]["images"] = ["images/truncated.jpg"]
    ws.write_manifest(root, entries)
    out = root.parent / "out"
    add("train/truncated_jpeg", Case(train_argv(root, out), (str(jpeg), "truncated"), absent=(out,)))
    root = ws.data("corrupt_val_png")
    bad = corrupt_png(ws.image_of(root, "val"))
    out = root.parent / "out"
    add("train/corrupt_val_png", Case(train_argv(root, out), (str(bad), "'val' split"), absent=(out,)))
    root = ws.data("undecodable_test_png_worker")  # passes the header check; fails in a DataLoader worker
    bad = undecodable_png(ws.image_of(root, "test"))
    preds = root.parent / "preds.jsonl"
    argv = generate_argv(ws.run_dir, root, preds, "--set", "data.num_workers=1")
    add(
        "generate/undecodable_png_in_loader_worker",
        Case(argv, (str(bad), "could not be decoded"), absent=(preds,)),
    )
    root = ws.data("corrupt_test_png")
    bad = corrupt_png(ws.image_of(root, "test"))
    preds = root.parent / "preds.jsonl"
    add("generate/corrupt_png", Case(generate_argv(ws.run_dir, root, preds), (str(bad),), absent=(preds,)))
    add(
        "generate/images_corrupt_png",
        Case(["generate", "--run", str(ws.run_dir), "--images", str(bad)], (str(bad),)),
    )

    # Output paths that cannot be written.
    folder = ws.fresh("outputs")
    good_preds = folder / "good_preds.jsonl"
    good_preds.write_text(
        json.dumps({"id": "a", "reference": "Heart normal.", "generated": "Heart normal."}) + "\n"
    )
    a_dir, a_file = folder / "a_dir", folder / "a_file"
    a_dir.mkdir()
    a_file.write_text("not a directory\n")
    add(
        "evaluate/out_is_directory",
        Case(
            ["evaluate", "--preds", str(good_preds), "--out", str(a_dir), "--no-meteor"],
            (str(a_dir), "directory"),
        ),
    )
    add(
        "generate/out_is_directory",
        Case(generate_argv(ws.run_dir, ws.data_root, a_dir), (str(a_dir), "directory")),
    )
    add(
        "train/out_is_file",
        Case(train_argv(ws.data_root, a_file), (str(a_file), "is a file"), present=(a_file,)),
    )
    add("train/out_under_a_file", Case(train_argv(ws.data_root, a_file / "run"), (str(a_file), "is a file")))
    add(
        "generate/run_is_file",
        Case(["generate", "--run", str(a_file), "--images", str(a_file)], (str(a_file), "is a file")),
    )

    # Predictions with labels outside 1/0/-1/null.
    for name, value in (("two", "2"), ("nan", "NaN"), ("infinity", "Infinity")):
        path = folder / f"labels_{name}.jsonl"
        labels = "[" + ", ".join([value] + ["null"] * 13) + "]"
        path.write_text(
            f'{{"id": "a", "reference": "Heart normal.", "generated": "Heart normal.", "labels": {labels}}}\n'
        )
        metrics = folder / f"metrics_{name}.json"
        add(
            f"evaluate/gt_label_{name}",
            Case(
                ["evaluate", "--preds", str(path), "--out", str(metrics), "--no-meteor"],
                (str(path), "labels"),
                absent=(metrics,),
            ),
        )
    path = folder / "non_utf8_preds.jsonl"
    path.write_bytes(b'{"id": "a", "reference": "Heart \xe9", "generated": "x"}\n')
    add(
        "evaluate/non_utf8_preds",
        Case(["evaluate", "--preds", str(path), "--out", str(folder / "m.json")], (str(path), "UTF-8")),
    )

    # Broken run directories.
    run = ws.run("config_image_size")
    config = json.loads((run / "config.json").read_text())
    config["model"]["vision"]["image_size"] = 64
    (run / "config.json").write_text(json.dumps(config))
    preds = run.parent / "preds.jsonl"
    add(
        "generate/config_image_size_changed",
        Case(
            generate_argv(run, ws.data_root, preds),
            ("config.json", "model.vision.image_size"),
            absent=(preds,),
        ),
    )
    run = ws.run("config_architecture")
    config = json.loads((run / "config.json").read_text())
    config["model"]["decoder"]["hidden_size"] = 64
    config["model"]["experts"]["names"] = config["model"]["experts"]["names"][:3]
    (run / "config.json").write_text(json.dumps(config))
    add(
        "generate/config_architecture_changed",
        Case(generate_argv(run, ws.data_root, run.parent / "p.jsonl"), ("config.json",)),
    )
    run = ws.run("config_list")
    (run / "config.json").write_text("[]\n")
    add(
        "generate/config_is_a_list",
        Case(generate_argv(run, ws.data_root, run.parent / "p.jsonl"), ("config.json", "list")),
    )
    run = ws.run("truncated_tokenizer")
    tokenizer_file = run / "tokenizer" / "tokenizer.json"
    tokenizer_file.write_bytes(tokenizer_file.read_bytes()[:100])
    add(
        "generate/truncated_tokenizer",
        Case(generate_argv(run, ws.data_root, run.parent / "p.jsonl"), (str(run / "tokenizer"),)),
    )
    run = ws.run("tokenizer_meta")
    (run / "tokenizer" / "leadrrg_tokenizer.json").write_text('{"kind": "bpe",')
    add(
        "generate/invalid_tokenizer_meta",
        Case(generate_argv(run, ws.data_root, run.parent / "p.jsonl"), ("leadrrg_tokenizer.json",)),
    )
    run = ws.run("bit_flip")
    weights = run / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-7] ^= 0x10  # a bit in the last tensor's data
    weights.unlink()  # model.safetensors is a hard link to checkpoint/model.safetensors: damage one copy
    weights.write_bytes(bytes(data))
    add(
        "generate/bit_flipped_weights",
        Case(generate_argv(run, ws.data_root, run.parent / "p.jsonl"), (str(weights), "damaged")),
    )
    add(
        "diagnose/bit_flipped_weights",
        Case(["diagnose", "--run", str(run), "--split", "test"], (str(weights), "damaged")),
    )
    json_out = ws.fresh("diagnose") / "a_file"
    json_out.write_text("x")
    add(
        "diagnose/json_under_a_file",
        Case(
            ["diagnose", "--run", str(ws.run_dir), "--split", "test", "--json", str(json_out / "d.json")],
            (str(json_out),),
        ),
    )
    run = ws.run("unfinished")
    config = json.loads((run / "config.json").read_text())
    config["train"]["max_steps"] = 10
    (run / "config.json").write_text(json.dumps(config))
    add(
        "generate/unfinished_run_warns",
        Case(
            generate_argv(run, ws.data_root, run.parent / "p.jsonl"),
            ("unfinished", "2 of train.max_steps=10"),
            rc=0,
        ),
    )
    run = ws.run("corrupt_trainer_state")
    (run / "checkpoint" / "trainer_state.json").write_text('{"step": 2, "epo')
    add(
        "train/resume_corrupt_trainer_state",
        Case(
            ["train", "--out", str(run), "--resume", "--quiet", "--set", "train.max_steps=3"],
            ("trainer_state.json", "damaged"),
        ),
    )

    run = ws.run("damaged_optimizer_state")
    state = json.loads((run / "checkpoint" / "trainer_state.json").read_text())
    del state["optimizer"]["scalars"]
    (run / "checkpoint" / "trainer_state.json").write_text(json.dumps(state))
    add(
        "train/resume_damaged_optimizer_state",
        Case(["train", "--out", str(run), "--resume", "--quiet"], ("trainer_state.json", "damaged")),
    )
    nothing = ws.fresh("resume_nothing") / "run"
    add(
        "train/resume_without_a_run",
        Case(
            ["train", "--out", str(nothing), "--resume"],
            (str(nothing), "not a leadrrg run"),
            absent=(nothing,),
        ),
    )

    # Overrides the config layer refuses, naming the key.
    out = ws.fresh("overrides") / "out"
    for name, override, key in (
        ("lr_nan", "train.lr=nan", "train.lr"),
        ("lr_infinity", "train.lr=Infinity", "train.lr"),
        ("negative_size", "model.decoder.hidden_size=-32", "decoder.hidden_size"),
        ("unknown_choice", "model.injection.fusion=sideways", "injection.fusion"),
        ("max_positions_short", "model.decoder.max_positions=16", "max_positions"),
        ("negative_workers", "data.num_workers=-1", "data.num_workers"),
        ("unknown_expert_name", "model.experts.names=Cardiomegaly,Heart", "model.experts.names"),
    ):
        add(f"train/{name}", Case(train_argv(ws.data_root, out, override), (key,), absent=(out,)))
    preds = out.parent / "preds.jsonl"
    for name, override, key in (
        ("temperature_nan", "decode.temperature=nan", "decode.temperature"),
        ("negative_batch", "decode.batch_size=-2", "decode.batch_size"),
    ):
        add(
            f"generate/{name}",
            Case(generate_argv(ws.run_dir, ws.data_root, preds, "--set", override), (key,), absent=(preds,)),
        )

    demo = ws.fresh("demo") / "out"
    add(
        "demo/lr_nan",
        Case(["demo", "--out", str(demo), "--set", "train.lr=nan"], ("train.lr",), absent=(demo / "data",)),
    )

    # Data sets that cannot be used.
    root = ws.data("duplicate_ids")
    entries = ws.manifest(root)
    entries[1]["id"] = entries[0]["id"]
    ws.write_manifest(root, entries)
    add("data_check/duplicate_ids", Case(check_argv(root), (repr(entries[0]["id"]), "twice")))
    root = ws.data("no_usable_study")
    ws.write_manifest(root, [dict(e, report="") for e in ws.manifest(root)])
    add("data_check/no_usable_study", Case(check_argv(root), ("no usable study",), rc=1))

    # synth: a config of the wrong shape; --overwrite of a folder synth did not write.
    folder = ws.fresh("synth")
    bad_config = folder / "synth.json"
    bad_config.write_text('{"background": 3}')
    out = folder / "data"
    add(
        "synth/config_wrong_type",
        Case(
            ["synth", "--out", str(out), "--train", "2", "--config", str(bad_config)],
            (str(bad_config), "background"),
            absent=(out,),
        ),
    )
    foreign = folder / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("months of work\n")
    add(
        "synth/overwrite_foreign_directory",
        Case(
            ["synth", "--out", str(foreign), "--train", "2", "--overwrite"],
            (str(foreign), "not a leadrrg synth"),
            present=(foreign / "chapter1.tex",),
        ),
    )
    return cases


# The names build_cases gives (the parametrised test is collected before the corpus is built).
CASE_NAMES: tuple[str, ...] = (
    "data_check/non_utf8_manifest",
    "train/non_utf8_manifest",
    "generate/non_utf8_manifest",
    "data_check/non_utf8_annotation",
    "train/non_utf8_label_csv",
    "data_check/chexpert_plus_ragged_row",
    "data_check/chexpert_plus_torn_label_line",
    "data_check/mimic_label_value_two",
    "label/unterminated_quote",
    "label/ragged_row",
    "train/label_csv_unterminated_quote",
    "data_check/path_escape",
    "data_check/path_escape_opted_in",
    "train/path_escape",
    "generate/absolute_path",
    "data_check/symlink_escape",
    "train/corrupt_png",
    "train/truncated_jpeg",
    "train/corrupt_val_png",
    "generate/undecodable_png_in_loader_worker",
    "generate/corrupt_png",
    "generate/images_corrupt_png",
    "evaluate/out_is_directory",
    "generate/out_is_directory",
    "train/out_is_file",
    "train/out_under_a_file",
    "generate/run_is_file",
    "evaluate/gt_label_two",
    "evaluate/gt_label_nan",
    "evaluate/gt_label_infinity",
    "evaluate/non_utf8_preds",
    "generate/config_image_size_changed",
    "generate/config_architecture_changed",
    "generate/config_is_a_list",
    "generate/truncated_tokenizer",
    "generate/invalid_tokenizer_meta",
    "generate/bit_flipped_weights",
    "diagnose/bit_flipped_weights",
    "diagnose/json_under_a_file",
    "generate/unfinished_run_warns",
    "train/resume_corrupt_trainer_state",
    "train/resume_damaged_optimizer_state",
    "train/resume_without_a_run",
    "train/lr_nan",
    "train/lr_infinity",
    "train/negative_size",
    "train/unknown_choice",
    "train/max_positions_short",
    "train/negative_workers",
    "train/unknown_expert_name",
    "generate/temperature_nan",
    "generate/negative_batch",
    "demo/lr_nan",
    "data_check/duplicate_ids",
    "data_check/no_usable_study",
    "synth/config_wrong_type",
    "synth/overwrite_foreign_directory",
)
