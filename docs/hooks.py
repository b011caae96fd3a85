"""MkDocs hooks: the README becomes the site's front page, and the committed reference figures its images.

Documents are written to read on GitHub: README.md at the repository root links ``docs/X.md`` and
``paper_figures/reference/...png``; a page under docs/ links ``../README.md`` and
``../paper_figures/...``. The site is built from docs/ alone, so these hooks

- add ``index.md``, the README's text, as a generated page;
- add every reference figure a document names as a generated file at its repository path
  (``paper_figures/reference/...``), read from the working tree: no binary is copied into docs/;
- rewrite each relative link of a page from its repository path to its path in the site.

Links that resolve to nothing in the site stay as they are, so ``mkdocs build --strict`` names them.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
FIGURE = re.compile(r"paper_figures/reference/[\w./-]+?\.(?:png|svg|jpg)")
LINK = re.compile(r"(\]\()([^)\s#]+)([^)]*\))")


def _documents():
    yield ROOT / "README.md"
    yield from sorted((ROOT / "docs").rglob("*.md"))


def on_files(files, config):
    files.append(File.generated(config, "index.md", content=(ROOT / "README.md").read_text()))
    named = {m.group(0) for doc in _documents() for m in FIGURE.finditer(doc.read_text())}
    for uri in sorted(named):
        if (ROOT / uri).is_file():
            files.append(File.generated(config, uri, abs_src_path=str(ROOT / uri)))
    return files


def _site_uri(repo_path: str) -> str | None:
    """Where a repository path lives in the site, or None when the site does not hold it."""
    if repo_path == "README.md":
        return "index.md"
    if repo_path.startswith("docs/"):
        return repo_path[len("docs/") :]
    if repo_path.startswith("paper_figures/reference/"):
        return repo_path
    return None


def on_page_markdown(markdown, page, config, files):
    uri = page.file.src_uri
    repo_dir = "" if uri == "index.md" else posixpath.dirname("docs/" + uri)

    def relink(m):
        target = m.group(2)
        if "://" in target or target.startswith(("/", "mailto:")):
            return m.group(0)
        site = _site_uri(posixpath.normpath(posixpath.join(repo_dir, target)))
        if site is None:
            return m.group(0)
        return m.group(1) + posixpath.relpath(site, posixpath.dirname(uri) or ".") + m.group(3)

    return LINK.sub(relink, markdown)
