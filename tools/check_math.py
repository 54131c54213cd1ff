"""Checks that the book's display math survives the build.

MyST reads ``$$ ... $$`` as display math only when it stands as its own block. Written
inside a paragraph (``text\\n$$y = F(x) + x.$$\\ntext``) it is parsed as a run of *inline*
math: the formula renders inline between two stray dollar signs at best, and when two
such lines share a paragraph, the prose between them is typeset as one long formula.
The build gives no warning. Two checks catch it:

* :func:`source_problems` (run by ``tests/test_book_math.py``): in every chapter's
  markdown cells and in ``book/*.md``, every ``$$`` block starts and ends on lines of its
  own, with a blank line (or the start/end of a cell or of a directive) before and after.
* :func:`html_problems` (run by ``make bookcheck`` after ``jupyter-book build``): in the
  built pages, no math element holds prose or markdown or sits between stray ``$`` signs,
  and every ``$$`` block of the sources is rendered as display math
  (``<div class="math">``, where inline math is ``<span class="math">``).

Usage: ``python tools/check_math.py [--html _build/html]`` prints the problems found and
exits with 1 if there are any.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Fenced blocks whose content is not markdown: their ``$$`` are code or raw LaTeX.
_LITERAL_DIRECTIVES = {"code", "code-block", "code-cell", "sourcecode", "literalinclude", "math", "raw"}
_FENCE = re.compile(r"^\s*(?P<marks>`{3,}|~{3,}|:{3,})\s*(?P<info>.*)$")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_LABEL = re.compile(r"^\s*\([\w:.-]+\)\s*$")  # MyST's equation label: $$ ... $$ (eq-name)


@dataclass
class MathBlock:
    """One ``$$ ... $$`` block of a markdown text."""

    line: int  # 1-based line of the opening $$
    latex: str  # what stands between the two $$
    where: str = ""  # the file (and cell) it comes from, for messages


@dataclass
class _Fence:
    marks: str  # the fence's characters, e.g. "```" or ":::"
    markdown: bool  # its content is markdown (an admonition), not code or raw math


def _strip_inline_code(line: str) -> str:
    # `$$` inside inline code is code, not math; keep the length so columns stay meaningful.
    return _INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)


def _closes(fence: re.Match | None, fences: list[_Fence]) -> bool:
    # A closing fence: the same character, at least as long as the opening, nothing after.
    return bool(fence and fences and fence["marks"][0] == fences[-1].marks[0]
                and len(fence["marks"]) >= len(fences[-1].marks) and not fence["info"].strip())


def scan_markdown(text: str) -> tuple[list[MathBlock], list[tuple[int, str]]]:
    """The ``$$`` blocks of one markdown text, and where they break the display-math rule.

    The rule: an opening ``$$`` starts its line (after indentation or a list marker), the
    closing ``$$`` ends its line (or is followed by a MyST label ``(name)``), and the line
    before the opening and the line after the closing are blank, or the text's start or
    end, or the opening/closing line of a directive such as a solution dropdown. Code
    fences and inline code are skipped.

    Args:
        text: markdown, e.g. one notebook cell's source.

    Returns:
        ``(blocks, problems)``: every block found (well-formed or not), and
        ``(line, message)`` for each violation, lines counted from 1.
    """
    lines = text.split("\n")
    blocks: list[MathBlock] = []
    problems: list[tuple[int, str]] = []
    fences: list[_Fence] = []
    boundary = True  # the previous line was blank, the start, or a fence line
    in_options = False  # directive option lines (:class: dropdown) right after an opener
    open_line = 0  # line of the $$ that opened the current block; 0 when not in a block
    latex: list[str] = []
    must_end_block = 0  # a block closed on the previous line: this line must be a boundary

    for number, raw in enumerate(lines, start=1):
        fence = _FENCE.match(raw)
        if fences and not fences[-1].markdown:  # inside code: only its closing fence matters
            if _closes(fence, fences):
                fences.pop()
                boundary, must_end_block = True, 0
            continue
        if fence and not open_line:
            if _closes(fence, fences):
                fences.pop()
            else:
                info = fence["info"].strip()
                directive = re.match(r"^\{([\w:-]+)\}", info)
                markdown = bool(directive) and directive.group(1) not in _LITERAL_DIRECTIVES
                fences.append(_Fence(fence["marks"], markdown))
                in_options = markdown
            boundary, must_end_block = True, 0
            continue
        if in_options and re.match(r"^\s*:[\w-]+:", raw):
            continue  # a directive option: still the directive's header
        in_options = False

        line = _strip_inline_code(raw)
        blank = not line.strip()
        if must_end_block and not blank:
            problems.append((must_end_block, "the line after this `$$` block is text: put a blank line "
                                             "between the closing `$$` and the text"))
        must_end_block = 0

        pos = 0
        while True:
            at = line.find("$$", pos)
            if not open_line:
                if at < 0:
                    break
                before = line[:at]  # an opening $$
                if before.strip() and not _LIST_MARKER.fullmatch(before):
                    problems.append((number, "`$$` in the middle of a line: display math must start its "
                                             "own line, with a blank line before it"))
                elif not boundary:
                    problems.append((number, "`$$` directly after a line of text: put a blank line "
                                             "before the display math"))
                open_line, latex, pos = number, [], at + 2
                continue
            if at < 0:  # the block goes on past this line
                latex.append(line[pos:])
                break
            latex.append(line[pos:at])  # the closing $$
            if line[at + 2:].strip() and not _LABEL.match(line[at + 2:]):
                problems.append((number, "text after the closing `$$`: display math must end its own "
                                         "line, with a blank line after it"))
            blocks.append(MathBlock(open_line, "\n".join(latex)))
            open_line, latex, must_end_block, pos = 0, [], number, at + 2
        boundary = blank
    if open_line:
        problems.append((open_line, "this `$$` block is never closed before the end of the text"))
        blocks.append(MathBlock(open_line, "\n".join(latex)))
    return blocks, sorted(problems)


def markdown_sources(root: Path = ROOT) -> dict[str, list[str]]:
    """The book's markdown: ``{label: [text, ...]}`` for every chapter notebook (one text per
    markdown cell, in order) and every ``book/*.md`` page (one text)."""
    sources: dict[str, list[str]] = {}
    for path in sorted((root / "chapters").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        # Code cells count as empty texts, so that cell indices match the notebook's.
        sources[path.relative_to(root).as_posix()] = [
            ("".join(c["source"]) if isinstance(c["source"], list) else c["source"])
            if c["cell_type"] == "markdown" else "" for c in cells]
    for path in sorted((root / "book").glob("*.md")):
        sources[path.relative_to(root).as_posix()] = [path.read_text(encoding="utf-8")]
    return sources


def _where(label: str, index: int) -> str:
    return f"{label} cell {index}" if label.endswith(".ipynb") else label


def source_problems(root: Path = ROOT) -> list[str]:
    """Check (a): every ``$$`` block of the chapters' markdown cells and of ``book/*.md``
    stands as its own block (see :func:`scan_markdown`).

    Returns:
        One line per violation, ``"<file> cell <i>, line <n>: <message>: <the line>"``
        (cells counted from 0, as nbformat does; lines within the cell from 1).
    """
    out = []
    for label, texts in markdown_sources(root).items():
        for index, text in enumerate(texts):
            _, problems = scan_markdown(text)
            lines = text.split("\n")
            out += [f"{_where(label, index)}, line {n}: {msg}: {lines[n - 1].strip()[:80]!r}"
                    for n, msg in problems]
    return out


# --------------------------------------------------------------------------- built HTML


@dataclass
class MathElement:
    """A math element of a built page: ``<span class="math">`` (inline) or ``<div>`` (display)."""

    display: bool
    latex: str  # the text inside, delimiters \( \) or \[ \] included, entities decoded
    before: str  # the page text just before the element
    after: str  # the page text just after it


class _MathCollector(HTMLParser):
    """Collects Sphinx's math elements; their text, but not that of a nested equation
    number (``<span class="eqno">``)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[MathElement] = []
        self._depth = 0  # open tags inside the current math element, itself included
        self._skip_depth = 0  # the same inside an equation number
        self._text: list[str] = []
        self._recent = ""  # the page text since the last math element, tail only

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        if self._depth:
            self._depth += 1
            if self._skip_depth or "eqno" in classes:
                self._skip_depth += 1
        elif tag in ("span", "div") and "math" in classes:
            self._depth, self._text = 1, []
            self.elements.append(MathElement(tag == "div", "", self._recent[-40:], ""))
            self._recent = ""

    def handle_endtag(self, tag):
        if not self._depth:
            return
        self._depth -= 1
        if self._skip_depth:
            self._skip_depth -= 1
        if not self._depth:
            self.elements[-1].latex = "".join(self._text)

    def handle_data(self, data):
        if self._depth:
            if not self._skip_depth:
                self._text.append(data)
            return
        if self.elements and len(self.elements[-1].after) < 40:
            self.elements[-1].after += data
        self._recent = (self._recent + data)[-200:]


def math_elements(html: str) -> list[MathElement]:
    """Every math element of one built page, in order."""
    parser = _MathCollector()
    parser.feed(html)
    parser.close()
    return parser.elements


# \text{...} and friends hold words legitimately; commands like \frac are not prose.
_TEXT_COMMANDS = re.compile(
    r"\\(?:text\w*|mathrm|mathit|mathsf|mathtt|operatorname\*?|mbox|hbox|label|tag)\s*\{[^{}]*\}")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_PROSE = re.compile(r"\b[A-Za-z]{4,}[,.;:]?(?:\s+[A-Za-z]{4,}\b[,.;:]?){2,}")
_MARKDOWN = {"**": "bold markers `**`", "`": "a backtick", "](": "a markdown link `](`",
             "{glue": "a glue role", "{cite": "a cite role"}


def math_element_problems(html: str) -> list[str]:
    """Check (b), first half, on one page: math elements that swallowed prose or markdown
    (several consecutive words of four or more letters outside ``\\text{}``, ``**``, a
    backtick, ``](``), and inline math between stray ``$`` signs (a ``$$`` that MyST read
    as ``$`` + inline math + ``$``).

    Returns:
        One line per problem, quoting the start of the element.
    """
    problems = []
    for element in math_elements(html):
        latex = element.latex
        quote = " ".join(latex.split())[:90]
        plain = _COMMAND.sub(" ", _TEXT_COMMANDS.sub(" ", latex))
        prose = _PROSE.search(plain)
        if prose:
            problems.append(f"prose inside math ({prose.group(0)[:40]!r}): {quote!r}")
        for marker, name in _MARKDOWN.items():
            if marker in latex:
                problems.append(f"{name} inside math: {quote!r}")
        if not element.display and (element.before.endswith("$") or element.after.startswith("$")):
            problems.append(f"inline math between stray `$` signs (a `$$` block inside a paragraph): {quote!r}")
    return problems


def _squash(latex: str) -> str:
    for delimiter in (r"\[", r"\]", r"\(", r"\)"):
        latex = latex.replace(delimiter, "")
    return "".join(latex.split())


def display_problems(html: str, blocks: list[MathBlock]) -> list[str]:
    """Check (b), second half, on one page: every ``$$`` block of its source is rendered as
    display math, i.e. its LaTeX (whitespace ignored) is the content of a
    ``<div class="math">``."""
    shown = {_squash(e.latex) for e in math_elements(html) if e.display}
    return [f"the `$$` block of {b.where or 'the source'}, line {b.line}, is not rendered as display "
            f"math: {' '.join(b.latex.split())[:80]!r}" for b in blocks if _squash(b.latex) not in shown]


def html_problems(html_dir: Path, root: Path = ROOT) -> list[str]:
    """Check (b) over a built book: :func:`math_element_problems` on every page, and
    :func:`display_problems` on the page built from each chapter and ``book/*.md``.

    Args:
        html_dir: the build's HTML folder, e.g. ``_build/html``.
        root: the repository (where ``chapters/`` and ``book/`` are).

    Returns:
        One line per problem, prefixed with the page.
    """
    if not html_dir.is_dir():
        raise ValueError(f"html_dir={str(html_dir)!r} is not a folder; build the book first "
                         f"(jupyter-book build .) and pass its _build/html")
    out = []
    pages = [p for p in sorted(html_dir.rglob("*.html"))
             if not {"_static", "_sources", "_images"} & set(p.relative_to(html_dir).parts)]
    for page in pages:
        out += [f"{page.relative_to(html_dir).as_posix()}: {p}"
                for p in math_element_problems(page.read_text(encoding="utf-8"))]
    for label, texts in markdown_sources(root).items():
        blocks = [dataclasses.replace(b, where=_where(label, index))
                  for index, text in enumerate(texts) for b in scan_markdown(text)[0]]
        page = html_dir / Path(label).with_suffix(".html")
        if not blocks:
            continue
        if not page.exists():
            out.append(f"{page.relative_to(html_dir).as_posix()}: not built, but {label} has "
                       f"{len(blocks)} `$$` blocks to check")
            continue
        out += [f"{page.relative_to(html_dir).as_posix()}: {p}"
                for p in display_problems(page.read_text(encoding="utf-8"), blocks)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html", type=Path, help="also check the built book in this folder, e.g. _build/html")
    args = parser.parse_args(argv)
    problems = source_problems()
    if args.html:
        problems += html_problems(args.html)
    for p in problems:
        print(p)
    what = "sources and built pages" if args.html else "sources"
    print(f"check_math: {len(problems)} display-math problem(s) in the {what}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
