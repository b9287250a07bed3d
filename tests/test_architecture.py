"""The package's shape, checked from its source: who may import whom.

Every ``import`` in ``daemon/energyhubd`` is read with ``ast`` (function-local ones included,
``if TYPE_CHECKING:`` blocks excluded: they never run), giving the module graph the
architecture in docs/design.md promises.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "daemon" / "energyhubd"
PACKAGE = "energyhubd"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, type_checking: bool = False) -> set[str]:
    """The package modules ``path`` imports at run time (resolved to module names);
    with ``type_checking`` also those imported for the type checker only."""
    name = module_name(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node) and not type_checking:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] == PACKAGE:
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def graph(type_checking: bool = False) -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        # "from energyhubd.policy import nft" names a module; "... import compile_ruleset"
        # names an attribute: keep only what is a module of the package.
        found = imports_of(path, type_checking)
        edges[name] = {t for t in found if t in modules and t != name}
    return edges


@pytest.mark.parametrize("type_checking", [False, True])
def test_no_import_circles(type_checking: bool) -> None:
    """Not at run time, and not for the type checker either."""
    edges = graph(type_checking)
    # A package's __init__ importing its own modules is not a circle of behaviour.
    for name in edges:
        edges[name] = {t for t in edges[name] if not (name.startswith(f"{t}.") and t in edges)}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == [], "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_policy_is_pure() -> None:
    """policy/ builds on the configuration model only: no adapters, threads or I/O."""
    allowed = ("energyhubd.config", "energyhubd.policy")
    for name, targets in graph().items():
        if name.startswith("energyhubd.policy"):
            bad = sorted(t for t in targets if not t.startswith(allowed))
            assert bad == [], f"{name} imports {bad}"
    for path in (ROOT / "policy").rglob("*.py"):
        tree = ast.parse(path.read_text())
        stdlib = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and not node.level
        }
        forbidden = stdlib & {"threading", "subprocess", "socket", "os", "nftables", "pyroute2"}
        assert forbidden == set(), f"{path.name} imports {sorted(forbidden)}"


def test_exactly_one_module_drives_the_nftables_binding() -> None:
    """Only kernel/table.py imports libnftables' binding, so only it can change the table."""
    users = []
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n.split(".")[0] == "nftables" for n in names):
                users.append(module_name(path))
    assert users == ["energyhubd.kernel.table"], users


def test_control_and_portal_reach_the_daemon_through_protocols() -> None:
    """The method table and the portal runner never import the composition root, not even
    for the type checker: they name the Protocols they need (``Controlled``, ``PortalHost``),
    and their adapters (``DaemonControl``, ``DaemonHost``) and the event handlers get only
    the parts they use."""
    edges = graph(type_checking=True)
    for name, targets in edges.items():
        if name != "energyhubd.cli":
            assert "energyhubd.service" not in targets, f"{name} imports the daemon"


def _class(path: Path, name: str) -> ast.ClassDef:
    tree = ast.parse(path.read_text())
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)


def _members(node: ast.ClassDef) -> set[str]:
    return {n.name for n in node.body if isinstance(n, ast.FunctionDef)}


def test_the_composition_root_implements_no_protocol() -> None:
    """The Protocols are implemented beside them (``control.status.DaemonControl``,
    ``portal.host.DaemonHost``); the root only builds and wires them."""
    wanted = _members(_class(ROOT / "control" / "status.py", "Controlled")) | _members(
        _class(ROOT / "portal" / "runner.py", "PortalHost")
    )
    assert {"validate", "apply", "running_config", "call_on_loop"} <= wanted
    root = _members(_class(ROOT / "service.py", "Daemon"))
    assert sorted(root & wanted) == []
    # That the adapters satisfy the Protocols mypy checks where the root hands them over.
