"""RadGraph-F1, partial reward (Delbrouck et al., 2022), as ReXrank and the papers report it: the `radgraph`
package's ``F1RadGraph(reward_level="partial", model_type="radgraph")``. Each report is annotated by the RadGraph
model (entities with labels and relations); a report pair scores the F1 of the sets of
``(entity tokens, label)`` for entities without relations and ``(entity tokens, label, True)`` for entities
with at least one, 0 when either report is empty or has no entity; ``radgraph_partial_f1`` is the mean.

`partial_reward` is that reward (radgraph 0.1.18 ``rewards.exact_entity_token_if_rel_exists_reward`` behind
``compute_reward``), written out so that the score of given annotations is checked without the package; the
annotations come from `RadGraphAnnotator`, the package's model read from a local folder (`metrics.local_models`,
``radgraph/radgraph``): nothing is downloaded.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from leadrrg.errors import LeadrrgError

MODEL_TYPE = "radgraph"
Annotate = Callable[[list[str]], list[dict]]


def _candidates(annotation: dict) -> set[tuple]:
    return {
        (entity["tokens"], entity["label"], True)
        if entity["relations"]
        else (entity["tokens"], entity["label"])
        for entity in annotation["entities"].values()
    }


def partial_reward(hypothesis: dict, reference: dict) -> float:
    """F1 of one pair of RadGraph annotations at the partial level (0 when either has no entity)."""
    if not hypothesis["entities"] or not reference["entities"]:
        return 0.0
    hyp, ref = _candidates(hypothesis), _candidates(reference)
    precision = len(hyp & ref) / len(hyp) if hyp else 0.0
    recall = len(ref & hyp) / len(ref) if ref else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def radgraph_partial_f1(references: Sequence[str], hypotheses: Sequence[str], *, annotate: Annotate) -> dict:
    """``radgraph_partial_f1`` (mean) and its ``per_study`` values; `annotate` maps reports to annotations."""
    if len(references) != len(hypotheses):
        raise LeadrrgError(f"{len(references)} references but {len(hypotheses)} generated reports")
    kept = [i for i in range(len(references)) if len(hypotheses[i]) and len(references[i])]
    annotations = annotate([hypotheses[i] for i in kept] + [references[i] for i in kept]) if kept else []
    rewards = np.zeros(len(references))
    for j, i in enumerate(kept):
        rewards[i] = partial_reward(annotations[j], annotations[j + len(kept)])
    return {"radgraph_partial_f1": float(rewards.mean()), "per_study": {"radgraph_partial_f1": rewards}}


def _offline_model_dir(model_dir: Path, work: Path) -> Path:
    """A copy of `model_dir` whose config.json names the local BERT folder instead of a hub id (radgraph reads
    the tokenizer and encoder by that name)."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    local = {}
    for part in ("dataset_reader", "model"):
        section = config[part] if part == "dataset_reader" else config[part]["embedder"]
        bert = section["token_indexers" if part == "dataset_reader" else "token_embedders"]["bert"]
        name = bert["model_name"]
        folder = name if Path(name).is_dir() else str(model_dir.parent / name)
        if not Path(folder, "config.json").is_file():
            raise LeadrrgError(
                f"{model_dir}/config.json names the BERT {name!r}; put that Hugging Face model "
                f"(https://huggingface.co/{name}: config.json, tokenizer files, weights) in {folder}/"
            )
        bert["model_name"] = local[name] = folder
    target = work / MODEL_TYPE
    target.mkdir()
    for item in model_dir.iterdir():
        if item.name != "config.json":
            (target / item.name).symlink_to(item.resolve())
    (target / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return target


class RadGraphAnnotator:
    """``annotator(reports) -> [annotation]``: radgraph's ``RadGraph`` model from the local folder `model_dir`."""

    def __init__(self, model_dir: str | Path, *, device: str = "cpu"):
        import contextlib
        import io

        from radgraph import RadGraph

        model_dir = Path(model_dir)
        with tempfile.TemporaryDirectory() as work:
            _offline_model_dir(model_dir, Path(work))
            cuda = (
                int(device.split(":")[1]) if device.startswith("cuda:") else (0 if device == "cuda" else -1)
            )
            with contextlib.redirect_stdout(io.StringIO()):  # "Using device: ..."
                self.model = RadGraph(model_type=MODEL_TYPE, model_cache_dir=work, cuda=cuda)

    def __call__(self, reports: list[str]) -> list[dict]:
        output = self.model(reports)
        return [output[str(i)] for i in range(len(reports))]
