#!/usr/bin/env bash
# The GPU jobs' dry runs (scripts/gpu_jobs.sh with DRY=1) under the lent GPU machine's versions
# instead of this project's: Python 3.12, torch 2.11.0, torchvision 0.26.0, torchaudio 2.11.0,
# Lightning 2.6.6, and neither gradio nor soundfile, which that image does not have. Code that
# leans on something newer than torch 2.11, or imports the app's packages, fails here on the CPU
# instead of on the GPU's clock. The venv is made once (torch 2.11 from PyPI: 4.9 GB with the CUDA
# libraries it pulls in, which the CPU never loads; ~3 min to fetch here).
#
#   DATA=DATA bash scripts/gpu_image_check.sh                  # every job (~40 min on one core; genablate ~20)
#   DATA=DATA bash scripts/gpu_image_check.sh short vision     # some
#
# Each job's output lands in $OUT/<job>.out (default /tmp/gpu-image-check); the last lines say
# which jobs passed.
set -uo pipefail
cd "$(dirname "$0")/.."

venv=${VENV:-.venv-gpu-image}
[[ $venv == /* ]] || venv=$PWD/$venv
OUT=${OUT:-/tmp/gpu-image-check}
DATA=${DATA:-data}
if [[ ! -x $venv/bin/python ]]; then
    "${PY312:-python3.12}" -m venv "$venv"
    "$venv/bin/pip" install -q torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0 lightning==2.6.6 \
        timm tokenizers sacrebleu pyyaml safetensors || exit 1
fi
"$venv/bin/python" -c "import sys, torch, lightning; print('python', sys.version.split()[0], 'torch', torch.__version__, 'lightning', lightning.__version__)"

mkdir -p "$OUT"
jobs=("$@")
[[ ${#jobs[@]} -gt 0 ]] || jobs=(stepcheck gencheck vision short translation mlm genablate)
failed=0
for job in "${jobs[@]}"; do
    start=$(date +%s)
    PATH="$venv/bin:$PATH" PYTHONPATH=. HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} DRY=1 DATA="$DATA" \
        OUT="$OUT/$job" bash scripts/gpu_jobs.sh "$job" > "$OUT/$job.out" 2>&1
    rc=$?
    echo "$job: $([[ $rc == 0 ]] && echo passed || echo "FAILED (rc $rc, see $OUT/$job.out)") in $(($(date +%s) - start)) s"
    [[ $rc == 0 ]] || failed=1
done
exit $failed
