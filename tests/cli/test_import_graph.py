"""emu's import graph, read from the source with ``ast``, has no cycle.

Every ``import`` and ``from ... import`` counts: at module level, inside
functions (lazy imports) and under ``if TYPE_CHECKING:`` (a type-only
cycle is still two modules that cannot be understood apart).  ``from
pkg import name`` is an edge to ``pkg.name`` when that is a module, else
to ``pkg``; a module is not counted as importing its parent packages
(Python initialises them, but a package's ``__init__`` importing its own
submodules is not a cycle of design).
"""
from __future__ import annotations

import ast
from pathlib import Path

import emu

ROOT = Path(emu.__file__).resolve().parent

#: cycles outside the front door, being fixed on other branches; the lead
#: empties this list as they merge (a cycle fixed must leave it: see below)
KNOWN_CYCLES_BEING_FIXED: set[frozenset[str]] = set()


def modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in mods)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for a in node.names:
                    if f"{source}.{a.name}" in mods:
                        graph[name].add(f"{source}.{a.name}")
                    elif source in mods:
                        graph[name].add(source)
    return graph


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components with more than one module (or a
    module importing itself): Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in graph[v]:
                    found.add(frozenset(comp))
    return found


GRAPH = import_graph(modules())


def test_the_graph_sees_lazy_and_type_only_imports():
    # module level, inside a function, and a relative import
    assert "emu.qmp.endpoint" in GRAPH["emu.launcher"]
    assert "emu.qmp.server" in GRAPH["emu.launcher.process"]
    assert "emu.machine" in GRAPH["emu.launcher.build"]          # lazy, in build_machine()
    assert "emu.launcher" in GRAPH["emu.cli"]                    # lazy, in main()
    assert len(GRAPH) > 60


def test_cycle_finder_finds_cycles_through_any_kind_of_import(tmp_path):
    pkg = tmp_path / "emu"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from emu import b\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import X\n")
    (pkg / "c.py").write_text("def f():\n    import emu.a\n")
    (pkg / "d.py").write_text("import emu.d\n")
    (pkg / "e.py").write_text("from emu.a import thing\n")
    found = cycles(import_graph(modules(pkg)))
    assert found == {frozenset({"emu.a", "emu.b", "emu.c"}), frozenset({"emu.d"})}


def test_emu_has_no_import_cycle():
    new = cycles(GRAPH) - KNOWN_CYCLES_BEING_FIXED
    assert not new, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in new)


def test_the_known_cycles_list_holds_only_cycles_that_still_exist():
    fixed = KNOWN_CYCLES_BEING_FIXED - cycles(GRAPH)
    assert not fixed, f"fixed, remove from KNOWN_CYCLES_BEING_FIXED: {sorted(map(sorted, fixed))}"


def _reach(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(GRAPH[m])
    return seen


def _module_level_reach(start: str) -> set[str]:
    """What importing *start* imports at once: module-level imports only,
    not those inside functions."""
    mods = modules()
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = mods[name]
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.Import):
                todo.extend(a.name for a in node.names if a.name in mods)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for a in node.names:
                    todo.append(f"{source}.{a.name}" if f"{source}.{a.name}" in mods else source)
        todo = [t for t in todo if t in mods]
    return seen


def test_the_front_door_layers():
    front = {m for m in GRAPH if m == "emu.cli" or m.startswith("emu.cli.")}
    # the configuration is the floor of the front door: data, no behaviour
    assert GRAPH["emu.config"] == set()
    # the registry is declarative: the parser may read it before the monitor listens
    # (emu.spec, the specs' constants, is the floor: it imports nothing)
    spec = {m for m in GRAPH if m == "emu.spec" or m.startswith("emu.spec.")}
    assert _reach("emu.guest.registry") <= {"emu.guest.registry", "emu.keyval", "emu.errors"} | spec
    assert all(_reach(m) <= spec for m in spec)
    # nothing imports the parser but its entry point
    users = {m for m, deps in GRAPH.items() if deps & front and m not in front}
    assert users == {"emu.__main__"}
    # the monitor knows neither the parser nor the launcher (the log is a floor)
    qmp = {m for m in GRAPH if m.startswith("emu.qmp")}
    assert all(not (_reach(m) - qmp - {"emu", "emu.errors", "emu.trace", "emu.unixsock"})
               for m in qmp)
    # the log and trace events, the fd sets and the listening sockets import nothing
    # of emu: any layer may use them
    assert GRAPH["emu.trace"] == set() and GRAPH["emu.fdset"] == set()
    assert GRAPH["emu.unixsock"] == set()
    # the -device properties are declared data too: the parser, QMP's
    # device-list-properties and the QOM views read them
    assert _reach("emu.devprops") <= {"emu.devprops", "emu.config", "emu.keyval", "emu.errors"}
    assert "emu.devprops" in GRAPH["emu.cli.schemas"] and "emu.devprops" in GRAPH["emu.launcher.qom_views"]
    # a VM without -qtest does not load the qtest modules (~10 ms): the
    # launcher imports them where -qtest is handled
    assert not any(m.startswith("emu.qtest") for m in _module_level_reach("emu.launcher.process"))
    # what greets before anything heavy is imported stays light
    early = _reach("emu.launcher.early")
    assert early <= {"emu", "emu.errors", "emu.launcher.early", "emu.qmp", "emu.qmp.endpoint",
                     "emu.qmp.greeting", "emu.unixsock"}, early
