"""ARCHITECTURE.md (and the docs) stay true to the code: every module path they name exists, and every
`module.Symbol` / `Class.attribute` they name is defined there."""
from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / "shared"
DOCS = [REPO / "ARCHITECTURE.md", REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
# A path: segments of word characters; `config.py` is shared/config.py, `deploy/k8s/` a folder of the repository.
PATH = re.compile(r"[\w-][\w.-]*(?:/[\w.-]+)*/?")
SOURCE = (".py", ".yml", ".yaml")
FILE_SUFFIXES = {"md", "json", "txt", "py", "yml", "yaml", "html", "js", "csv", "png", "skops", "sqlite3", "pth",
                 "onnx"}
# A dotted name at the start of a span: `learners.FittedLearner.load(...)`, `ClipEmbedder.config`.
DOTTED = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(\()?")
# models/ is what training writes (not in git): the docs describe its layout, not files of the repository.
NOT_IN_REPO = ("models/", "MODELS/")


def spans(doc: Path) -> list[str]:
    """The inline code spans of a Markdown file, fenced blocks left out."""
    return SPAN.findall(FENCE.sub("", doc.read_text(encoding="utf-8")))


def named_paths(doc: Path) -> set[str]:
    """Source files, and paths that start in the repository or in shared/ (`val/` is a dataset's folder)."""
    return {s for s in spans(doc) if PATH.fullmatch(s) and not s.startswith(NOT_IN_REPO)
            and (s.endswith(SOURCE) or ("/" in s and _top_level(s.split("/")[0])))}


def _top_level(name: str) -> bool:
    return (REPO / name).exists() or (SHARED / name).exists()


def code_references(doc: Path) -> set[str]:
    """`module.function(...)`, `module.Class`, `Class.method`: dotted names that are code, not file names like
    `manifest.json` or JSON fields like `parameters.content_type` (a call or a capital says so, or an underscore
    after a name that is a module of shared/)."""
    refs = set()
    for span in spans(doc):
        match = DOTTED.match(span)
        if not match:
            continue
        first, *rest = match.group(1).removeprefix("shared.").split(".")
        if rest[-1] in FILE_SUFFIXES:  # `README.md`, `manifest.json`
            continue
        if match.group(2) or any(part[0].isupper() for part in (first, *rest)) or (
                _modules_named(first) and any("_" in part for part in rest)):
            refs.add(match.group(1))
    return refs


@functools.cache
def modules() -> dict[str, Path]:
    """Every module of shared/ by dotted name relative to it (`learning.learners`; a package is its __init__)."""
    found = {}
    for path in SHARED.rglob("*.py"):
        parts = path.relative_to(SHARED).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _modules_named(name: str) -> list[Path]:
    """The modules `name` may mean: `learners` is learning/learners.py, `serving.app` serving/app.py."""
    return [path for dotted, path in modules().items() if dotted == name or dotted.endswith("." + name)]


@functools.cache
def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _names(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """What a module or class body defines: functions, classes, assignments, imports."""
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            names.update({t.id: node for t in node.targets if isinstance(t, ast.Name)})
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update({(a.asname or a.name).split(".")[0]: node for a in node.names})
    return names


def _classes(name: str) -> list[ast.ClassDef]:
    return [node for path in modules().values() for node in ast.walk(tree(path))
            if isinstance(node, ast.ClassDef) and node.name == name]


def _has_attribute(cls: ast.ClassDef, attribute: str) -> bool:
    """Defined in the class (`self.x = ...` too) or a base of it in shared/; a library's base may define it."""
    assigned = {target.attr for node in ast.walk(cls) if isinstance(node, (ast.Assign, ast.AnnAssign))
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(target, ast.Attribute) and ast.unparse(target.value) == "self"}
    if attribute in _names(cls.body) or attribute in assigned:
        return True
    bases = [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in cls.bases]
    return any(not _classes(base) or any(_has_attribute(c, attribute) for c in _classes(base)) for base in bases)


def _defines(body: list[ast.stmt], chain: list[str]) -> bool:
    node = _names(body).get(chain[0])
    if node is None:
        return False
    if len(chain) == 1 or isinstance(node, (ast.Import, ast.ImportFrom)):
        return True  # a re-exported name: its own module is checked where it is named
    return isinstance(node, ast.ClassDef) and _has_attribute(node, chain[1])


def resolves(reference: str) -> str | None:
    """None when the code defines what `reference` names, else why not."""
    parts = reference.removeprefix("shared.").split(".")
    if parts[0][0].isupper():  # Class.attribute, the class anywhere in shared/
        classes = _classes(parts[0])
        if not classes:
            return f"no class {parts[0]} in shared/"
        return None if any(_has_attribute(c, parts[1]) for c in classes) else f"{parts[0]} has no {parts[1]}"
    for cut in range(len(parts) - 1, 0, -1):
        name, chain = ".".join(parts[:cut]), parts[cut:]
        candidates = _modules_named(name)
        if candidates:
            if any(_defines(tree(path).body, chain) for path in candidates):
                return None
            return f"{'.'.join(chain)} is not defined in {', '.join(str(p.relative_to(REPO)) for p in candidates)}"
    return f"no module {parts[0]} in shared/"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_named_paths_exist(doc: Path) -> None:
    missing = sorted(p for p in named_paths(doc) if not (REPO / p).exists() and not (SHARED / p).exists())
    assert not missing, f"{doc.name} names paths that exist neither at the repository root nor under shared/: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_named_code_exists(doc: Path) -> None:
    wrong = {ref: why for ref in sorted(code_references(doc)) if (why := resolves(ref))}
    assert not wrong, f"{doc.name} names code that is not there (moved or renamed?): {wrong}"


def test_the_check_sees_a_moved_name() -> None:
    assert resolves("meta_model.MetaEnsemble") is None
    assert resolves("learners.FittedLearner.load") is None
    assert resolves("stacking.MetaEnsemble") == "no module stacking in shared/"
    assert resolves("meta_model.NoSuchThing") is not None
