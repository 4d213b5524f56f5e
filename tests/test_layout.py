"""The package's floors: maths at the bottom, the CLI at the top, imports only going down, no import circles."""

import ast
from pathlib import Path

import pytest

import edlm

ROOT = Path(edlm.__file__).parent
MODULES = {".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__"): p
           for p in sorted(ROOT.rglob("*.py"))}

# a package may import from edlm only what its floor allows (errors and atomic are for everyone)
ALLOWED = {
    "edlm.accel": set(),
    "edlm.diffusion": {"edlm.accel"},
    "edlm.toy": {"edlm.diffusion"},
    "edlm.samplers": {"edlm.diffusion", "edlm.accel"},
}
EVERYONE = {"edlm.errors", "edlm.atomic"}


def imports_of(path: Path) -> set[str]:
    """Every module an edlm file imports from edlm, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
    return {m for m in found if m == "edlm" or m.startswith("edlm.")}


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_lower_floors_import_nothing_from_higher_ones(package):
    for module, path in MODULES.items():
        if package_of(module) != package:
            continue
        for target in imports_of(path):
            other = package_of(target)
            assert other == package or other in ALLOWED[package] | EVERYONE, (module, target)


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (module -> the edlm modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (circle := visit(t, path + [t])):
                return circle
        state[m] = 2
        return None

    return next((c for m in sorted(graph) if m not in state and (c := visit(m, [m]))), None)


def test_the_circle_finder_finds_circles():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle():
    graph = {m: {t for t in imports_of(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    assert find_circle(graph) is None


@pytest.mark.parametrize("library, allowed", [("lightning", ("edlm.training", "edlm.data.datamodule")),
                                              ("argparse", ("edlm.cli",))])
def test_framework_imports_stay_in_their_place(library, allowed):
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module}
        if library in names:
            assert module.startswith(allowed), module


def test_no_module_over_500_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 500}
    assert not long
