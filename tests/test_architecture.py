"""The house rules of docs/ARCHITECTURE.md, recounted from the source by scripts/architecture.py."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "architecture.py"


@pytest.fixture(scope="module")
def measures():
    spec = importlib.util.spec_from_file_location("architecture", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.measure()


def test_no_import_circle(measures):
    assert measures["cycles"] == []


def test_stages_import_only_what_the_layering_allows(measures):
    assert measures["layering"] == []


def test_no_file_over_400_lines_and_no_function_over_80(measures):
    assert measures["long_files"] == []
    assert measures["long_functions"] == []


def test_only_leaves_sit_beside_the_stage_folders(measures):
    names = {name.split(".")[1] for name in measures["loose"]}
    assert names <= {
        "__main__",
        "cli",
        "collectives",
        "constants",
        "errors",
        "io",
        "progress",
        "registry",
        "fetch",
    }
