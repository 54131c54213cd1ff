"""Reading a chapter's exercises: its numbered exercises, their ``check`` calls and
solution dropdowns, and where a chapter gives an exercise's answer away.

Shared by ``tests/test_exercises.py`` (the rules every chapter keeps) and
``tools/homework.py`` (student notebooks without solutions, and their grading). The rules
are described in the docstring of ``tests/test_exercises.py``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from cnnlearn.check import list_exercises, reference

_EXERCISE_MARK = re.compile(r"^\*\*(\d+[a-z]?\.\d+)\*\*", re.M)  # 5.3, or 3b.1 in a chapter\'s second notebook
_CHECK_CALL = re.compile(r"""\bcheck\(\s*["']([^"']+)["']""")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$", re.M)
# A MyST directive fence: ```{admonition} Title or :::{admonition} Title, three or more.
_FENCE_OPEN = re.compile(r"^(`{3,}|:{3,})\{(\w[\w-]*)\}[ \t]*(.*)$")


# --------------------------------------------------------------------------- parsing


@dataclass
class ChapterExercise:
    """One numbered exercise and what lies between its number and the next one."""

    number: str                 # "5.3"
    prompt: str                 # its paragraph: after its number, to the end of that cell
    check_ids: list[str] = field(default_factory=list)
    # (cell index, start, end) of each of its solution dropdowns in that cell's source
    solutions: list[tuple[int, int, int]] = field(default_factory=list)


def solution_dropdowns(markdown: str) -> list[tuple[int, int]]:
    """(start, end) of each admonition titled "...Solution..." with ``:class: dropdown``.

    The span covers the whole directive, fences included, as offsets into ``markdown``.
    """
    found, lines = [], markdown.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i].rstrip("\n"))
        if not m:
            i += 1
            continue
        fence, name, title = m.groups()
        closing = re.compile("^" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}\s*$")
        j = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j].rstrip("\n"))), len(lines))
        options = []
        for line in lines[i + 1:j]:  # a directive's options come first, one ":key: value" a line
            if not line.startswith(":"):
                break
            options.append(line.strip())
        is_dropdown = name == "dropdown" or any(re.match(r":class:.*\bdropdown\b", o) for o in options)
        if name in ("admonition", "dropdown") and "solution" in title.lower() and is_dropdown:
            found.append((starts[i], starts[min(j + 1, len(lines))]))
        i = j + 1
    return found


def _sections(text: str, in_section: bool) -> tuple[list[tuple[int, str]], bool]:
    """The (offset, text) pieces of a markdown cell inside the Exercises section, and
    whether the section is still open at the end of the cell (level-1 and -2 headings
    open or close it)."""
    pieces, pos = [], 0
    for m in _HEADING.finditer(text):
        if len(m.group(1)) > 2:
            continue
        if in_section:
            pieces.append((pos, text[pos:m.start()]))
        in_section = m.group(2).strip().lower().startswith("exercises")
        pos = m.end()
    if in_section:
        pieces.append((pos, text[pos:]))
    return pieces, in_section


def chapter_exercises(nb) -> tuple[list[ChapterExercise], list[str]]:
    """The numbered exercises of a chapter, and the problems found while reading them."""
    exercises: list[ChapterExercise] = []
    problems: list[str] = []
    in_section = False
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            pieces, in_section = _sections(cell.source, in_section)
            for offset, text in pieces:
                marks = list(_EXERCISE_MARK.finditer(text))
                # Text before the first number belongs to the exercise before it (its solution
                # usually opens the next markdown cell); each number starts an exercise.
                bounds = [(None, 0)] + [(m.group(1), m.start()) for m in marks] + [(None, len(text))]
                for (number, start), (_, end) in zip(bounds, bounds[1:]):
                    if number is not None:  # its prompt without the number, which is no setting
                        prompt = _EXERCISE_MARK.sub("", text[start:end], count=1)
                        exercises.append(ChapterExercise(number, prompt))
                    if exercises:
                        exercises[-1].solutions += [(index, offset + start + s, offset + start + e)
                                                    for s, e in solution_dropdowns(text[start:end])]
        elif cell.cell_type == "code":
            ids = _CHECK_CALL.findall(cell.source)
            if not ids:
                continue
            if not (in_section and exercises):
                problems.append(f"cell {index} calls check({ids[0]!r}) outside a numbered exercise of the "
                                f"Exercises section (start its paragraph with **N.M**)")
                continue
            exercises[-1].check_ids.extend(ids)
    return exercises, problems


# --------------------------------------------------------------------------- answers as text


# Thousands separators a chapter may print or typeset: 73,856, 73{,}856 (LaTeX), 73_856,
# 73\,856 and thin or no-break spaces.
_SEPARATOR = r"(?:,|\{,\}|_|\\,|\u2009|\u202f|\u00a0)?"
_BEFORE = r"(?<![\w.])(?<!\d,)(?<!\d\{,\})(?<!\d_)"
_AFTER = r"(?![\w]|\.\d|,\d{3}(?!\d)|\{,\}\d)"


def _int_pattern(n: int) -> str:
    digits = str(abs(n))
    head = len(digits) % 3 or 3
    groups = [digits[:head]] + [digits[i:i + 3] for i in range(head, len(digits), 3)]
    return ("-?" if n < 0 else "") + _SEPARATOR.join(groups)


def _float_patterns(x: float) -> list[str]:
    forms = {f"{x:.3f}", f"{x:.4f}"}
    return [re.escape(f) for f in sorted(forms)]


def answer_patterns(answer) -> list[re.Pattern]:
    """Regexes that find ``answer`` written out anywhere; empty if it is not distinctive."""
    if isinstance(answer, bool) or answer is None:
        return []
    if isinstance(answer, int):
        return [re.compile(_BEFORE + _int_pattern(answer) + _AFTER)] if abs(answer) >= 100 else []
    if isinstance(answer, float):
        if answer.is_integer():
            return answer_patterns(int(answer))
        return [re.compile(_BEFORE + p + _AFTER) for p in _float_patterns(answer)]
    if isinstance(answer, str):
        return [re.compile(r"(?<!\w)" + re.escape(answer) + r"(?!\w)", re.I)] if len(answer) >= 3 else []
    if isinstance(answer, (tuple, list)) and answer and all(isinstance(a, (int, float)) for a in answer):
        def element(a):
            return _int_pattern(a) if isinstance(a, int) or float(a).is_integer() else _float_patterns(a)[0]
        inner = r"\s*[,;]\s*".join(element(a) for a in answer)
        # Not a run inside a longer sequence: (2, 3, 4, 6, 3, 1) does not hold (3, 4, 6, 3).
        outside = (r"(?<!\d, )(?<!\d; )", r"(?!\s*[,;]\s*\d)")
        return [re.compile(_BEFORE + outside[0] + r"[(\[]?\s*" + inner + r"\s*[)\]]?" + outside[1] + _AFTER)]
    return []


_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w]|\.\d)")


def _numbers(text: str) -> set[float]:
    return {float(t) for t in _NUMBER.findall(text)}


def setting_row_leaks(answer, prompt: str, outputs: list[tuple[str, str]]) -> list[str]:
    """Printed table rows holding a short integer ``answer`` beside the exercise's setting."""
    if isinstance(answer, bool) or not isinstance(answer, int) or abs(answer) >= 100:
        return []
    setting = _numbers(prompt) - {float(answer)}
    if len(setting) < 2:
        return []  # too little context to tell a leak from any small number
    needed = min(3, len(setting))
    leaks = []
    for where, text in outputs:
        for line in text.splitlines():
            numbers = _numbers(line)
            if float(answer) in numbers and len(setting & numbers) >= needed:
                leaks.append(f"{where}: {line.strip()[:100]!r}")
    return leaks


def stored_outputs(nb) -> list[tuple[str, str]]:
    """(where, text) of every stored text output: streams, text/plain, HTML, markdown, LaTeX."""
    texts = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if "text" in out:
                texts.append((f"the output of cell {index}", out["text"]))
            for mime, data in out.get("data", {}).items():
                if mime.startswith("text/"):
                    texts.append((f"the {mime} output of cell {index}", data))
    return texts


def _excerpt(text: str, m: re.Match) -> str:
    line_start = text.rfind("\n", 0, m.start()) + 1
    line_end = text.find("\n", m.end())
    return text[line_start:line_end if line_end >= 0 else len(text)].strip()[:100]


def _prose(nb, hidden: list[tuple[int, int, int]]) -> list[tuple[str, str]]:
    """(where, text) of every markdown cell, with the ``hidden`` spans blanked out."""
    prose = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        text = cell.source
        for i, s, e in hidden:  # blanks keep the offsets of the spans after it valid
            if i == index:
                text = text[:s] + " " * (e - s) + text[e:]
        prose.append((f"the markdown of cell {index}", text))
    return prose


def leaks(answer, exercise: ChapterExercise, nb, all_solutions: list[tuple[int, int, int]]) -> list[str]:
    """Where the chapter shows ``answer``, or a distinctive part of a tuple answer, outside
    the exercise's own solution (a part: outside every solution, since another exercise's
    solution may need the same number for its own reasons)."""
    outputs = stored_outputs(nb)
    searches = [(answer_patterns(answer), outputs + _prose(nb, exercise.solutions))]
    if isinstance(answer, (tuple, list)) and len(answer) > 1:
        parts = [p for a in answer for p in answer_patterns(a)]
        searches.append((parts, outputs + _prose(nb, all_solutions)))
    found = []
    for patterns, texts in searches:
        for pattern in patterns:
            for where, text in texts:
                found += [f"{where}: {_excerpt(text, m)!r}" for m in pattern.finditer(text)]
    found += setting_row_leaks(answer, exercise.prompt, outputs)
    return sorted(set(found))


def chapter_problems(nb, chapter: str) -> list[str]:
    """Everything wrong with a chapter's exercises, one line each; empty when all is well."""
    exercises, problems = chapter_exercises(nb)
    if not exercises:
        return problems + ["no numbered exercises (**N.M** paragraphs) under an '## Exercises' heading"]
    registered = set(list_exercises())
    all_solutions = [span for ex in exercises for span in ex.solutions]
    for ex in exercises:
        name = f"exercise {ex.number}" + (f" ({', '.join(ex.check_ids)})" if ex.check_ids else "")
        for id in ex.check_ids:
            if id not in registered:
                problems.append(f"{name}: check({id!r}) has no checker registered in cnnlearn/check.py")
            elif not id.startswith(f"ch{chapter}."):
                problems.append(f"{name}: check({id!r}) belongs to another chapter (ids here start ch{chapter}.)")
        if not ex.solutions:
            problems.append(f"{name}: no solution (a ```{{admonition}} Solution with :class: dropdown)")
        for id in ex.check_ids:
            if id in registered:
                answer = reference(id)
                problems += [f"{name}: its answer {answer!r} appears in {where}"
                             for where in leaks(answer, ex, nb, all_solutions)]
    return problems
