"""tools/homework.py: student notebooks that give nothing away, a deterministic build, and
grading with otter-grader that survives what students submit.

Grading runs each submission in a Jupyter kernel (about 15 s each on 2 cores), so the
grading tests share one build and grade several submissions per call.
"""
from __future__ import annotations

import copy
import csv
import re
import sys
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("otter", reason="otter-grader is in the [homework] extra (make test installs it)")

from cnnlearn.check import reference  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import homework  # noqa: E402
from exercises import answer_patterns, chapter_exercises, solution_dropdowns  # noqa: E402
from notebooks import chapter_id, chapter_paths  # noqa: E402
from test_check import EXERCISES as CHECKED  # noqa: E402  (a reference and wrong answers per exercise)

CHAPTERS = chapter_paths()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("homework")
    return {chapter_id(path): homework.build(path, out) for path in CHAPTERS}


def _texts(nb) -> list[str]:
    """Everything a student can read in a notebook: sources and stored outputs."""
    texts = []
    for cell in nb.cells:
        texts.append(cell.source)
        for out in cell.get("outputs", []):
            texts.append(out.get("text", ""))
            texts += [v for k, v in out.get("data", {}).items() if k.startswith("text/")]
    return texts


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_student_notebook_holds_no_solution_and_no_reference_answer(path, built):
    chapter = nbformat.read(path, as_version=4)
    student = nbformat.read(built[chapter_id(path)] / path.name, as_version=4)
    texts = _texts(student)
    assert not any(solution_dropdowns(t) for t in texts), "a solution dropdown is left"
    # No line of a solution (code or prose) survives, beyond short common ones.
    exercises, _ = chapter_exercises(chapter)
    def code(line):
        return line.split("  #")[0].strip()

    solution_lines = {code(line) for ex in exercises for i, s, e in ex.solutions
                      for line in chapter.cells[i].source[s:e].splitlines() if len(code(line)) > 30}
    assert solution_lines, "the chapter's solutions were not found"
    # Lines the chapter's own code shows (a placeholder's signature, the block the chapter
    # builds before asking for a variant) are not the solution's to hide.
    solution_lines -= {code(line) for c in chapter.cells if c.cell_type == "code" for line in c.source.splitlines()}
    everything = "\n".join(texts)
    assert not [line for line in solution_lines if line in everything]
    for id in [id for ex in exercises for id in ex.check_ids]:
        found = [p.pattern for p in answer_patterns(reference(id)) for t in texts if p.search(t)]
        assert not found, f"{id}: its reference answer {reference(id)!r} is in the student notebook"
    # Every checked exercise has a test, every discussion exercise an answer cell, and the
    # Colab install cell is still the first code cell.
    tests = sorted(p.stem for p in (built[chapter_id(path)] / "tests").glob("*.py"))
    assert tests == sorted(homework.test_name(id) for ex in exercises for id in ex.check_ids)
    answer_cells = [c.metadata["cnnlearn"]["answer_for"] for c in student.cells
                    if "answer_for" in c.metadata.get("cnnlearn", {})]
    assert answer_cells == [ex.number for ex in exercises if not ex.check_ids]
    first_code = next(c for c in student.cells if c.cell_type == "code")
    assert "google.colab" in first_code.source and "%pip install" in first_code.source
    exercise_cells = [c for c in student.cells if "exercise" in c.metadata.get("tags", [])]
    assert exercise_cells and all(not c.outputs and re.search(r"\bNone\b|\.\.\.", c.source) for c in exercise_cells)
    nbformat.validate(student)


def test_the_build_is_deterministic(built, tmp_path):
    again = {chapter_id(path): homework.build(path, tmp_path) for path in CHAPTERS}
    for chapter, folder in built.items():
        files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(again[chapter]) for p in again[chapter].rglob("*") if p.is_file())
        for name in files:
            assert (folder / name).read_bytes() == (again[chapter] / name).read_bytes(), f"{chapter}/{name} differs"


def test_points_are_configurable_and_unknown_ids_rejected(tmp_path):
    path = next(p for p in CHAPTERS if p.name.startswith("05"))
    folder = homework.build(path, tmp_path, points={"ch05.make_divisible": 3})
    assert "points = 3" in (folder / "tests" / "ch05_make_divisible.py").read_text()
    with pytest.raises(ValueError, match="ch05.no_such"):
        homework.build(path, tmp_path, points={"ch05.no_such": 2})


def test_the_slice_keeps_what_an_exercise_uses_and_drops_the_rest():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in [
        "import sys\nif 'google.colab' in sys.modules:\n    %pip install -q cnnlearn",  # setup: kept
        "import torch\nfrom cnnlearn import check",                                  # used: kept
        "model = train_for_an_hour()",                                              # unused: dropped
        "def helper(x):\n    return torch.zeros(x)",                                 # used by the answer
        "answer = helper(3).numel()\ncheck('ch01.output_size', answer)",
    ]])
    assert homework.needed_cells(nb, {4}) == {0, 1, 3, 4}
    # A cell that fills a container an exercise reads is kept, with the cell that made it.
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in [
        "import cnnlearn", "runs = {}", "for seed in range(3):\n    runs[seed] = seed ** 2",
        "done = []\ndone.append(1)", "answer = sum(runs.values())\ncheck('ch01.output_size', answer)",
    ]])
    assert homework.needed_cells(nb, {4}) == {0, 1, 2, 4}
    # ... also when a function fills it, called from another cell.
    nb.cells[2].source = "def train(seed):\n    runs[seed] = seed ** 2"
    nb.cells.insert(3, nbformat.v4.new_code_cell("for seed in range(3):\n    train(seed)"))
    assert homework.needed_cells(nb, {5}) == {0, 1, 2, 3, 5}


def _submission(student, replace: dict[str, str] | None = None, drop: str | None = None):
    """A copy of a notebook with some exercise cells' sources replaced or one dropped."""
    nb = copy.deepcopy(student)
    cells = []
    for cell in nb.cells:
        ids = cell.metadata.get("cnnlearn", {}).get("exercise", [])
        if drop in ids:
            continue
        for id in ids:
            if replace and id in replace:
                cell.source = replace[id]
        cells.append(cell)
    nb.cells = cells
    return nb


def _grade(folder, tmp_path, notebooks: dict[str, object], **kw) -> dict[str, dict]:
    paths = []
    for name, nb in notebooks.items():
        paths.append(tmp_path / "submissions" / f"{name}.ipynb")
        paths[-1].parent.mkdir(parents=True, exist_ok=True)
        if isinstance(nb, str):
            paths[-1].write_text(nb)
        else:
            nbformat.write(nb, paths[-1])
    out = tmp_path / "gradebook.csv"
    homework.grade(folder, [tmp_path / "submissions"], out, **kw)
    with open(out) as f:
        return {Path(row["submission"]).stem: row for row in csv.DictReader(f)}


def test_grading_survives_wrong_answers_errors_loops_deleted_cells_and_garbage(built, tmp_path):
    # Long enough for the import cell (torch, matplotlib) on a slow or busy machine, where 5 s
    # was not; the endless loop costs this much once.
    TIMEOUT = 20
    folder = built["05"]
    key = nbformat.read(folder / "key" / "05_depthwise.ipynb", as_version=4)
    student = nbformat.read(folder / "05_depthwise.ipynb", as_version=4)
    # The registered wrong values; the code exercise keeps its unanswered placeholder.
    wrong = {id: f"answer = {CHECKED[id][1][0][0]!r}\ncheck({id!r}, answer)"
             for id in ("ch05.separable_macs", "ch05.make_divisible")}
    loop = {"ch05.separable_macs": "while True:\n    pass\ncheck('ch05.separable_macs', answer)"}
    rows = _grade(folder, tmp_path, {
        "key": key,
        "wrong": _submission(student, replace=wrong),
        "error": _submission(key, replace={"ch05.separable_macs": "answer = 1 / 0\ncheck('ch05.separable_macs', answer)"}),
        "loop": _submission(key, replace=loop),
        "deleted": _submission(key, drop="ch05.make_divisible"),
        "garbage": "this is not a notebook",
    }, cell_timeout=TIMEOUT)
    ids = ["ch05.separable_block", "ch05.separable_macs", "ch05.make_divisible"]

    def scores(name):
        return [float(rows[name][id]) for id in ids]

    assert scores("key") == [1, 1, 1] and rows["key"]["flags"] == ""
    assert float(rows["key"]["total"]) == float(rows["key"]["possible"]) == 3
    assert scores("wrong") == [0, 0, 0] and rows["wrong"]["flags"] == ""
    assert scores("error") == [1, 0, 1] and "ZeroDivisionError" in rows["error"]["flags"]
    assert scores("loop") == [1, 0, 1] and f"timed out after {TIMEOUT} s" in rows["loop"]["flags"]
    assert scores("deleted") == [1, 1, 0] and "5.3 (ch05.make_divisible): its cell is missing" in rows["deleted"]["flags"]
    assert scores("garbage") == [0, 0, 0] and "not a readable notebook" in rows["garbage"]["flags"]


def test_every_chapters_answer_key_gets_full_marks(built, tmp_path):
    # Proves, for every chapter, that the key answers every checked exercise and that the
    # grading slice keeps every cell an exercise needs.
    for chapter, folder in built.items():
        key = nbformat.read(next((folder / "key").glob("*.ipynb")), as_version=4)
        rows = _grade(folder, tmp_path / chapter, {"key": key}, cell_timeout=120)
        assert float(rows["key"]["total"]) == float(rows["key"]["possible"]) > 0, (chapter, rows["key"])
        assert rows["key"]["flags"] == "", (chapter, rows["key"]["flags"])


def test_the_gradescope_zip_holds_the_tests_and_is_deterministic(tmp_path):
    import zipfile

    path = next(p for p in CHAPTERS if p.name.startswith("05"))
    first = homework.build(path, tmp_path / "a", make_zip=True) / "autograder.zip"
    second = homework.build(path, tmp_path / "b", make_zip=True) / "autograder.zip"
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as z:
        names = set(z.namelist())
        assert {"tests/ch05_separable_block.py", "tests/ch05_separable_macs.py", "tests/ch05_make_divisible.py",
                "run_autograder", "setup.sh"} <= names
        assert "cnnlearn @ git+" in z.read("environment.yml").decode()
