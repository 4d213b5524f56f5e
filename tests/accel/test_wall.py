"""edlm.accel is the ground floor: it imports torch and the standard library (triton lazily), never the rest of edlm,
and importing it loads neither triton nor inductor."""

import ast
import subprocess
import sys
from pathlib import Path

import edlm.accel

ACCEL = Path(edlm.accel.__file__).parent


def test_accel_imports_nothing_from_the_rest_of_edlm():
    modules = sorted(ACCEL.glob("*.py"))
    assert {p.stem for p in modules} >= {"__init__", "ops", "cublaslt", "compiling", "block_bounds", "policy",
                                         "triton_kernels"}
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level <= 1, (path.name, node.module)  # relative: within edlm.accel only
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            assert not any(n == "edlm" or n.startswith("edlm.") for n in names), (path.name, names)


def test_importing_accel_does_not_import_triton_or_inductor():
    heavy = ("triton", "torch._inductor")
    code = ("import sys, edlm.accel.ops, edlm.accel.cublaslt, edlm.accel.compiling, edlm.accel.block_bounds, "
            f"edlm.accel.policy; print(*[int(m in sys.modules) for m in {heavy!r}])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0"] * len(heavy)
