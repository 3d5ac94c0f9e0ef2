"""The package's layers point one way: core -> engines -> tools.

Every import between the package's parts (sub-packages and top-level modules of ``deepacc``),
including imports inside functions, must go from a higher layer to a lower one. Parts of one layer
do not import each other (the two engines, for one, know nothing of each other).
"""
import ast
import os

import pytest

import deepacc

ROOT = os.path.dirname(deepacc.__file__)

#: Lowest first. A part may import the parts of the layers below its own, and nothing else.
LAYERS = [
    ("utilities", {"fileio", "precision", "solver"}),
    ("config and checkpoints", {"config", "checkpoint_io"}),
    ("karyotype facts", {"karyotype"}),
    ("core", {"data", "modeling"}),
    ("metrics", {"evaluation"}),
    ("clinical outputs", {"clinical"}),
    ("engines", {"tv", "d2"}),
    ("engine choice and trunk pretraining", {"engine", "pretrain"}),
    ("command lines", {"tools"}),
]
LAYER_OF = {part: i for i, (_, parts) in enumerate(LAYERS) for part in parts}


def _part(rel_path: str) -> str:
    first = rel_path.split(os.sep)[0]
    return first[:-3] if first.endswith(".py") else first


def _imported_parts(path: str, package: list):
    """``(part, line)`` of every ``deepacc`` part that the file at ``path`` (in ``package``) imports."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                if node.module:
                    targets.append(base + node.module.split("."))
                else:
                    targets.extend(base + [a.name] for a in node.names)
            elif node.module and node.module.split(".")[0] == "deepacc":
                mod = node.module.split(".")[1:]
                targets.extend([mod] if mod else [[a.name] for a in node.names])
        elif isinstance(node, ast.Import):
            targets.extend(a.name.split(".")[1:] for a in node.names if a.name.split(".")[0] == "deepacc")
        for t in targets:
            if t:
                yield t[0], node.lineno


def _edges():
    for d, _, files in os.walk(ROOT):
        package = [] if d == ROOT else os.path.relpath(d, ROOT).split(os.sep)
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(d, f)
                src = _part(os.path.relpath(path, ROOT))
                for dst, line in _imported_parts(path, package):
                    if dst != src and (dst in LAYER_OF or os.path.exists(os.path.join(ROOT, dst + ".py"))
                                       or os.path.isdir(os.path.join(ROOT, dst))):
                        yield src, dst, f"{os.path.relpath(path, ROOT)}:{line}"


def test_every_part_has_a_layer():
    parts = {_part(p) for p in os.listdir(ROOT) if not p.startswith(("_", "."))
             and (p.endswith(".py") or os.path.isfile(os.path.join(ROOT, p, "__init__.py")))}
    assert parts - set(LAYER_OF) == set(), "parts of deepacc without a layer in LAYERS"


def test_imports_point_down_only():
    wrong = [f"{where}: {src} ({LAYERS[LAYER_OF[src]][0]}) imports {dst} ({LAYERS[LAYER_OF[dst]][0]})"
             for src, dst, where in _edges() if LAYER_OF[dst] >= LAYER_OF[src]]
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


@pytest.mark.parametrize("src,dst", [("tv", "d2"), ("d2", "tv"), ("evaluation", "clinical"), ("karyotype", "data")])
def test_the_check_sees_a_wrong_import(tmp_path, src, dst):
    pkg = tmp_path / src
    pkg.mkdir()
    (pkg / "m.py").write_text(f"def f():\n    from ..{dst} import x\n")
    assert list(_imported_parts(str(pkg / "m.py"), [src])) == [(dst, 2)]
    assert LAYER_OF[dst] >= LAYER_OF[src]
