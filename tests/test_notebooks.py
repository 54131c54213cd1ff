"""The chapters' stored outputs are current, stamped, and in the book."""
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import notebooks  # noqa: E402

CHAPTERS = notebooks.chapter_paths()


def test_there_are_chapters():
    assert CHAPTERS, "no chapter notebooks found in chapters/"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_outputs_are_current(path):
    nb = nbformat.read(path, as_version=4)
    stamp = nb.metadata.get("cnnlearn")
    assert stamp, f"{path.name} has no cnnlearn stamp: run make outputs CHAPTER={notebooks.chapter_id(path)}"
    assert set(stamp) >= {"budget", "device", "torch", "wall_seconds", "code_sha256"}
    assert stamp["code_sha256"] == notebooks.code_sha256(nb), (
        f"{path.name}: code cells changed after the outputs were stored; run make outputs CHAPTER={notebooks.chapter_id(path)}")
    assert stamp["budget"] in ("cpu", "gpu"), "stored outputs must come from the cpu or gpu budget"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_first_cell_installs_from_the_configured_repository(path):
    nb = nbformat.read(path, as_version=4)
    assert notebooks.install_url(nb) == notebooks.repository_url()
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "cnnlearn.setup(" in first.source, "the first cell must pick and print the budget and device"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_code_cell_has_outputs_or_is_silent(path):
    nb = nbformat.read(path, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{path.name} has stored error outputs"
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert images, f"{path.name} stores no figures"


def test_every_chapter_is_in_the_table_of_contents():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    def entries(items):  # chapters and the sections under them (Jupyter Book's `sections:`)
        for item in items:
            yield item["file"]
            yield from entries(item.get("sections", []))

    files = set(entries(c for part in toc["parts"] for c in part["chapters"]))
    for path in CHAPTERS:
        assert f"chapters/{path.stem}" in files, f"{path.name} is missing from _toc.yml"
