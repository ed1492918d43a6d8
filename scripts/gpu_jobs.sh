#!/usr/bin/env bash
# The GPU recipes as jobs that fit one call each on a lent GPU machine (at most 10 minutes):
# each trains and scores, and leaves in $OUT one archive per checkpoint folder (<task>.tgz, to
# unpack into checkpoints/; written as soon as that training ends), one with the metrics JSON and
# training logs (<job>-logs.tgz) and the job's log, so that little comes back and nothing is forgotten.
#
#   DATA=data OUT=$OUT bash scripts/gpu_jobs.sh vision       # ~9 min: train (400 s budget), score
#   DATA=data OUT=$OUT bash scripts/gpu_jobs.sh short        # generation + audio + attention bench
#   DATA=data OUT=$OUT bash scripts/gpu_jobs.sh translation  # ~9 min: train, four directions, beam 4
#   DATA=data OUT=$OUT bash scripts/gpu_jobs.sh mlm
#   DATA=data OUT=$OUT bash scripts/gpu_jobs.sh stepcheck    # ~3 min: vision's step, as written and with CUDA graphs
#   DATA=data OUT=$OUT bash scripts/gpu_jobs.sh gencheck     # ~2.5 min: the same for generation, and eager
#   DATA=data OUT=$OUT bash scripts/gpu_jobs.sh genablate    # 6 generation runs: what each choice buys
#
# stepcheck comes first in a session whose last runs were slower per step than planned: 300 steps
# of vision as written, then with CUDA graphs (compile_mode=reduce-overhead), each profiled from
# step 200 (runs/check-*/<task>/profile.txt: wall vs device-busy per step, the costliest ops),
# nothing exported, and the host's own speed (bench/host.py: a Python loop, one kernel launch).
# scripts/compile_choice.py then keeps CUDA graphs only if they finished, kept the loss and made
# the step at least 10% faster, and writes the choice to $CHOICES/vision.sets (runs/gpu-choices,
# ignored by git, so it stays on the warm machine between calls); the vision job reads it. So the
# next call can be the vision job at once, before the machine goes back: nobody has to read the
# check first. gencheck does the same for generation ($CHOICES/generation.sets; read by the
# generation and short jobs), with eager (compile=false) as a third candidate and the time from
# process start to step 700 as the measure, since its target counts the compile.
#
# A session's device time is counted: when less is left than a job needs (a slow start, a long
# check), CALL_S=<the call's limit in seconds> shortens each training's max_time_s so that
# training, scoring and packing end inside the call (RESERVE_S, default 150 s, is kept for all
# but training) instead of the call being killed before the checkpoint is written.
#
# short's three parts also run alone (generation, audio, attention: a few minutes each), to fill
# what a session has left after a longer job.
#
# Before spending GPU time, run the same job here on the CPU: DRY=1 trains 3 steps of the same
# recipe (everything but bf16 and torch.compile) and scores a few examples, so a typo or a missing
# file shows up for free:
#
#   DRY=1 DATA=DATA bash scripts/gpu_jobs.sh vision     # with the venv's python on PATH
#
# After a vision job, on any machine: unpack, then refit the Image tab's "unsure" statistics
# (python -m bench.confidence vision --fit) and rerun bench/vision.py and bench/vision_corruptions.py.
set -euo pipefail

job=${1:?"which job: vision, short (or one of its parts: generation, audio, attention), translation, mlm, stepcheck, gencheck or genablate"}
DATA=${DATA:-data}
OUT=${OUT:-/tmp/gpu-jobs}
DRY=${DRY:-}
work=$(mktemp -d)
CHOICES=${CHOICES:-runs/gpu-choices}  # per task, the --set values a step check chose on this machine
CALL_S=${CALL_S:-}  # seconds this call may run (the run tool's limit_s): training is cut to fit
RESERVE_S=${RESERVE_S:-150}  # what a task needs besides training: start, compile, validations, export, scoring
job_start=$(date +%s)
skipped=()  # tasks whose training did not fit in the call
mkdir -p "$OUT"
exec > >(tee "$OUT/$job.log") 2>&1

dry_sets=(max_steps=3 max_time_s=null val_every=3 precision=32-true compile=false)  # the dry run's --set values
if [[ -n $DRY ]]; then
    CHOICES=$work/choices  # a dry run's choices are about this CPU: never left for a GPU job
    checkpoints=$work/checkpoints
    dry=(--accelerator cpu --set "${dry_sets[@]}")
    limit=(--limit 20)
    profile=1
else
    checkpoints=checkpoints  # the shipped folders: the archive carries them back
    dry=()
    limit=()
    profile=300  # 20 steps from here under torch.profiler: runs/<task>/profile.txt, in the logs archive
fi

train() {  # task, config, extra --set values for the dry run; the checkpoint is packed at once,
    # so that a call cut off later (scoring, the next task) still brings it back
    local task=$1 config=$2
    shift 2
    local device=() sets=() chosen=()
    if [[ -n $DRY ]]; then
        device=(--accelerator cpu)
        sets=("${dry_sets[@]}" "$@")
    fi
    if [[ -s $CHOICES/$task.sets ]]; then  # what a step check found faster on this machine
        mapfile -t chosen < "$CHOICES/$task.sets"
        echo "== $task with ${chosen[*]}, chosen by the step check ($CHOICES/$task.sets)"
        sets+=("${chosen[@]}")
    fi
    if [[ -n $CALL_S ]]; then  # train only for what this call has left, so the checkpoint comes back
        local budget left fits
        budget=$(python -c 'import sys, yaml; print(int(float(yaml.safe_load(open(sys.argv[1])).get("max_time_s") or 0)))' \
            "training/configs/$config")
        left=$((job_start + CALL_S - $(date +%s)))
        fits=$((left - RESERVE_S))
        if ((fits < 60)); then
            echo "== $task: only $left s left in this call, too little to train (RESERVE_S=$RESERVE_S): skipped"
            skipped+=("$task")
            return 0
        fi
        if ((budget == 0 || fits < budget)); then
            echo "== $task: $left s left in this call: training for $fits s, not ${budget} s"
            sets+=("max_time_s=$fits")
        fi
    fi
    if ((${#sets[@]})); then sets=(--set "${sets[@]}"); fi
    # a compile cache of its own: the run's wall time includes a cold compile, as on a fresh machine,
    # whatever a step check on this machine compiled before it (a warm cache saves tens of seconds)
    local cache=$work/compile-cache/$task
    echo "== train $task ($config) $(date -u +%H:%M:%S), compile cache $cache (empty)"
    TORCHINDUCTOR_CACHE_DIR=$cache TRITON_CACHE_DIR=$cache/triton \
        python -m training.train "$task" --config "training/configs/$config" --data-dir "$DATA" \
        --out "$checkpoints/$task" --log-dir "$work/runs" --profile "$profile" "${device[@]}" "${sets[@]}"
    tar czf "$OUT/$task.tgz" -C "$(dirname "$checkpoints/$task")" "$task"
}

score() {  # task: its metrics JSON (the evaluate CLI's last line) into the work folder
    local task=$1
    if [[ " ${skipped[*]} " == *" $task "* ]]; then return 0; fi  # not trained: nothing new to score
    echo "== evaluate $task $(date -u +%H:%M:%S)"
    python -m training.evaluate "$task" --data-dir "$DATA" --checkpoint "$checkpoints/$task" "${limit[@]}" \
        | tee "$work/$task-eval.out"
    tail -n 1 "$work/$task-eval.out" > "$work/${task}_eval.json"
}

step_check() {  # task, config, label, extra --set values: 300 steps profiled from 200, no export
    local task=$1 config=$2 label=$3
    shift 3
    local sets=(max_steps=300 max_time_s=null val_every=100000 "$@") profile_from=200 device=(--accelerator gpu)
    local limit=${CHECK_TIMEOUT:-150}  # seconds per check on the GPU: compile plus 300 steps take ~1 min
    if [[ -n $DRY ]]; then
        sets=("${dry_sets[@]}" "$@")
        profile_from=1
        device=(--accelerator cpu)
        limit=${CHECK_TIMEOUT:-900}  # a 3-step generation on this CPU takes ~2 min
    fi
    echo "== step check $task $label $(date -u +%H:%M:%S)"
    timeout "$limit" python -m training.train "$task" --config "training/configs/$config" \
        --data-dir "$DATA" --no-export \
        --log-dir "$work/runs/check-$label" --profile "$profile_from" "${device[@]}" --set "${sets[@]}" \
        2>&1 | tee "$work/check-$label.out" \
        || echo "== step check $task $label failed or ran out of time: $?"  # a finding, not the end
}

compile_check() {  # task, config, to_steps, extra --set values: as written, then with CUDA graphs;
    # with to_steps (a run timed from process start) also eager, compared by the time to that step;
    # the choice goes to $CHOICES/<task>.sets for the task's next training on this machine
    local task=$1 config=$2 to_steps=$3
    shift 3
    step_check "$task" "$config" "$task" "$@"
    step_check "$task" "$config" "$task-cudagraphs" compile_mode=reduce-overhead "$@"
    local candidates=(--candidate "$work/check-$task-cudagraphs.out" compile_mode=reduce-overhead) criterion=()
    if [[ -n $to_steps ]]; then
        step_check "$task" "$config" "$task-eager" compile=false "$@"
        candidates+=(--candidate "$work/check-$task-eager.out" compile=false)
        criterion=(--to-steps "$to_steps")
    fi
    python -m scripts.compile_choice --baseline "$work/check-$task.out" "${candidates[@]}" "${criterion[@]}" \
        --write "$CHOICES/$task.sets" \
        || echo "== compile choice failed: the next $task run trains as written"  # the logs still get packed
    if [[ -e $CHOICES/$task.sets && $CHOICES != "$work/choices" ]]; then  # into the logs (a dry run writes there)
        mkdir -p "$work/choices" && cp "$CHOICES/$task.sets" "$work/choices/"
    fi
}

show_profiles() {
    for report in "$work"/runs/check-*/*/profile.txt; do
        if [[ -e $report ]]; then echo "-- ${report#"$work"/runs/}"; head -n 3 "$report"; fi
    done
}

attention_bench() {  # the attention table on the GPU; the dry run times two small sizes on the CPU
    echo "== attention bench $(date -u +%H:%M:%S)"
    if [[ -n $DRY ]]; then
        python -m bench.attention --sizes 64 128 --repeats 1 --no-memory --json "$work/attention_dry.json"
    else
        python -m bench.attention --device cuda --dtype bfloat16 --json "$work/attention_gpu.json"  # named after the card when stored
    fi
}

pack() {  # the metrics JSON and training logs (the checkpoints were packed after training)
    echo "== pack $(date -u +%H:%M:%S)"
    local items=()
    if [[ -d $work/runs ]]; then items+=(runs); fi
    if [[ -d $work/choices ]]; then items+=(choices); fi
    for file in "$work"/*.json; do
        if [[ -e $file ]]; then items+=("$(basename "$file")"); fi
    done
    tar czf "$OUT/$job-logs.tgz" -C "$work" "${items[@]}"
    ls -l "$OUT"
}

case $job in
vision)
    train vision vision-gpu.yaml val_size=500  # (dry run: validate on 500 images, not the 10,000)
    score vision
    pack
    ;;
short)
    train generation generation-gpu.yaml
    score generation
    train audio audio-gpu.yaml num_workers=0
    score audio
    attention_bench
    pack
    ;;
generation)
    train generation generation-gpu.yaml
    score generation
    pack
    ;;
audio)
    train audio audio-gpu.yaml num_workers=0
    score audio
    pack
    ;;
attention)
    attention_bench
    pack
    ;;
translation)
    train translation translation-gpu.yaml
    score translation
    pack
    ;;
mlm)
    train mlm mlm-gpu.yaml
    score mlm
    pack
    ;;
stepcheck)
    python -m bench.host --device "$([[ -n $DRY ]] && echo cpu || echo cuda)" | tee "$work/host.json"
    small=$([[ -n $DRY ]] && echo val_size=500 || true)  # (dry run: validate on 500 images)
    compile_check vision vision-gpu.yaml "" $small  # timed by its training budget: the step decides
    show_profiles
    pack
    ;;
gencheck)
    # timed from process start (val loss 1.47 within 40 s): a 20 s compile must pay for itself over
    # the ~700 steps to that loss (run 1 crossed it at step 700), so eager is a candidate too
    compile_check generation generation-gpu.yaml 700
    show_profiles
    pack
    ;;
genablate)  # each run: ~35 s of start and compile + 1000 steps (~5 min in all at 10 ms a step)
    echo "== generation ablations $(date -u +%H:%M:%S)"
    python -m bench.ablations generation --config training/configs/generation-gpu.yaml --data-dir "$DATA" \
        --out "$work/runs/ablations" --json "$work/generation_ablations.json" "${dry[@]}" \
        --variant adamw optimizer=adamw --variant no-qk-norm model.qk_norm=false \
        --variant gelu model.activation=gelu --variant learned-positions model.positional=learned \
        --variant batch-64 batch_size=64
    pack
    ;;
*)
    echo "unknown job $job: vision, short, generation, audio, attention, translation, mlm, stepcheck, gencheck or genablate" >&2
    exit 2
    ;;
esac
echo "== done $(date -u +%H:%M:%S)"
