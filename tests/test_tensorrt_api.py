"""The TensorRT names the builder, the runtime and the test fake use exist in the real API (issue 14).

TensorRT cannot run here, so ``tests/fake_tensorrt.py`` stands in for it, and the fake is only as right as its
author. The real names come from NVIDIA's own files, extracted by ``scripts/tensorrt_names.py`` into
``tests/data``: ``tensorrt_11_names.txt`` from the 11.x Python bindings' pybind11 extension, ``tensorrt_10_names.txt``
from the 10.x type stubs. A name used on TensorRT 11 must be in the 11.x list; a name 11.x removed may only be
used where the code checks the version, and must then exist in 10.x. A name in neither list is a bug.
"""

from __future__ import annotations

import ast
import re
import shutil
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest

from landmark_edge.export.tensorrt import precision_plan
from tests.fake_tensorrt import make_tensorrt

REPO = Path(__file__).resolve().parents[1]
CODE = [REPO / "landmark_edge" / "export" / "tensorrt.py", REPO / "landmark_edge" / "runtime" / "tensorrt.py"]
FAKE = REPO / "tests" / "fake_tensorrt.py"
# Variables that hold the tensorrt module or one of its objects in the builder and the runtime.
TRT_OBJECTS = {"trt", "builder", "network", "config", "parser", "optimization", "engine", "context", "_runtime"}
FAKE_BOOKKEEPING = {"calls", "builder", "runtime"}  # what the fake records for the tests to read
# Removed in 11.x, used only behind a version check: BuilderFlag precision flags (precision_plan, 10.x only).
ONLY_10X = {"FP16", "INT8"}


def _names(version: int) -> set[str]:
    lines = (REPO / "tests" / "data" / f"tensorrt_{version}_names.txt").read_text().splitlines()
    return {line for line in lines if line and not line.startswith("#")}


def _present(name: str, names: set[str]) -> bool:
    """In the list, or the tail of a listed string: the linker stores "Builder" inside "IExprBuilder"."""
    return name in names or any(other.endswith(name) for other in names)


def _code_names() -> set[str]:
    """Attributes read or set on the tensorrt module and its objects, and the flag names looked up by string."""
    used = set()
    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                owner = node.value
                if isinstance(owner, ast.Attribute) and isinstance(owner.value, ast.Name):
                    owner_name = owner.attr if owner.value.id == "self" else owner.value.id
                else:
                    owner_name = owner.id if isinstance(owner, ast.Name) else ""
                if owner_name in TRT_OBJECTS or (isinstance(owner, ast.Attribute) and _root(owner) == "trt"):
                    used.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isupper():
                used.add(node.value)  # getattr(trt.HardwareCompatibilityLevel, "AMPERE_PLUS"), ...
    for precision in ("fp32", "fp16", "bf16", "int8", "fp8"):
        used.update(precision_plan(precision, 10).flags)
    return used - {"__version__", "__init__"}


def _root(node: ast.expr) -> str:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else ""


def _fake_names() -> set[str]:
    """What the fake defines: its module attributes and enum members (10.x and 11.x fakes), and the methods and
    class attributes of every class it builds (engine, context, config, ... are reached only through calls)."""
    defined = set()
    for version in ("10.8.0", "11.0.0"):
        for name, value in vars(make_tensorrt(version)).items():
            defined.add(name)
            if isinstance(value, SimpleNamespace):
                defined.update(vars(value))
    for node in ast.walk(ast.parse(FAKE.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name in ("make_tensorrt", "_runtime_class"):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ClassDef):
                    defined.update(f.name for f in inner.body if isinstance(f, ast.FunctionDef))
                    defined.update(t.id for a in inner.body if isinstance(a, ast.Assign) for t in a.targets
                                   if isinstance(t, ast.Name))  # fmt: skip
    return {name for name in defined if not name.startswith("_")} - FAKE_BOOKKEEPING


def test_extracted_name_lists_hold_the_core_api():
    """The extraction worked: names every TensorRT program uses are in both lists (a failed extraction is empty)."""
    core = {"Builder", "OnnxParser", "Runtime", "create_network", "build_serialized_network", "execute_async_v3"}
    for version in (10, 11):
        names = _names(version)
        assert len(names) > 1000 and all(_present(name, names) for name in core), version


def test_every_tensorrt_name_the_code_and_the_fake_use_exists_in_the_real_api():
    used = _code_names() | _fake_names()
    assert {"set_input_shape", "AMPERE_PLUS", "WORKSPACE", "progress_monitor", "FP16"} <= used  # the walk found them
    names10, names11 = _names(10), _names(11)
    nowhere = sorted(name for name in used if not (_present(name, names10) or _present(name, names11)))
    assert not nowhere, f"not in TensorRT 10.x or 11.x: {nowhere}"
    missing_in_11 = {name for name in used if not _present(name, names11)}
    assert missing_in_11 <= ONLY_10X, f"not in TensorRT 11.x and not version-gated: {sorted(missing_in_11 - ONLY_10X)}"
    assert all(_present(name, names10) for name in ONLY_10X)


def test_names_removed_in_11_are_only_reached_on_10():
    """precision_plan asks for no precision flag on 11.x, and the 11.x fake lacks them, so a use would fail there."""
    for precision in ("fp32", "fp16", "bf16", "int8", "fp8"):
        assert not set(precision_plan(precision, 11).flags) & ONLY_10X
    assert not ONLY_10X & set(vars(make_tensorrt("11.0.0").BuilderFlag))


def _repair_stub(path: Path) -> None:
    """tensorrt-stubs 10.13 is not valid Python in five plugin/layer methods (a parameter named ``in``, a
    non-default parameter after a default one); give those ``(*args, **kwargs)`` so mypy can read the rest."""
    lines = path.read_text().splitlines()
    for _ in range(20):
        try:
            ast.parse("\n".join(lines))
            break
        except SyntaxError as error:
            index = (error.lineno or 1) - 1
            match = re.match(r"(\s*)def (\w+)\(.*\)( -> .*)?:\s*$", lines[index])
            assert match, f"{path}:{error.lineno}: cannot repair {lines[index]!r}"
            indent, name, returns = match.groups()
            lines[index] = f"{indent}def {name}(self, *args: typing.Any, **kwargs: typing.Any){returns or ''}:"
    path.write_text("\n".join(lines) + "\n")


def test_builder_and_runtime_type_check_against_the_10x_stubs(tmp_path):
    """mypy over export/tensorrt.py and runtime/tensorrt.py with NVIDIA's 10.x stubs: every method called on a
    Builder, network, config, parser, runtime, engine or context exists with those argument types."""
    mypy = pytest.importorskip("mypy.api", reason="mypy is not installed (the test extra has it)")
    try:
        files = [f for f in metadata.files("tensorrt-stubs") or [] if f.suffix == ".pyi"]
    except metadata.PackageNotFoundError:
        pytest.skip("tensorrt-stubs is not installed (.ci/run: pip install --no-deps tensorrt-stubs)")
    stubs = tmp_path / "stubs"
    for file in files:  # copied out of site-packages: mypy reads stubs there only from a py.typed package
        target = stubs / file.as_posix()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file.locate(), target)
    _repair_stub(stubs / "tensorrt_bindings" / "tensorrt.pyi")
    config = tmp_path / "mypy.ini"
    config.write_text(
        f"[mypy]\nmypy_path = {stubs}\nfollow_imports = skip\nignore_missing_imports = True\n"
        f"cache_dir = {tmp_path / 'cache'}\n"
        "[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]\nfollow_imports = normal\nignore_errors = True\n"
    )
    report, errors, status = mypy.run(["--config-file", str(config), *map(str, CODE)])
    assert status == 0, report + errors
