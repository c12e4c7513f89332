"""The public API: `utils` lists its names, each once, and every `utils.<name>` the notebooks, tests, benches and
README use is one of them (a star-import facade would hide clashes: two modules' PRECISIONS, say)."""
import re
from pathlib import Path

import utils

ROOT = Path(__file__).resolve().parent.parent


def test_every_name_used_through_utils_is_listed():
    sources = [*ROOT.glob("*.ipynb"), *ROOT.glob("tests/*.py"), *ROOT.glob("bench/*.py"), ROOT / "README.md"]
    used = set()
    for path in sources:
        used |= set(re.findall(r"\butils\.([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))
    used -= {"capture", "clip_grad_norm_", "py", "__all__"}  # IPython.utils.capture, torch.nn.utils..., "utils.py"
    assert sorted(used - set(utils.__all__)) == []


def test_utils_holds_only_what_it_lists():
    public = {n for n in vars(utils) if not n.startswith("_")}
    assert public == set(utils.__all__)
    assert len(utils.__all__) == len(set(utils.__all__))


def test_memory_schemes_share_the_run_precisions_spelling():
    # Run precisions (hardware.PRECISIONS: fp32, bf16, fp16) and the estimator's precision schemes are different
    # concepts with different names (SCHEMES); where a scheme is a run precision it is spelled the same way.
    from studykit.hardware import PRECISIONS
    from studykit.memory import SCHEMES
    assert utils.SCHEMES is SCHEMES and not hasattr(utils, "PRECISIONS")
    assert {"fp32", "bf16"} <= set(SCHEMES) <= set(PRECISIONS) | {"autocast", "mixed"}


def _package_imports() -> dict[str, set[str]]:
    """studykit's modules (memory/ as one) -> the studykit modules they import, at the top or in a function."""
    import ast
    graph = {}
    for path in sorted((ROOT / "studykit").rglob("*.py")):
        rel = path.relative_to(ROOT / "studykit").with_suffix("").parts
        name = "memory" if rel[0] == "memory" else rel[0]
        if name == "__init__":
            continue
        deps = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                inside_memory = rel[0] == "memory" and node.level == 1
                target = "memory" if inside_memory else (node.module or "").split(".")[0]
                if not target:  # from . import x / from .. import x
                    target = "memory" if inside_memory else node.names[0].name
                if target != name:
                    deps.add(target)
    return graph


def test_the_package_has_no_import_cycles():
    graph = _package_imports()

    def reachable(start):
        seen, todo = set(), [start]
        while todo:
            for dep in graph.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen
    assert [m for m in graph if m in reachable(m)] == []


def test_the_engine_never_imports_grids_or_reporting():
    graph = _package_imports()
    upper = {"grid", "sweep", "attempt", "results", "analysis", "findings", "plots", "costs"}
    for module in ("training", "pipeline", "evaluation", "methods", "config", "runs", "data",
                   "hardware", "modeling", "locks"):
        assert not graph[module] & upper, module
