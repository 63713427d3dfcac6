"""The page as a tool, below the browser: the display form of a report, what-if overrides merged with the
model's own p (the API and the service agree), the example studies the page offers, and views used or refused."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from leadrrg.errors import LeadrrgError
from leadrrg.inference.display import display_pieces, display_report

NORMALISED = "the heart is normal in size . no focal consolidation , pleural effusion or pneumothorax ."


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            NORMALISED,
            "The heart is normal in size. No focal consolidation, pleural effusion or pneumothorax.",
        ),
        ("no effusion . no pneumothorax", "No effusion. No pneumothorax."),
        ("no effusion . . .", "No effusion."),  # a degenerate repeat  # a closing period is added
        ("a 3.5 cm nodule ( left ) .  stable", "A 3.5 cm nodule (left). Stable."),  # decimals stay one word
        ("  heart normal !  lungs clear ? ", "Heart normal! Lungs clear?"),
        ("", ""),
        ("   ", ""),
        (". .", "."),  # punctuation only: a repeated end is one, no period added
    ],
)
def test_display_report(text, shown):
    assert display_report(text) == shown


def test_display_pieces_join_to_the_display_report():
    pieces = [" the", " heart", " is", " normal", " .", " no", " effusion", " ,", " no", " pneumothorax"]
    shown = display_pieces(pieces)
    assert len(shown) == len(pieces) and "".join(shown) == display_report("".join(pieces))
    assert shown[:2] == ["The", " heart"] and shown[4] == "." and shown[-1] == " pneumothorax."
    assert display_pieces([]) == [] and display_pieces(["", " ."]) == ["", "."]


def test_display_report_keeps_the_words_and_their_order():
    shown = display_report(NORMALISED)
    assert shown.lower().replace(".", " .").replace(",", " ,").split() == NORMALISED.split()


# --------------------------------------------------------------------------------------------------
# What-if overrides through the Python API


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    import leadrrg
    from tests.fixtures_data import make_jsonl
    from tests.test_generate_cli import write_tiny_run

    data = make_jsonl(tmp_path_factory.mktemp("data"), counts={"train": 2, "test": 1}, views=1)
    run = write_tiny_run(tmp_path_factory.mktemp("run"), data, max_new_tokens=6)
    return leadrrg.load(run, device="cpu")


@pytest.fixture(scope="module")
def png(tmp_path_factory):
    from tests.fixtures_data import write_png

    return write_png(tmp_path_factory.mktemp("img") / "frontal.png", seed=3)


def test_a_partial_what_if_merges_with_the_models_own_p(generator, png):
    own = generator.generate(str(png))
    name = generator.expert_names[-1]
    result = generator.generate(str(png), expert_probs={name: 1.0})
    assert result.expert_probs == pytest.approx({**own.expert_probs, name: 1.0})
    assert result.report_display == display_report(result.report)
    images, view_mask = generator.prepare(str(png))
    probs = generator.expert_probs_of(images[None], view_mask[None])
    assert probs.shape == (1, len(generator.expert_names))
    assert probs[0].tolist() == pytest.approx([own.expert_probs[n] for n in generator.expert_names], abs=1e-6)
    rows = generator.expert_rows(
        [None, {name: 0.0}], images[None].repeat(2, 1, 1, 1, 1), view_mask[None].repeat(2, 1)
    )
    assert rows[0].tolist() == pytest.approx(probs[0].tolist()) and rows[1, -1] == 0.0
    full = [0.5] * len(generator.expert_names)
    assert generator.generate(str(png), expert_probs=full).expert_probs == pytest.approx(
        dict(zip(generator.expert_names, full))
    )


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ({"Effusion": 1.0}, "unknown expert(s) ['Effusion']; expected some of ['Cardiomegaly'"),
        ({"Edema": 1.5}, "expert_probs['Edema'] is 1.5; expected a probability in [0, 1]"),
        ({"Edema": "yes"}, "expected a probability"),
        ({"Edema": float("nan")}, "expected a probability"),
        ([0.5], "expected 3 probabilities in [0, 1], one per expert in the order"),
    ],
)
def test_a_bad_what_if_is_refused_naming_it(generator, png, override, words):
    with pytest.raises(LeadrrgError) as caught:
        generator.generate(str(png), expert_probs=override)
    assert words in str(caught.value)


# --------------------------------------------------------------------------------------------------
# The service: the what-if field, examples, views


@pytest.fixture(scope="module")
def server(generator):
    pytest.importorskip("fastapi")
    from leadrrg.serve.app import BackgroundServer, create_app
    from leadrrg.serve.settings import ServeConfig

    with BackgroundServer(create_app(generator, ServeConfig(max_wait_ms=50))) as url:
        yield url


def post(url, files, fields):
    from leadrrg.serve.client import multipart_body, request

    data, kind = multipart_body(files, fields)
    return request(url + "/v1/reports", "POST", data, {"Content-Type": kind})


def test_the_what_if_field_of_the_service(server, generator, png):
    image = png.read_bytes()
    name = generator.expert_names[0]
    status, own = post(server, [("f.png", image)], {})
    assert status == 200 and "what_if" not in own and own["report_display"] == display_report(own["report"])
    status, body = post(server, [("f.png", image)], {"expert_probs": json.dumps({name: 0.0})})
    assert status == 200 and body["what_if"] == {name: 0.0}
    assert body["expert_probs"] == pytest.approx({**own["expert_probs"], name: 0.0}, abs=1e-3)
    assert body["expert_probs"] == pytest.approx(
        generator.generate(image, expert_probs={name: 0.0}).to_dict()["expert_probs"]
    )
    cases = [
        ('{"Effusion": 1}', "unknown expert(s) ['Effusion']; expected some of"),
        ('{"Edema": 2}', "expected a probability in [0, 1]"),
        ("[1, 0]", "expected a JSON object"),
        ("{not json", "expected a JSON object"),
    ]
    for text, words in cases:
        status, body = post(server, [("f.png", image)], {"expert_probs": text})
        assert status == 400 and words in body["error"], (text, body)
    assert post(server, [("f.png", image)], {"expert_probs": "{}"})[1]["expert_probs"] == own["expert_probs"]


def test_what_ifs_batched_with_plain_requests_each_get_their_own(server, generator, png):
    image = png.read_bytes()
    names = generator.expert_names
    fields = [
        {},
        {"expert_probs": json.dumps({names[1]: 1.0})},
        {},
        {"expert_probs": json.dumps({names[2]: 0.0})},
    ]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda f: post(server, [("f.png", image)], f), fields))
    assert all(status == 200 for status, _ in answers)
    own = answers[0][1]["expert_probs"]
    assert answers[2][1]["expert_probs"] == own
    assert answers[1][1]["expert_probs"] == pytest.approx({**own, names[1]: 1.0}, abs=1e-3)
    assert answers[3][1]["expert_probs"] == pytest.approx({**own, names[2]: 0.0}, abs=1e-3)


def test_every_chosen_view_is_used_or_refused(server, generator, png):
    image = png.read_bytes()
    status, body = post(server, [("a.png", image), ("b.png", image)], {})
    assert status == 200 and body["views"] == 2 == generator.max_views
    status, body = post(server, [("a.png", image)] * 3, {})
    assert status == 400
    assert "at most 2 views per study (model.max_views), so none was used" in body["error"]


def test_the_example_studies_ship_and_are_served(server):
    from leadrrg.serve.assets import example_bytes, example_files
    from leadrrg.serve.client import request

    files = example_files()
    index = json.loads(example_bytes("index.json"))
    assert index["examples"] and {item["file"] for item in index["examples"]} <= set(files)
    for item in index["examples"]:
        assert item["title"] and item["truth"] and item["reference"] and item["study"]
        png = example_bytes(item["file"])
        assert png.startswith(b"\x89PNG") and len(png) < 40_000  # small
    status, listed = request(server + "/examples/index.json")
    assert status == 200 and listed == index
    status, _ = request(server + "/examples/" + index["examples"][0]["file"])
    assert status == 200
    status, body = request(server + "/examples/nothing.png")
    assert status == 404 and "no example 'nothing.png'; expected one of" in body["error"]
    assert request(server + "/examples/..%2Fapp.py")[0] == 404  # no path outside the folder


def test_the_batcher_passes_what_ifs_only_when_a_study_has_one():
    import torch

    from leadrrg.serve.batcher import Batcher

    seen = []

    def decode(images, view_mask, evidence, *what_ifs):
        seen.append(what_ifs)
        return [type("R", (), {"evidence": None})() for _ in range(images.shape[0])]

    async def scenario():
        batcher = Batcher(decode, max_batch=4, max_wait_s=0.05)
        await batcher.start()
        study = (torch.zeros(1, 1, 4, 4), torch.ones(1, dtype=torch.bool))
        await batcher.submit(*study)
        await asyncio.gather(batcher.submit(*study), batcher.submit(*study, expert_probs={"Edema": 1.0}))
        await batcher.stop()

    asyncio.run(scenario())
    assert seen[0] == () and [None, {"Edema": 1.0}] in [list(w[0]) for w in seen[1:] if w]
