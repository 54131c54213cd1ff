"""Display math that the build would mangle: tools/check_math.py on the book's sources,
and the checker itself on broken and good snippets (markdown and built HTML)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import check_math  # noqa: E402


def test_every_display_math_block_of_the_book_stands_alone():
    problems = check_math.source_problems(ROOT)
    assert not problems, ("display math inside a paragraph renders as inline math and garbage; "
                          "put blank lines around each $$ block:\n" + "\n".join(problems))


# --------------------------------------------------------------------------- the source check


def _problem_lines(text: str) -> list[int]:
    return [line for line, _ in check_math.scan_markdown(text)[1]]


GOOD = """The shortcut adds the input:

$$y = F(x) + x.$$

A block over several lines, labelled:

$$
\\frac{a}{b}
  = c
$$ (eq-ratio)

- a list item

  $$a = b$$

Code is not math: `$$` and

```python
print("$$not math$$")
```
"""


def test_scan_markdown_passes_good_display_math():
    blocks, problems = check_math.scan_markdown(GOOD)
    assert problems == []
    assert [(b.line, b.latex.split()) for b in blocks] == [
        (3, ["y", "=", "F(x)", "+", "x."]), (7, ["\\frac{a}{b}", "=", "c"]), (14, ["a", "=", "b"])]


@pytest.mark.parametrize("text, lines", [
    ("text a\n$$y = F(x) + x.$$\ntext b", [2, 2]),            # chapter 2's case: prose before and after
    ("text a\n\n$$y = F(x) + x.$$\ntext b", [3]),             # prose right after the closing line
    ("text a\n$$y = F(x)\n= x.$$\n\ntext b", [2]),            # prose right before a two-line block
    ("where $$y = x$$ holds", [1, 1]),                         # in the middle of a line
    ("text\n\n$$y = x$$ and more text\n", [3]),                # text after the closing $$
    ("text\n\n$$\ny = x\n", [3]),                              # never closed
    ("```{admonition} Solution\n:class: dropdown\nWeights:\n$$a = b$$\n```", [4]),  # inside a dropdown
], ids=["paragraph", "after", "before", "mid-line", "trailing", "unclosed", "dropdown"])
def test_scan_markdown_flags_display_math_inside_a_paragraph(text, lines):
    assert _problem_lines(text) == lines


def test_scan_markdown_accepts_math_at_the_edges_of_a_cell_or_directive():
    assert _problem_lines("$$a = b$$") == []
    assert _problem_lines("```{admonition} Solution\n:class: dropdown\n$$a = b$$\n```\nnext") == []
    assert _problem_lines(":::{note}\n$$a$$\n:::") == []
    assert _problem_lines("```{math}\nx\n$$ y\n```") == []  # raw LaTeX of a math directive


def test_source_problems_name_the_cell_and_line(tmp_path):
    import nbformat

    (tmp_path / "chapters").mkdir()
    (tmp_path / "book").mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = '$$'\ny = 1"),
        nbformat.v4.new_markdown_cell("Good:\n\n$$a$$\n"),
        nbformat.v4.new_markdown_cell("Bad:\n$$a$$\n"),
    ])
    nbformat.write(nb, tmp_path / "chapters" / "01_x.ipynb")
    (tmp_path / "book" / "page.md").write_text("# Page\n\nfine: $x$\n\nbad\n$$b$$\n")
    problems = check_math.source_problems(tmp_path)
    assert [p.split(": ")[0] for p in problems] == [
        "chapters/01_x.ipynb cell 2, line 2", "book/page.md, line 6"]


# --------------------------------------------------------------------------- the built-HTML check

# What Jupyter Book 1.x emits: inline math as a span with \( \), display math as a div with \[ \].
_SPAN = '<span class="math notranslate nohighlight">{}</span>'
_DIV = '<div class="math notranslate nohighlight">\n{}\n</div>'


def test_math_element_problems_passes_good_math():
    html = ("<p>a stride " + _SPAN.format(r"\(s\)") + " and text</p>"
            + _DIV.format(r"\[H_\text{out} = \left\lfloor \frac{H + 2p}{s} \right\rfloor + 1\]")
            + "<p>" + _SPAN.format(r"\(\text{the number of output channels} = C\)") + "</p>")
    assert check_math.math_element_problems(html) == []


def test_math_element_problems_flags_prose_markdown_and_stray_dollars():
    # Chapter 7 as built: one $$ line in a paragraph swallowed the next paragraph.
    swallowed = _SPAN.format(r"\(" + "\n`groups=1` is an ordinary convolution and grouping goes\nback to AlexNet"
                             + r"\)")
    problems = check_math.math_element_problems(f"<p>text{swallowed}</p>")
    assert any(p.startswith("prose inside math") for p in problems)
    assert any(p.startswith("a backtick inside math") for p in problems)
    stray = "<p>connection):\n$" + _SPAN.format(r"\(y = F(x) + x.\)") + "$\nThe shortcut</p>"
    assert [p.split(" (")[0] for p in check_math.math_element_problems(stray)] == [
        "inline math between stray `$` signs"]
    bold = "<p>" + _SPAN.format(r"\(a **bold** b\)") + "</p>"
    assert any("bold markers" in p for p in check_math.math_element_problems(bold))


def test_display_problems_requires_each_source_block_as_display_math():
    blocks, _ = check_math.scan_markdown("Text:\n\n$$\ny = F(x)\n  + x.\n$$ (eq-res)\n\nmore")
    shown = _DIV.format(r"\[y = F(x) + x.\]" + '<span class="eqno">(1)<a class="headerlink">¶</a></span>')
    assert check_math.display_problems(shown, blocks) == []
    inline = "<p>$" + _SPAN.format(r"\(y = F(x) + x.\)") + "$</p>"
    (problem,) = check_math.display_problems(inline, blocks)
    assert "not rendered as display math" in problem and "y = F(x) + x." in problem


def test_html_problems_over_a_built_folder(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "page.md").write_text("Text:\n\n$$a + b$$\n")
    (tmp_path / "chapters").mkdir()
    html = tmp_path / "_build" / "html"
    (html / "book").mkdir(parents=True)
    with pytest.raises(ValueError, match="html_dir=.*build the book first"):
        check_math.html_problems(tmp_path / "missing", tmp_path)
    assert check_math.html_problems(html, tmp_path) == [
        "book/page.html: not built, but book/page.md has 1 `$$` blocks to check"]
    (html / "book" / "page.html").write_text("<p>Text:</p>" + _DIV.format(r"\[a + b\]"))
    assert check_math.html_problems(html, tmp_path) == []
    (html / "book" / "page.html").write_text("<p>Text: $" + _SPAN.format(r"\(a + b\)") + "$</p>")
    problems = check_math.html_problems(html, tmp_path)
    assert len(problems) == 2 and all(p.startswith("book/page.html: ") for p in problems)
