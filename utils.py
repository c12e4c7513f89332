"""The shared helpers the notebooks call, one import: `import utils`.

The code lives in the `studykit` package, one module per section:
- data        `get_dataset`, the raw-file readers, few-shot and merged variants
- modeling    `load_model_and_tokenizer`, local tiny models and aliases
- training    `RunConfig`, `train_run`, `run_grid`, `launch_grid` (Hugging Face Accelerate)
- results     `load_results`, summaries, statistics, plots
- profiles    the fast / reference / full study settings and environment overrides
- adapters    our Houlsby bottleneck adapters: `add_adapters`, `count_parameters`
- memory      `estimate_memory`, `measure_memory`, the memory explorer widgets
"""
from studykit.data import *        # noqa: F401,F403
from studykit.modeling import *    # noqa: F401,F403
from studykit.training import *    # noqa: F401,F403
from studykit.adapters import *    # noqa: F401,F403
from studykit.results import *     # noqa: F401,F403
from studykit.profiles import *    # noqa: F401,F403
from studykit.memory import *      # noqa: F401,F403
