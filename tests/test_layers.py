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
    ("utilities", {"fileio", "jsonstream", "precision", "solver", "settings"}),
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


def _imports(path: str, package: list, top: str = "deepacc"):
    """``(base, names, line)`` of every import of ``top``'s modules in the file at ``path`` (in
    ``package``), those inside functions too: ``base`` the module path inside ``top`` (a list; relative
    imports resolved), ``names`` what ``from base import ...`` imports (``None`` for ``import``)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == top:
                base = node.module.split(".")[1:]
            else:
                continue
            yield base, [a.name for a in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == top:
                    yield a.name.split(".")[1:], None, node.lineno


def _imported_parts(path: str, package: list):
    """``(part, line)`` of every ``deepacc`` part that the file at ``path`` (in ``package``) imports."""
    for base, names, line in _imports(path, package):
        if base:
            yield base[0], line
        else:
            for n in names or ():
                yield n, line


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


# ------------------------------------------------------------------- settings objects, not a config

#: The parts that take the frozen settings of ``deepacc.settings`` (or plain values) from their
#: callers and never read a config: the entry points (engines, tools, benchmarks) read it once.
CONFIG_FREE = ("modeling", "evaluation", "clinical")


def _config_imports(root: str, parts=CONFIG_FREE):
    """``file:line`` of every import of ``deepacc.config`` (any form, inside functions too) in the
    modules of ``parts`` of the package at ``root``."""
    for part in parts:
        for d, _, files in os.walk(os.path.join(root, part)):
            package = os.path.relpath(d, root).split(os.sep)
            for f in sorted(files):
                if f.endswith(".py"):
                    path = os.path.join(d, f)
                    for dst, line in _imported_parts(path, package):
                        if dst == "config":
                            yield f"{os.path.relpath(path, root)}:{line}"


def test_core_metrics_and_clinical_do_not_import_the_config():
    wrong = list(_config_imports(ROOT))
    assert not wrong, ("modules of " + ", ".join(CONFIG_FREE) + " importing deepacc.config (take the "
                       "deepacc.settings objects from the caller instead):\n" + "\n".join(wrong))


def test_the_config_check_sees_every_form(tmp_path):
    pkg = tmp_path / "evaluation"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("from ..config import CALLS\n")
    (pkg / "sub" / "b.py").write_text("import os\n\n\ndef f():\n    from deepacc import config\n")
    (pkg / "sub" / "c.py").write_text("def g():\n    import deepacc.config.defaults\n")
    (pkg / "sub" / "d.py").write_text("from ... import config\nfrom ...settings import DEFAULT_CALLS\n")
    (pkg / "e.py").write_text("from ..settings import DEFAULT_CALLS\nfrom .. import fileio\n")
    found = sorted(_config_imports(str(tmp_path), ("evaluation",)))
    assert found == sorted([os.path.join("evaluation", "a.py") + ":1", os.path.join("evaluation", "sub", "b.py") + ":5",
                            os.path.join("evaluation", "sub", "c.py") + ":2", os.path.join("evaluation", "sub", "d.py") + ":1"])


# ------------------------------------------------------------------------------ no import cycle


def _import_graph(root: str, top: str = "deepacc"):
    """Module-level import graph of the package at ``root`` (named ``top``): ``{module: {imported
    module: "file:line"}}``, modules as dotted names (``deepacc.data.slide``; a package is its
    ``__init__``). Every import counts, those inside functions too. ``from X import n`` is an edge
    to the module ``X.n`` when there is one, else to ``X``. The parent packages that Python imports
    on the way to a module are not edges (a package's ``__init__`` importing its own modules, which
    import each other, is not a cycle)."""
    mods = {}
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(d, f), root)[:-3].split(os.sep)
                mods[tuple(rel[:-1] if rel[-1] == "__init__" else rel)] = os.path.join(d, f)
    name = lambda m: ".".join((top,) + m)  # noqa: E731
    graph = {name(m): {} for m in mods}
    for m, path in sorted(mods.items()):
        package = list(m) if path.endswith("__init__.py") else list(m[:-1])
        for base, names, line in _imports(path, package, top):
            targets = ([tuple(base)] if names is None else
                       [tuple(base + [n]) if tuple(base + [n]) in mods else tuple(base) for n in names])
            for t in targets:
                if t in mods and t != m:
                    graph[name(m)].setdefault(name(t), f"{os.path.relpath(path, root)}:{line}")
    return graph


def _find_cycle(graph):
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or ``None``."""
    state, stack = {}, []

    def visit(v):
        state[v] = "open"
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == "open":
                return stack[stack.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        state[v] = "done"
        stack.pop()
        return None

    for v in sorted(graph):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def _cycle_text(graph, cycle):
    return " -> ".join(cycle) + "\n" + "\n".join(f"  {a} imports {b} at {graph[a][b]}" for a, b in zip(cycle, cycle[1:]))


def test_no_import_cycle():
    graph = _import_graph(ROOT)
    assert "deepacc.data.slide" in graph and graph["deepacc.data.synthetic"]  # the walk sees the package
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle in deepacc:\n" + _cycle_text(graph, cycle)


def test_the_cycle_check_sees_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .sub import b\n")
    (pkg / "a.py").write_text("import os\n\nfrom . import sub\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("import numpy\n\n\ndef f():\n    from ..sub.c import x\n")
    (pkg / "sub" / "c.py").write_text("x = 1\n")
    graph = _import_graph(str(pkg), "pkg")
    assert graph["pkg"] == {"pkg.sub.b": "__init__.py:1"} and graph["pkg.a"] == {"pkg.sub": "a.py:3"}
    assert graph["pkg.sub.b"] == {"pkg.sub.c": os.path.join("sub", "b.py") + ":5"}
    assert _find_cycle(graph) is None
    (pkg / "sub" / "c.py").write_text("def g():\n    import pkg.sub.b\n")  # inside a function, absolute
    graph = _import_graph(str(pkg), "pkg")
    cycle = _find_cycle(graph)
    assert cycle == ["pkg.sub.b", "pkg.sub.c", "pkg.sub.b"]
    assert "pkg.sub.c imports pkg.sub.b at " + os.path.join("sub", "c.py") + ":2" in _cycle_text(graph, cycle)
