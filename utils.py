"""The shared helpers the notebooks call, one import: `import utils`.

The code lives in the `studykit` package, one module per section:
- data        `get_dataset`, the raw-file readers, few-shot and merged variants
- modeling    `load_model_and_tokenizer`, local tiny models and aliases
- config      `RunConfig`: one run's settings, validation and hash
- runs        `RunFolder`: the run-folder protocol (done, failed, atomic writes)
- methods     full fine-tuning, Houlsby adapters, LoRA: injection, trainable policy, parameter formula
- training    `train_run` (Hugging Face Accelerate), the data pipeline and the loop
- grid, sweep `run_grid`, `launch_grid`, `run_sweep`
- results     `load_results`, summaries, paired comparisons, the report's claims
- analysis    runs selected by config, per-class scores, statistics, curve facts, findings sentences
- plots       curves and confusion matrices, one colour per training method; costs: `training_memory`
- profiles    the fast / reference / full study settings and environment overrides
- adapters    our Houlsby bottleneck adapters: `add_adapters`, `count_parameters`
- memory      `estimate_memory`, `measure_memory`, the memory explorer widgets
"""
from studykit.data import *        # noqa: F401,F403
from studykit.modeling import *    # noqa: F401,F403
from studykit.training import *    # noqa: F401,F403
from studykit.adapters import *    # noqa: F401,F403
from studykit.results import *     # noqa: F401,F403
from studykit.analysis import *    # noqa: F401,F403
from studykit.findings import *    # noqa: F401,F403
from studykit.plots import *       # noqa: F401,F403
from studykit.costs import *       # noqa: F401,F403
from studykit.grid import *        # noqa: F401,F403
from studykit.methods import *     # noqa: F401,F403
from studykit.config import *      # noqa: F401,F403
from studykit.profiles import *    # noqa: F401,F403
from studykit.memory import *      # noqa: F401,F403
