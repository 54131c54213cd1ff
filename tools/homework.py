"""Homework from the chapters, graded with otter-grader (``make homework``, ``make grade``).

    python tools/homework.py build [--chapter 05] [--out homework] [--points points.json] [--zip]
    python tools/homework.py grade --homework homework/05 SUBMISSION... [--out gradebook.csv]

``build`` writes, for each chapter, into ``OUT/NN/``:

* ``NN_name.ipynb``, the student notebook: the chapter with every solution dropdown
  removed, an answer cell under each discussion exercise, the exercise cells left with
  their placeholders (``answer = None  # your answer``) and without outputs, the
  Exercises section's outputs cleared, and the Colab install cell kept. The chapter's
  other outputs (the figures and tables its questions refer to) stay: the student
  reads the chapter in this notebook, and ``tests/test_exercises.py`` proves they give
  no answer away.
* ``tests/chNN_<name>.py``, one otter test file per exercise. Each calls the checker of
  ``cnnlearn/check.py`` on the student's answer: the checkers stay the single source of
  truth, no answer is written twice.
* ``key/NN_name.ipynb``, the teacher's answer key: the student notebook with every
  checked exercise answered (registered reference values, solution code from the
  dropdowns). Not for students.
* ``manifest.json``: the exercises, their test names, answer expressions and points.
* with ``--zip``, ``autograder.zip`` from ``otter generate`` for Gradescope.

``grade`` runs each submission in its own process and Jupyter kernel through otter's
``grade_notebook`` and writes a gradebook CSV: one row per submission, one column per
exercise, the total, and flags. Only the cells the exercises need run (a backward
slice over the names they use; the others are tagged ``otter_ignore``), at the
``smoke`` budget, so a chapter's training does not run forty times. A cell that raises
is recorded and execution goes on; a cell that runs longer than ``--cell-timeout`` is
interrupted and execution goes on; a missing exercise cell scores zero; a submission
that is not a notebook, or whose kernel never finishes within ``--timeout``, gets a row
of zeros. Every one of these is flagged, and none stops the run.

Why otter-grader rather than nbgrader: otter grades locally without Docker and without a
course database, its student side works in Colab, and the same tests feed Gradescope.
"""
from __future__ import annotations

import argparse
import ast
import builtins
import copy
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from exercises import _EXERCISE_MARK as _MARK, chapter_exercises  # noqa: E402  (5.3, or 3b.1)
from notebooks import chapter_id, chapter_paths  # noqa: E402

EXERCISE_TAG = "exercise"
IGNORE_TAG = "otter_ignore"   # otter drops cells with this tag before executing
_FENCED_CODE = re.compile(r"^(~{3,}|`{3,})python[ \t]*\n(.*?)^\1[ \t]*$", re.M | re.S)


@dataclass
class ExerciseSpec:
    """One checked exercise of a homework notebook."""

    id: str          # "ch05.make_divisible", the checker's id
    number: str      # "5.3", as the chapter numbers it
    test: str        # "ch05_make_divisible", the otter test's name and file stem
    expression: str  # what the notebook passes to check(): "answer", "SeparableBlock"
    points: float = 1


def test_name(exercise_id: str) -> str:
    return exercise_id.replace(".", "_")


def check_calls(source: str) -> list[tuple[str, str]]:
    """(id, answer expression) of each ``check("id", answer)`` call in a code cell."""
    try:
        tree = ast.parse(_without_magics(source))
    except SyntaxError:
        return [(m, "") for m in re.findall(r"""\bcheck\(\s*["']([^"']+)["']""", source)]
    calls = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "check"
                and len(node.args) >= 2 and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)):
            calls.append((node.args[0].value, ast.unparse(node.args[1])))
    return calls


# --------------------------------------------------------------------------- the student notebook


def _new_cell(kind: str, source: str, cell_id: str, **metadata):
    cell = (nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell)(source)
    cell.id = cell_id  # a fixed id: nbformat's are random, and the build must be deterministic
    cell.metadata.update(metadata)
    return cell


def _exercises_start(nb) -> int:
    """Index of the markdown cell that opens the "Exercises" section."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and re.search(r"^#{1,2}\s+Exercises", cell.source, re.M | re.I):
            return index
    raise ValueError("the chapter has no '## Exercises' section")


def student_notebook(chapter_nb, chapter: str, points: dict[str, float] | None = None):
    """The student notebook of a chapter and its checked exercises (see the module doc)."""
    points = points or {}
    exercises, problems = chapter_exercises(chapter_nb)
    if problems:
        raise ValueError("the chapter's exercises break the rules of tests/test_exercises.py:\n  "
                         + "\n  ".join(problems))
    asked = {id for ex in exercises for id in ex.check_ids}
    unknown = sorted(set(points) - asked)
    if unknown:
        raise ValueError(f"points for {', '.join(unknown)}, which this chapter does not ask; "
                         f"its exercises are {', '.join(sorted(asked))}")
    nb = copy.deepcopy(chapter_nb)
    # Remove every solution, last first so that the offsets of the others stay valid.
    spans = sorted((s for ex in exercises for s in ex.solutions), reverse=True)
    for index, start, end in spans:
        nb.cells[index].source = nb.cells[index].source[:start] + nb.cells[index].source[end:]
    discussion = {ex.number for ex in exercises if not ex.check_ids}
    first = _exercises_start(nb)

    cells, specs = [], []
    for index, cell in enumerate(nb.cells):
        if index < first:
            cells.append(cell)
            continue
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)  # timestamps of the chapter's last run
            calls = check_calls(cell.source)
            if calls:
                number = next(ex.number for ex in exercises if calls[0][0] in ex.check_ids)
                for id, expression in calls:
                    specs.append(ExerciseSpec(id, number, test_name(id), expression, points.get(id, 1)))
                cell.metadata["otter"] = {"tests": [test_name(id) for id, _ in calls]}
                cell.metadata["cnnlearn"] = {"exercise": [id for id, _ in calls]}
                cell.metadata["tags"] = sorted(set(cell.metadata.get("tags", [])) | {EXERCISE_TAG})
            cells.append(cell)
            continue
        # A markdown cell: one cell per exercise paragraph, and an answer cell under each
        # discussion exercise.
        text = cell.source.strip()
        if not text:
            continue  # it held only a solution
        cuts = [m.start() for m in _MARK.finditer(text)]
        pieces = [text[a:b].strip() for a, b in zip([0] + cuts, cuts + [len(text)])]
        for k, piece in enumerate(p for p in pieces if p):
            md = _new_cell("markdown", piece, f"{cell.get('id', f'c{index}')}-{k}") if k else cell
            md.source = piece
            cells.append(md)
            mark = _MARK.match(piece)
            if mark and mark.group(1) in discussion:
                cells.append(_new_cell(
                    "markdown", f"**Your answer to {mark.group(1)}:**\n\n*Write your answer here.*",
                    f"answer-{mark.group(1).replace('.', '-')}", cnnlearn={"answer_for": mark.group(1)}))

    header = _new_cell("markdown", (
        f"```{{note}} Homework: chapter {chapter.lstrip('0')}\n"
        "Answer the exercises at the end: fill in the cells marked `# your answer` or `# your code`, "
        "and write your answers to the discussion exercises in the cells marked *Your answer*. "
        "Each `check(...)` call tells you at once whether an answer is right. Do not delete or rename "
        "the exercise cells: they are graded. Run the notebook from the top before you submit it.\n```"),
        "homework-header")
    cells.insert(1, header)
    nb.cells = cells
    nb.metadata["cnnlearn"] = {"homework": chapter}
    return nb, specs


def key_notebook(student_nb, chapter_nb, specs: list[ExerciseSpec]):
    """The answer key: each checked exercise answered with its registered reference value,
    or with the solution code of its dropdown in the chapter."""
    from cnnlearn.check import reference

    exercises, _ = chapter_exercises(chapter_nb)
    solution_code = {}
    for ex in exercises:
        for index, start, end in ex.solutions:
            found = _FENCED_CODE.search(chapter_nb.cells[index].source[start:end])
            if found and ex.number not in solution_code:
                solution_code[ex.number] = found.group(2)
    nb = copy.deepcopy(student_nb)
    by_id = {s.id: s for s in specs}
    for cell in nb.cells:
        ids = cell.metadata.get("cnnlearn", {}).get("exercise", []) if cell.cell_type == "code" else []
        if not ids:
            continue
        source = cell.source.splitlines()
        first_check = next(i for i, line in enumerate(source) if re.match(r"\s*check\(", line))
        lines = []
        for id in ids:
            spec, value = by_id[id], reference(id)
            if value is not None and spec.expression.isidentifier():
                lines.append(f"{spec.expression} = {value!r}")
            elif spec.number in solution_code:
                lines.append(solution_code[spec.number].rstrip())
            else:
                raise ValueError(f"exercise {spec.number} ({id}) has neither a reference value nor "
                                 "solution code in a ```python or ~~~python block of its dropdown")
        # The answer goes just before the first check() call: after the cell's own setup
        # (a measurement, say), and after its placeholder, which it replaces.
        cell.source = "\n".join(source[:first_check] + list(dict.fromkeys(lines)) + source[first_check:])
    return nb


_TEST_FILE = '''"""Exercise {number} of chapter {chapter} ({id}), graded by cnnlearn's own checker."""
from otter.test_files import test_case

OK_FORMAT = False
name = {test!r}
points = {points!r}


@test_case(points={points!r}, hidden=False)
def test_{test}(env):
    from cnnlearn.check import check
    answer = eval({expression!r}, env)  # what the notebook passes to check()
    verdict = check({id!r}, answer, quiet=True)
    assert verdict, verdict.message
'''


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _deterministic_zip(path: Path) -> None:
    """Rewrite a zip with sorted entries and a fixed date, so that the same input gives the
    same bytes (``otter generate`` stamps the current time)."""
    with zipfile.ZipFile(path) as z:
        entries = sorted((info.filename, z.read(info)) for info in z.infolist() if not info.is_dir())
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, data, zipfile.ZIP_DEFLATED)
    os.replace(tmp, path)


def build(chapter_path: Path, out: Path, points: dict[str, float] | None = None, make_zip: bool = False) -> Path:
    """Build one chapter's homework into ``out/NN/`` and return that folder."""
    chapter = chapter_id(chapter_path)  # "05", or "03b" for a chapter's second notebook
    chapter_nb = nbformat.read(chapter_path, as_version=4)
    student, specs = student_notebook(chapter_nb, chapter, points)
    key = key_notebook(student, chapter_nb, specs)
    folder = out / chapter
    if folder.exists():
        shutil.rmtree(folder)
    _write(folder / chapter_path.name, nbformat.writes(student) + "\n")
    _write(folder / "key" / chapter_path.name, nbformat.writes(key) + "\n")
    for spec in specs:
        _write(folder / "tests" / f"{spec.test}.py", _TEST_FILE.format(chapter=chapter.lstrip('0'), **asdict(spec)))
    manifest = {"chapter": chapter, "notebook": chapter_path.name, "exercises": [asdict(s) for s in specs]}
    _write(folder / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    if make_zip:
        _otter_generate(folder)
    return folder


def _otter_generate(folder: Path) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    from notebooks import repository_url

    requirements = folder / "requirements.txt"
    _write(requirements, f"cnnlearn @ git+{repository_url()}\n")
    subprocess.run([sys.executable, "-m", "otter", "generate", "--tests-dir", "tests", "--output-path",
                    "autograder.zip", "--requirements", "requirements.txt", "--no-environment",
                    "--no-config"], cwd=folder, check=True, capture_output=True)
    _deterministic_zip(folder / "autograder.zip")


# --------------------------------------------------------------------------- grading


def _without_magics(source: str) -> str:
    """Python source with IPython's %magics, !commands and ?help lines made into ``pass``."""
    lines = []
    for line in source.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("%", "!", "?")) or stripped.endswith("?"):
            line = line[:len(line) - len(stripped)] + "pass"
        lines.append(line)
    return "\n".join(lines)


_MUTATING = {"append", "extend", "insert", "update", "add", "setdefault", "pop", "popitem", "remove",
             "clear", "discard", "sort", "reverse", "__setitem__"}


def _scope(nodes, params=(), effects: dict[str, set[str]] | None = None) -> tuple[set[str], set[str], bool, set[str]]:
    """(bound, free, star import) names of one scope: the names it assigns, imports or
    defines, and the names it reads without binding them (including what nested
    functions, classes, lambdas and comprehensions read from outside). A function's
    parameters and locals are its own, so they do not make a cell depend on another.

    The fourth item: the names defined outside this scope that it changes in place
    (``runs[k] = v``, ``items.append(v)``). ``effects`` maps a function's name to the outer
    names it changes; it is filled at each ``def``, and a call of such a function counts as
    changing them (a ``train()`` that fills a global ``runs``)."""
    effects = {} if effects is None else effects
    bound, loads, star = set(params), set(), False
    mutated: set[str] = set()  # runs[k] = v, obj.attr = v, items.append(v): changes a name defined earlier
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
            stack += node.decorator_list
            if isinstance(node, ast.ClassDef):
                stack += node.bases + [k.value for k in node.keywords]
                params = ()
            else:
                a = node.args
                stack += a.defaults + [d for d in a.kw_defaults if d is not None]
                params = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x]
            _, free, _, changed = _scope(node.body, params, effects)
            loads |= free | changed
            if changed and not isinstance(node, ast.ClassDef):
                effects[node.name] = changed
        elif isinstance(node, ast.Lambda):
            a = node.args
            params = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x]
            loads |= _scope([node.body], params, effects)[1]
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            loads |= _scope(parts + node.generators, (), effects)[1]  # its loop variables are its own
        elif isinstance(node, ast.Name):
            (loads if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Subscript, ast.Attribute)) and not isinstance(node.ctx, ast.Load):
            base = node.value
            while isinstance(base, (ast.Subscript, ast.Attribute)):
                base = base.value
            if isinstance(base, ast.Name):
                mutated.add(base.id)
            stack += ast.iter_child_nodes(node)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and isinstance(node.func.value, ast.Name) and node.func.attr in _MUTATING):
            mutated.add(node.func.value.id)
            stack += ast.iter_child_nodes(node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in effects:
            mutated |= effects[node.func.id]
            loads.add(node.func.id)
            stack += ast.iter_child_nodes(node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    star = True
                else:
                    bound.add(alias.asname or alias.name.split(".")[0])
        else:
            stack += ast.iter_child_nodes(node)
    # A mutated name counts as defined here (so a cell that fills `runs` is kept for a cell that
    # reads it) and as used (the cell needs the earlier definition it changes).
    return bound | mutated, (loads - bound) | mutated, star, mutated - bound


def cell_names(source: str, effects: dict[str, set[str]] | None = None) -> tuple[set[str], set[str], bool] | None:
    """(defined, used, star import) of a code cell, or None when it is not valid Python.
    ``effects``: see :func:`_scope` (shared across the cells of a notebook)."""
    try:
        tree = ast.parse(_without_magics(source))
    except SyntaxError:
        return None
    defined, used, star, _ = _scope(tree.body, (), effects)
    return defined, used - set(dir(builtins)), star


def needed_cells(nb, exercise_cells: set[int]) -> set[int]:
    """Indices of the code cells that the exercise cells need: the exercise cells, the
    first code cell (setup), cells with a star import, and every earlier cell that defines
    a name a needed cell uses (a backward slice). A cell that is not valid Python is kept
    when it is an exercise cell (it will fail and be flagged) and dropped otherwise."""
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    keep = set(exercise_cells) | set(code[:1])
    needed: set[str] = set()
    effects: dict[str, set[str]] = {}  # which functions change which globals, from every cell
    for index in code:
        cell_names(nb.cells[index].source, effects)
    for index in reversed(code):
        names = cell_names(nb.cells[index].source, effects)
        if names is None:
            continue
        defined, used, star = names
        if index in keep or star or defined & needed:
            keep.add(index)
            needed |= used
    return keep


def _find_exercise_cells(nb, specs: list[ExerciseSpec]) -> dict[str, int]:
    """test name -> index of the submission's cell for it: the cell that keeps the homework's
    metadata, else a code cell that calls check() with the exercise's id."""
    found = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        ids = set(cell.metadata.get("cnnlearn", {}).get("exercise", []))
        ids |= {id for id, _ in check_calls(cell.source)}
        for spec in specs:
            if spec.id in ids and spec.test not in found:
                found[spec.test] = index
    return found


def _grade_one(homework: Path, submission: Path, out: Path, cell_timeout: int) -> None:
    """Grade one submission (in this process: `grade` starts one process per submission)."""
    from nbconvert import preprocessors
    from otter.execute import grade_notebook

    manifest = json.loads((homework / "manifest.json").read_text())
    specs = [ExerciseSpec(**e) for e in manifest["exercises"]]
    result = {"scores": {s.test: 0 for s in specs}, "possible": {s.test: s.points for s in specs}, "flags": []}
    try:
        nb = nbformat.read(submission, as_version=4)
    except Exception as e:  # not JSON, not a notebook
        result["flags"].append(f"not a readable notebook ({type(e).__name__})")
        out.write_text(json.dumps(result))
        return
    cells = _find_exercise_cells(nb, specs)
    missing = [s for s in specs if s.test not in cells]
    result["flags"] += [f"exercise {s.number} ({s.id}): its cell is missing" for s in missing]
    for spec in specs:
        if spec.test in cells:
            meta = nb.cells[cells[spec.test]].metadata
            meta["otter"] = {"tests": sorted(set(meta.get("otter", {}).get("tests", [])) | {spec.test})}
    keep = needed_cells(nb, set(cells.values()))
    positions = {}
    for index, cell in enumerate(nb.cells):
        cell.metadata["cnnlearn_position"] = index  # to name cells in flags after otter inserts its own
        if cell.cell_type == "code" and index not in keep:
            cell.metadata["tags"] = sorted(set(cell.metadata.get("tags", [])) | {IGNORE_TAG})
        positions[index] = cell

    class Execute(preprocessors.ExecutePreprocessor):
        # otter's grade_notebook builds its own config and sets no cell timeout; an
        # interrupted cell fails like a raising one, and grading goes on (allow_errors).
        def __init__(self, **kw):
            super().__init__(**kw)
            self.timeout, self.interrupt_on_timeout = cell_timeout, True

    preprocessors.ExecutePreprocessor = Execute
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(homework / "tests", work / "tests")
        nbformat.write(nb, work / "submission.ipynb")
        os.chdir(work)  # the kernel starts here: what the submission writes stays in the temporary folder
        try:
            results = grade_notebook(
                str(work / "submission.ipynb"),
                tests_glob=[str(work / "tests" / f"{s.test}.py") for s in specs if s not in missing],
                cwd=str(work), test_dir=str(work / "tests"), ignore_errors=True)
        except Exception as e:
            result["flags"].append(f"grading failed: {type(e).__name__}: {str(e)[:200]}")
            out.write_text(json.dumps(result))
            return
    result["feedback"] = {}
    for name, test_file in results.results.items():
        if name in result["scores"] and name not in {s.test for s in missing}:
            result["scores"][name] = test_file.score
            failed = [r.message for r in test_file.test_case_results if not r.passed]
            if failed:  # the checker's own message, last line of otter's report
                result["feedback"][name] = failed[0].strip().splitlines()[-1][:200]
    for cell in results.notebook.cells:
        where = cell.metadata.get("cnnlearn_position")
        for output in cell.get("outputs", []) if where is not None else []:
            if output.get("output_type") != "error":
                continue
            if output.get("ename") == "KeyboardInterrupt":
                result["flags"].append(f"cell {where}: timed out after {cell_timeout} s (interrupted)")
            else:
                result["flags"].append(f"cell {where}: {output.get('ename')}: {str(output.get('evalue'))[:120]}")
    out.write_text(json.dumps(result))


def grade(homework: Path, submissions: list[Path], out: Path, cell_timeout: int = 60,
          timeout: int = 600) -> list[dict]:
    """Grade every submission and write the gradebook CSV; returns its rows."""
    manifest = json.loads((homework / "manifest.json").read_text())
    specs = [ExerciseSpec(**e) for e in manifest["exercises"]]
    files = []
    for path in submissions:
        files += sorted(path.rglob("*.ipynb")) if path.is_dir() else [path]
    if not files:
        raise SystemExit(f"no submitted notebooks (.ipynb) in {', '.join(map(str, submissions))}")
    env = dict(os.environ, CNNLEARN_BUDGET="smoke")  # the exercises do not depend on the budget
    rows = []
    for path in files:
        row = {"submission": str(path), **{s.id: 0 for s in specs}}
        with tempfile.TemporaryDirectory() as tmp:
            result_path = Path(tmp) / "result.json"
            try:
                subprocess.run([sys.executable, __file__, "_grade_one", "--homework", str(homework),
                                "--submission", str(path), "--result", str(result_path),
                                "--cell-timeout", str(cell_timeout)],
                               env=env, timeout=timeout, capture_output=True, check=False)
                result = json.loads(result_path.read_text())
            except subprocess.TimeoutExpired:
                result = {"scores": {}, "flags": [f"not graded: still running after {timeout} s"]}
            except (OSError, ValueError) as e:
                result = {"scores": {}, "flags": [f"not graded: the grader failed ({type(e).__name__})"]}
        for spec in specs:
            row[spec.id] = result["scores"].get(spec.test, 0)
        row["total"] = sum(row[s.id] for s in specs)
        row["possible"] = sum(s.points for s in specs)
        row["flags"] = "; ".join(result["flags"])
        row["feedback"] = "; ".join(f"{spec.id}: {result.get('feedback', {})[spec.test]}" for spec in specs
                                    if spec.test in result.get("feedback", {}))
        rows.append(row)
        print(f"{path}: {row['total']:g}/{row['possible']:g}" + (f"  [{row['flags']}]" if row["flags"] else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, ["submission", *[s.id for s in specs], "total", "possible", "flags", "feedback"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out)
    return rows


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build student notebooks, tests and answer keys")
    b.add_argument("--chapter", help="one chapter, e.g. 05 (default: all)")
    b.add_argument("--out", type=Path, default=ROOT / "homework")
    b.add_argument("--points", type=Path, help='JSON file {"ch05.make_divisible": 2, ...} (default 1 each)')
    b.add_argument("--zip", action="store_true", help="also build otter's autograder.zip (for Gradescope)")
    g = sub.add_parser("grade", help="grade submitted notebooks into a gradebook CSV")
    g.add_argument("--homework", type=Path, required=True, help="a built chapter folder, e.g. homework/05")
    g.add_argument("submissions", type=Path, nargs="+", help="notebooks, or folders of them")
    g.add_argument("--out", type=Path, default=Path("gradebook.csv"))
    g.add_argument("--cell-timeout", type=int, default=60, help="seconds before a cell is interrupted")
    g.add_argument("--timeout", type=int, default=600, help="seconds before a submission is given up")
    one = sub.add_parser("_grade_one")
    one.add_argument("--homework", type=Path, required=True)
    one.add_argument("--submission", type=Path, required=True)
    one.add_argument("--result", type=Path, required=True)
    one.add_argument("--cell-timeout", type=int, default=60)
    args = parser.parse_args(argv)
    if args.command == "build":
        points = json.loads(args.points.read_text()) if args.points else None
        for path in chapter_paths(args.chapter):
            print(f"{path.name} -> {build(path, args.out, points, args.zip)}")
    elif args.command == "grade":
        if not (args.homework / "manifest.json").is_file():
            raise SystemExit(f"{args.homework} is not a built homework folder (no manifest.json); "
                             "run `make homework` first")
        grade(args.homework, args.submissions, args.out, args.cell_timeout, args.timeout)
        print(f"gradebook: {args.out}")
    else:
        _grade_one(args.homework, args.submission, args.result, args.cell_timeout)


if __name__ == "__main__":
    main()
