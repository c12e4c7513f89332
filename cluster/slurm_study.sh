#!/bin/bash
# The full study on one Slurm node with GPUs and no network, then the report.
#
#   1. on the login node (it has network), once:   python train.py fetch --profile full
#      it downloads the models into $HF_HOME and the data into ./data, and prints the exports used below
#   2. sbatch cluster/slurm_study.sh                (from the repository root)
#   3. the executed notebooks land in reports/full-<job id>/; the committed ones are left as they are
#
# Resuming: shortly before the time limit Slurm sends USR1; the job requeues itself and stops. Finished runs
# have a summary.json and are skipped when it starts again; the run in progress restarts from its beginning
# (no mid-run checkpoints). A preempted job is requeued by Slurm (--requeue) and resumes the same way.
#SBATCH --job-name=ft-study
#SBATCH --nodes=1
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=32
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --open-mode=append
#SBATCH --output=ft-study-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
VENV=${VENV:-.venv}
if [ -f "$VENV/bin/activate" ]; then source "$VENV/bin/activate"; fi

# Compute nodes have no network: everything comes from what `train.py fetch` put on shared storage.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export HF_HOME=${HF_HOME:-$HOME/.cache/huggingface}
export DATA_DIR=${DATA_DIR:-$PWD/data}
export PROGRESS=text PROFILE=full
NPROC=${NPROC:-$(nvidia-smi -L | wc -l)}
REPORT_DIR=${REPORT_DIR:-reports/full-${SLURM_JOB_ID:-local}}

child=
requeue() {
  echo "$(date -u +%FT%TZ) time limit near: requeueing job ${SLURM_JOB_ID:-?}; finished runs are kept"
  scontrol requeue "${SLURM_JOB_ID}"
  if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null || true; wait "$child" || true; fi
  exit 0
}
trap requeue USR1   # not TERM: scancel sends TERM, and a cancelled job must stay cancelled
# Each step runs in the background and the shell waits, so the trap fires while a grid is training.
run() { "$@" & child=$!; wait "$child"; child=; }

if [ "$NPROC" -gt 1 ]; then
  launch=(accelerate launch --multi_gpu --num_processes "$NPROC")
else
  launch=(python)
fi
echo "$(date -u +%FT%TZ) job ${SLURM_JOB_ID:-local} (restart ${SLURM_RESTART_COUNT:-0}) on $NPROC GPU(s)"
run "${launch[@]}" train.py task2 --profile full --data-dir "$DATA_DIR"
run "${launch[@]}" train.py task3 --profile full --data-dir "$DATA_DIR"

# The report: every run is finished, so the notebooks only read results and draw. Executed into their own
# folder; --ExecutePreprocessor.timeout=-1 because a full-profile notebook may take long on a busy node.
mkdir -p "$REPORT_DIR"
run jupyter nbconvert --to notebook --execute task2_finetune.ipynb task3_adapter.ipynb \
  --output-dir "$REPORT_DIR" --ExecutePreprocessor.timeout=-1
echo "$(date -u +%FT%TZ) done: report in $REPORT_DIR"
