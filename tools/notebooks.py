"""Execute chapters and store their outputs (``make outputs``), and check the stamps.

    python tools/notebooks.py run [--budget cpu] [--chapter 01]
    python tools/notebooks.py check

``run`` writes the repository URL from ``_config.yml`` into each chapter's first cell,
executes the notebook with nbclient under ``CNNLEARN_BUDGET``, and stamps its metadata
under the key ``cnnlearn``: budget, device, torch version, wall seconds, and
``code_sha256``, the sha256 hex of the code cells' sources in order, joined with "\\n".
``check`` reports chapters whose code changed since their outputs were stored
(``tests/test_notebooks.py`` runs the same check).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
INSTALL_RE = re.compile(r'%pip install -q "cnnlearn @ git\+(?P<url>[^"]+)"')


def repository_url() -> str:
    """The repository URL, written once in ``_config.yml``."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return config["repository"]["url"].rstrip("/")


def chapter_id(path: Path) -> str:
    """A chapter notebook's id, the part of its name before the first underscore: "03" for
    ``03_beyond_resnet.ipynb``, "03b" for ``03b_attention_in_block.ipynb`` (a chapter's
    second notebook, a section under it in ``_toc.yml``)."""
    return path.name.split("_", 1)[0]


def chapter_paths(chapter: str | None = None) -> list[Path]:
    paths = sorted(CHAPTERS.glob("[0-9][0-9]*_*.ipynb"))
    if chapter:
        paths = [p for p in paths if chapter_id(p) == chapter.zfill(2)]
        if not paths:
            sys.exit(f"no chapter notebook starts with {chapter!r} in {CHAPTERS}")
    return paths


def code_sha256(nb) -> str:
    """sha256 hex of the code cells' sources, in order, joined with a newline."""
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    return hashlib.sha256("\n".join(sources).encode()).hexdigest()


def install_url(nb) -> str | None:
    """The URL the first code cell installs cnnlearn from, or None."""
    first = next((c for c in nb.cells if c.cell_type == "code"), None)
    m = INSTALL_RE.search(first.source) if first is not None else None
    return m.group("url") if m else None


def sync_install_url(nb, url: str) -> None:
    first = next(c for c in nb.cells if c.cell_type == "code")
    if not INSTALL_RE.search(first.source):
        raise SystemExit("the first code cell must contain the Colab install line "
                         '%pip install -q "cnnlearn @ git+<url>"')
    first.source = INSTALL_RE.sub(f'%pip install -q "cnnlearn @ git+{url}"', first.source)


def _write_atomic(nb, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; a notebook is an ordinary file
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        nbformat.write(nb, f)
    os.replace(tmp, path)


def run(budget: str, chapter: str | None, timeout: int) -> None:
    import torch
    from nbclient import NotebookClient

    sys.path.insert(0, str(ROOT))
    from cnnlearn.budget import get_device

    os.environ["CNNLEARN_BUDGET"] = budget
    url = repository_url()
    for path in chapter_paths(chapter):
        nb = nbformat.read(path, as_version=4)
        sync_install_url(nb, url)
        print(f"executing {path.name} at budget {budget} ...", flush=True)
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(CHAPTERS)}}).execute()
        wall = time.perf_counter() - t0
        nb.metadata["cnnlearn"] = {
            "budget": budget,
            "device": str(get_device()),
            "torch": torch.__version__,
            "wall_seconds": round(wall, 1),
            # The machine's 1-minute load average before and after the run: on a shared
            # machine a wall time is only meaningful next to how busy the machine was.
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "cpu_count": os.cpu_count(),
            "code_sha256": code_sha256(nb),
        }
        _write_atomic(nb, path)
        print(f"  done in {wall:.0f} s", flush=True)


def stale() -> list[str]:
    """Problems with the stored outputs, one line each (empty when all is well)."""
    problems = []
    url = repository_url()
    for path in chapter_paths():
        nb = nbformat.read(path, as_version=4)
        stamp = nb.metadata.get("cnnlearn")
        if not stamp:
            problems.append(f"{path.name}: no 'cnnlearn' stamp: run make outputs CHAPTER={chapter_id(path)}")
            continue
        if stamp.get("code_sha256") != code_sha256(nb):
            problems.append(f"{path.name}: code changed since its outputs were stored: "
                            f"run make outputs CHAPTER={chapter_id(path)}")
        if stamp.get("budget") not in ("cpu", "gpu"):
            problems.append(f"{path.name}: outputs stored at budget {stamp.get('budget')!r}, not cpu or gpu")
        if install_url(nb) != url:
            problems.append(f"{path.name}: first cell installs from {install_url(nb)!r}, _config.yml says {url!r}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute chapters and store their outputs")
    r.add_argument("--budget", default="cpu", choices=["smoke", "cpu", "gpu"])
    r.add_argument("--chapter", default=None, help="two-digit chapter number, e.g. 01")
    r.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    sub.add_parser("check", help="report chapters whose stored outputs are stale")
    args = parser.parse_args()
    if args.cmd == "run":
        run(args.budget, args.chapter, args.timeout)
    else:
        problems = stale()
        print("\n".join(problems) or "all chapters' outputs are current")
        sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
