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
