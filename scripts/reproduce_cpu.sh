#!/usr/bin/env bash
# The CPU reproduction (issue 9): strong codecs at four rate points and a Cheng point, Stage I
# and Stage II (and its baselines) at q4 and again at q1, q2 and q6, protocol-2 evaluation of every
# model, the JPEG curve, then the figures.
#
#   scripts/reproduce_cpu.sh            # every step, in order (make reproduce-cpu)
#   scripts/reproduce_cpu.sh STEP ...   # only these steps (see STEPS below)
#
# Resumable and idempotent: a step whose committed output exists is skipped (a model is done
# when models/cpu/NAME has model.pt and no resume.pt, or, for the baselines at q2 / q6 whose
# weights are not committed to keep models/ near 100 MB, when its results file exists and
# RETRAIN is unset; an evaluation when its results file exists); an interrupted training
# (SIGTERM, Ctrl-C) is packed with its resume state and continues on the next call, also on a
# fresh clone. Run two invocations with different STEPs
# side by side to use two cores (THREADS=1 each, the default).
#
# Time on one core of the 2-core machine: hyper-q4 from scratch ~2.5 h, hyper-q2 / hyper-q6 /
# hyper-q1 ~35 min each (fine-tuned), cheng-q4 from scratch ~3 h (0.65 s per step), teacher
# ~10 min, each Stage II run ~17 min (five: pkdt, adv, ma2023 and the seed-1 runs), each
# protocol-2 evaluation ~15 min (twelve; Cheng's ~30), the ablations (three Stage II variants,
# each evaluated) ~85 min, the tuning (a teacher and five variants on the validation split)
# ~1.6 h, Stage I / II and the baselines at q2 and q6 ~1.2 h per rate point (teacher 6 min,
# each Stage II run 8-10, each evaluation 6-15), Stage I / II on Cheng ~1.3 h (teacher ~20 min,
# Stage II ~25, evaluations ~15 each), the baselines on Cheng ~1.2 h, the Kodak-24 evaluations
# ~35 min each (eight), the eps 1e-3 / DIV2K evaluations 5-12 min each, a second teacher ~25
# min, hyper-q4-long (6000 steps more) ~35 min and Table 1 from it ~1.7 h, hyper-q6-long (8000
# steps more) ~45 min and Table 1 from it ~1.5 h, the seed-1 runs from hyper-q4-long ~1.5 h,
# Table 2 from it ~1 h, hyper-q6-wide ~1 h, the eps 1e-3 / DIV2K / Kodak-24 evaluations from
# hyper-q4-long ~4.5 h (Kodak 24 ~37 min each; its Stage I / II weights are not committed:
# RETRAIN=1 retrains them first, ~50 min), the tuning again from hyper-q4-long ~2.5 h (an
# 800-step variant and a second seed more), the two patch runs ~25 min each, hyper-q6-p256-long
# ~40 min, hyper-q6-n88 ~1 h and its evaluation ~15 min, hyper-q6-hard ~20 min, hyper-q6-n128
# ~1.8 h, hyper-q4-p256 ~35 min and its evaluations ~55 min, Table 1 from it ~1.7 h,
# hyper-q6-wide-p256 ~45 min and its evaluation ~20 min, Table 1 from it ~2.2 h (M 192: teacher
# ~15 min, each Stage II run ~25, each evaluation ~20), the eps 5e-4 evaluations of the retrained
# hyper-q4-long Stage I / II models that the nested eps 1e-3 worst case needs ~1 h (four),
# hyper-q6-wide-p256-long and -b4 ~45 min each, the former's evaluation ~20 min,
# hyper-q6-wide-p256-long2 ~25 min, its evaluation ~20 min and Table 1 from it ~2.2 h, Table 1
# at q1 ~1 h, pretrained against PKDT at q2, on Cheng and from hyper-q6-wide-p256-long2 on
# Kodak 24 (~25 min each at M 96, ~32 at M 192, ~90 on Cheng), on DIV2K (5-15 min each) and
# at eps 1e-3 (10-13 min each, Cheng ~30), the q2 teacher on Kodak 24 ~25 min, the q2 and Cheng
# teachers at eps 1e-3 and on DIV2K ~1 h: about 70 core-hours, ~35 h on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
T=${THREADS:-1}
export NIC_DATA=${NIC_DATA:-../shared/data}
EVAL=params/cpu/eval_protocol2.yaml
STEPS=(q4 q2 q6 q1 cheng-q4 clean-cheng-q4 teacher pkdt adv ma2023 pkdt-s1 adv-s1 eval-q4 eval-q2 eval-q6 eval-q1 eval-cheng-q4
       eval-teacher eval-pkdt eval-adv eval-ma2023 eval-pkdt-s1 eval-adv-s1 eval-eps-q4 eval-eps-pkdt
       eval-eps-adv eval-div2k-q4 eval-div2k-pkdt eval-div2k-adv ablations tune
       teacher-q2 pkdt-q2 eval-teacher-q2 eval-pkdt-q2 teacher-q6 pkdt-q6 eval-teacher-q6 eval-pkdt-q6
       adv-q2 eval-adv-q2 adv-q6 eval-adv-q6 ma2023-q2 eval-ma2023-q2 ma2023-q6 eval-ma2023-q6
       teacher-cheng pkdt-cheng eval-teacher-cheng eval-pkdt-cheng
       adv-cheng eval-adv-cheng ma2023-cheng eval-ma2023-cheng ma2023-s1 eval-ma2023-s1
       eval-eps-teacher eval-eps-ma2023 eval-div2k-teacher eval-div2k-ma2023
       eval-k24-q4 eval-k24-teacher eval-k24-pkdt eval-k24-adv eval-k24-ma2023
       eval-div2k-q1 eval-div2k-q2 eval-div2k-q6 jpeg-div2k teacher-s1 eval-teacher-s1 jpeg-k24
       q4-long clean-hyper-q4-long eval-k24-q1 eval-k24-q2 eval-k24-q6
       eval-q4long teacher-q4long pkdt-q4long adv-q4long ma2023-q4long eval-teacher-q4long
       eval-pkdt-q4long eval-adv-q4long eval-ma2023-q4long q6-long clean-hyper-q6-long eval-q6long
       teacher-q6long pkdt-q6long adv-q6long ma2023-q6long eval-teacher-q6long eval-pkdt-q6long
       eval-adv-q6long eval-ma2023-q6long
       teacher-s1-q4long pkdt-s1-q4long adv-s1-q4long ma2023-s1-q4long eval-teacher-s1-q4long
       eval-pkdt-s1-q4long eval-adv-s1-q4long eval-ma2023-s1-q4long ablations-q4long
       q6-wide clean-hyper-q6-wide eval-q6wide
       eval-eps-q4long eval-eps-teacher-q4long eval-eps-pkdt-q4long eval-eps-adv-q4long
       eval-eps-ma2023-q4long eval-div2k-q4long eval-div2k-teacher-q4long eval-div2k-pkdt-q4long
       eval-div2k-adv-q4long eval-div2k-ma2023-q4long eval-k24-q4long eval-k24-teacher-q4long
       eval-k24-pkdt-q4long eval-k24-adv-q4long eval-k24-ma2023-q4long tune-q4long
       q6-p128 clean-hyper-q6-p128 q6-p256 clean-hyper-q6-p256 q6-p256-long clean-hyper-q6-p256-long
       q6-n88 clean-hyper-q6-n88 eval-q6n88 eval-q6p256long q6-hard clean-hyper-q6-hard
       q6-n128 clean-hyper-q6-n128 q4-p256 clean-hyper-q4-p256 eval-q4p256 eval-k24-q4p256
       teacher-q4p256 pkdt-q4p256 adv-q4p256 ma2023-q4p256 eval-teacher-q4p256 eval-pkdt-q4p256
       eval-adv-q4p256 eval-ma2023-q4p256 q6-wide-p256 clean-hyper-q6-wide-p256
       eval-q6widep256 teacher-q6widep256 pkdt-q6widep256 adv-q6widep256 ma2023-q6widep256
       eval-teacher-q6widep256 eval-pkdt-q6widep256 eval-adv-q6widep256 eval-ma2023-q6widep256
       q6-wide-p256-long clean-hyper-q6-wide-p256-long q6-wide-p256-b4 clean-hyper-q6-wide-p256-b4
       eval-q6widep256long q6-wide-p256-long2 clean-hyper-q6-wide-p256-long2 eval-q6widep256long2
       teacher-q6widep256long2 pkdt-q6widep256long2 adv-q6widep256long2 ma2023-q6widep256long2
       eval-teacher-q6widep256long2 eval-pkdt-q6widep256long2 eval-adv-q6widep256long2
       eval-ma2023-q6widep256long2 teacher-q1 pkdt-q1 adv-q1 ma2023-q1 eval-teacher-q1 eval-pkdt-q1
       eval-adv-q1 eval-ma2023-q1 eval-k24-pkdt-q2 eval-k24-cheng-q4 eval-k24-pkdt-cheng
       eval-k24-q6widep256long2 eval-k24-pkdt-q6widep256long2
       eval-eps-q1 eval-eps-q2 eval-eps-pkdt-q2 eval-eps-cheng-q4 eval-eps-pkdt-cheng
       eval-eps-q6widep256long2 eval-eps-pkdt-q6widep256long2
       eval-div2k-pkdt-q2 eval-div2k-cheng-q4 eval-div2k-pkdt-cheng eval-div2k-q6widep256long2
       eval-div2k-pkdt-q6widep256long2 eval-k24-teacher-q2
       eval-eps-teacher-q2 eval-div2k-teacher-q2 eval-eps-teacher-cheng eval-div2k-teacher-cheng
       jpeg figures)

is_done() { [ -f "models/cpu/$1/model.pt" ] && [ ! -f "models/cpu/$1/resume.pt" ]; }

# train NAME STAGE PARAMS [-p k v ...]: resume from the packed state, train, pack.
train() {
  local name=$1 stage=$2 params=$3; shift 3
  if is_done "$name"; then echo "== $name: done (models/cpu/$name)"; return; fi
  if [ ! -d "models/cpu/$name" ] && [ -z "${RETRAIN:-}" ] && { [ -f "results/cpu/$name/metrics_p2.json" ] ||
       [ -f "results/cpu/$name/metrics_clean.json" ]; }; then  # (a codec measured clean only)
    echo "== $name: its results are committed, its model is not (RETRAIN=1 trains it)"; return
  fi
  local run=runs/cpu/$name
  if [ -f "models/cpu/$name/resume.pt" ]; then
    $PY -m nic_core.checkpoints unpack "models/cpu/$name" "$run" || true  # keeps a newer one
  fi
  echo "== $name: training ($stage, $params)"
  $PY -m nic_core.runs "$stage" -f "$params" -p threads "$T" -p progress false \
    -p run_dir "$run" "$@" --no-eval
  if $PY -m nic_core.checkpoints finished "$run"; then
    $PY -m nic_core.checkpoints pack "$run" "models/cpu/$name" --final
  else
    $PY -m nic_core.checkpoints pack "$run" "models/cpu/$name"
    echo "== $name: interrupted; packed with its resume state (run again to continue)"
    exit 0
  fi
}

# evaluate NAME LABEL: protocol-2 evaluation of models/cpu/NAME (needs the finished model).
evaluate() {
  local name=$1 label=$2 out=results/cpu/$1/metrics_p2.json
  if [ -f "$out" ]; then echo "== $out: exists"; return; fi
  if ! is_done "$name"; then echo "== $name: not trained yet, evaluation skipped"; return; fi
  echo "== evaluating $name ($EVAL)"
  mkdir -p "runs/cpu/$name"
  $PY -m nic_core.runs pretrain -f "$EVAL" -p threads "$T" --eval-only "models/cpu/$name/model.pt" \
    --out "$out" --name "$label" --adversarial "runs/cpu/$name/adv_p2.pt"
}

# nest_eps NAME SMALL: NAME's eps 1e-3 worst case nested over its eps 5e-4 one (nic_core.budgets:
# an image attacked within 5e-4 is one within 1e-3), the file Fig. 4 and the tables read. SMALL:
# metrics_p2.json, or, for a Stage I / II model retrained since its Table 1 run (weights not
# committed), metrics_p2_retrained.json, the eps 5e-4 evaluation of the retrained weights.
nest_eps() {
  local name=$1 small=results/cpu/$1/$2 out=results/cpu/$1/metrics_p2_eps1e-3_nested.json
  if [ -f "$out" ]; then echo "== $out: exists"; return; fi
  if [ ! -f "$small" ]; then
    if ! is_done "$name"; then echo "== $name: not trained here, $small skipped"; return; fi
    $PY -m nic_core.runs pretrain -f "$EVAL" -p threads "$T" --eval-only "models/cpu/$name/model.pt" \
      --out "$small" --name "$name (retrained), eps 5e-4"
  fi
  # a pair budgets refuses (clean points that differ: another model) leaves the nested file out
  # and the run going, as for the Cheng teacher (README "Not done yet"); its grid cell stays empty
  $PY -m nic_core.budgets "results/cpu/$name/metrics_p2_eps1e-3.json" "$small" --out "$out" \
    || echo "== $out: not nested (see the error above); the run goes on" >&2
}

# variants_done PARAMS: every variant of a notebook-04 params file has its results_dir file
# (their models are not committed, so a fresh clone would otherwise train them all again).
variants_done() {
  local dir vs v
  dir=$(sed -n 's/^results_dir: *//p' "$1"); vs=$(sed -n 's/^variants: *//p' "$1")
  for v in ${vs//,/ }; do [ -f "$dir/$v/metrics.json" ] || return 1; done
  echo "== $dir: every variant of $1 has its results"
}

# codec C: the pretrained codec a Stage I / II step starts from, by rate point (q2, q6: Hyper;
# cheng: Cheng; q4long / q6long: hyper-q4 / hyper-q6 trained longer; q4p256: hyper-q4-long
# trained on 256x256 patches; q6widep256: the M 192 hyper-q6-wide trained on 256x256 patches,
# its weights not committed; q6widep256long2: that codec trained 7000 steps more, 1.02 dB over
# JPEG, committed; each has params/cpu/01_pretrain_CODEC.yaml). A new rate point is one entry
# here: the steps teacher-C, {pkdt,adv,ma2023}-C, eval-{teacher,...}-C and eval-{eps,div2k,k24}-*
# follow from it. Unknown: exit 2 (assign its output first: `c=$(codec q)`, so set -e sees it).
declare -A CODECS=([q1]=hyper-q1 [q2]=hyper-q2 [q4]=hyper-q4 [q6]=hyper-q6 [cheng]=cheng-q4
  [q4long]=hyper-q4-long [q6long]=hyper-q6-long [q4p256]=hyper-q4-p256
  [q6widep256]=hyper-q6-wide-p256 [q6widep256long2]=hyper-q6-wide-p256-long2)
codec() {
  if [ -z "${CODECS[$1]:-}" ]; then
    echo "unknown rate point '$1'; rate points: ${!CODECS[*]}" >&2; exit 2
  fi
  echo "${CODECS[$1]}"
}

# rate_point C: the overrides that move the hyper-q4 Stage I / II params files to codec C: its
# lmbda and pretrained model, and its model / N / M from its params file (the weights come from
# the checkpoint; these label the run's config.yaml); every other setting as at q4, as in the paper.
rate_point() {
  local c k v; c=$(codec "$1")
  for k in lmbda model N M; do
    v=$(sed -n "s/^$k: *//p" "params/cpu/01_pretrain_$c.yaml")
    if [ -n "$v" ]; then echo "-p $k $v"; fi
  done
  echo "-p pretrained models/cpu/$c/model.pt"
}

declare -A LABEL=([teacher]="teacher (Stage I)" [pkdt]="Ours (PKDT)" [adv]="adversarial training"
                 [ma2023]="Ma2023")

run_step() {
  case $1 in
    q[1-9]*)  # a Hyper codec: params/cpu/01_pretrain_hyper-STEP.yaml (q4, q2, q6-wide-p256, ...)
      if [ ! -f "params/cpu/01_pretrain_hyper-$1.yaml" ]; then
        echo "unknown step $1 (no params/cpu/01_pretrain_hyper-$1.yaml)" >&2; exit 2
      fi
      train "hyper-$1" pretrain "params/cpu/01_pretrain_hyper-$1.yaml" ;;
    cheng-q4) train cheng-q4 pretrain params/cpu/01_pretrain_cheng-q4.yaml ;;
    clean-*)  # clean-NAME: the clean point of models/cpu/NAME as it stands (also while
      # unfinished); skipped while its file exists (delete it to measure again), so a fresh
      # clone passes it for a codec whose weights are not committed (hyper-q6-wide)
      local name=${1#clean-}
      if [ -f "results/cpu/$name/metrics_clean.json" ]; then
        echo "== results/cpu/$name/metrics_clean.json: exists"; return
      fi
      mkdir -p "results/cpu/$name"
      $PY -m nic_core.runs pretrain -f "$EVAL" -p threads "$T" -p attack_iterations 0 \
        --eval-only "models/cpu/$name/model.pt" --out "results/cpu/$name/metrics_clean.json" \
        --name "$name after $(zcat "models/cpu/$name/history.jsonl.gz" | wc -l) steps of its own run" ;;
    teacher) train hyper-q4-teacher teacher params/cpu/hyper-q4/02_teacher.yaml ;;
    teacher-s1)  # a second Stage I seed: the teacher-to-teacher spread beside Stage II vs Stage I
      train hyper-q4-teacher-s1 teacher params/cpu/hyper-q4/02_teacher.yaml -p seed 1 ;;
    pkdt|adv|ma2023)
      local teacher=models/cpu/hyper-q4-teacher/model.pt
      train "hyper-q4-$1" pkdt params/cpu/hyper-q4/03_pkdt.yaml -p method "$1" -p teacher "$teacher" ;;
    pkdt-s1|adv-s1|ma2023-s1)  # a second training seed of the Stage II methods (seed 1; the first is 0)
      local teacher=models/cpu/hyper-q4-teacher/model.pt
      train "hyper-q4-$1" pkdt params/cpu/hyper-q4/03_pkdt.yaml -p method "${1%-s1}" \
        -p teacher "$teacher" -p seed 1 ;;
    teacher-s1-*)  # a second training seed from another codec (q4long): Stage I ...
      local c; c=$(codec "${1#teacher-s1-}")
      # shellcheck disable=SC2046
      train "$c-teacher-s1" teacher params/cpu/hyper-q4/02_teacher.yaml \
        $(rate_point "${1#teacher-s1-}") -p seed 1 ;;
    pkdt-s1-*|adv-s1-*|ma2023-s1-*)  # ... and Stage II (from the seed-0 teacher)
      local m=${1%%-*} q=${1#*-s1-}; local c; c=$(codec "$q")
      # shellcheck disable=SC2046
      train "$c-$m-s1" pkdt params/cpu/hyper-q4/03_pkdt.yaml -p method "$m" \
        -p teacher "models/cpu/$c-teacher/model.pt" $(rate_point "$q") -p seed 1 ;;
    teacher-*)  # Table 1 at the other codecs (CODECS): Stage I ...
      local q=${1#teacher-}; local c; c=$(codec "$q")
      # shellcheck disable=SC2046  # rate_point's words are meant to split
      train "$c-teacher" teacher params/cpu/hyper-q4/02_teacher.yaml $(rate_point "$q") ;;
    pkdt-*|adv-*|ma2023-*)  # ... and Stage II from its own teacher
      local m=${1%%-*} q=${1#*-}; local c; c=$(codec "$q")
      # shellcheck disable=SC2046
      train "$c-$m" pkdt params/cpu/hyper-q4/03_pkdt.yaml -p method "$m" \
        -p teacher "models/cpu/$c-teacher/model.pt" $(rate_point "$q") ;;
    eval-eps-*|eval-div2k-*|eval-k24-*)  # another budget or other images: eps = 1e-3 (Fig. 4),
      # the DIV2K validation images at hand, all 24 Kodak images (crops); of a pretrained codec
      # (eval-k24-q2, eval-k24-cheng-q4) or a Stage I / II model (eval-k24-pkdt: from hyper-q4,
      # eval-k24-pkdt-q2: from hyper-q2); before the protocol-2 branch below, whose
      # eval-pkdt-* would catch eval-eps-pkdt-q4long
      local v=${1#eval-}; v=${v%%-*}; local m=${1#eval-"$v"-} name c small=metrics_p2.json
      case $m in
        teacher-q4long|pkdt-q4long|adv-q4long|ma2023-q4long)  # retrained: not Table 1's weights
          name=hyper-q4-long-${m%-q4long} small=metrics_p2_retrained.json ;;
        teacher|pkdt|adv|ma2023) name=hyper-q4-$m ;;
        teacher-*|pkdt-*|adv-*|ma2023-*) c=$(codec "${m#*-}"); name=$c-${m%%-*} ;;
        cheng-q4) name=cheng-q4 ;;
        *) name=$(codec "$m") ;;
      esac
      local -A file=([eps]=eps1e-3 [div2k]=div2k [k24]=kodak24)
      local -A what=([eps]="eps 1e-3" [div2k]=DIV2K [k24]="Kodak 24")
      local -A over=([eps]="-p eps 0.001" [div2k]="-p eval_set div2k-valid -p eval_limit 0"
                     [k24]="-p eval_limit 0")
      local out=results/cpu/$name/metrics_p2_${file[$v]}.json
      if [ -f "$out" ]; then echo "== $out: exists"
      elif ! is_done "$name"; then echo "== $name: not trained yet, evaluation skipped"; return
      else
        # shellcheck disable=SC2086  # the overrides are meant to split
        $PY -m nic_core.runs pretrain -f "$EVAL" -p threads "$T" ${over[$v]} --eval-only \
          "models/cpu/$name/model.pt" --out "$out" --name "$name ${what[$v]}"
      fi
      if [ "$v" = eps ]; then nest_eps "$name" "$small"; fi ;;
    eval-teacher-s1|eval-pkdt-s1|eval-adv-s1|eval-ma2023-s1)  # seed 1 from hyper-q4
      local m=${1#eval-}; m=${m%-s1}
      evaluate "hyper-q4-$m-s1" "${LABEL[$m]}, seed 1" ;;
    eval-teacher-*|eval-pkdt-*|eval-adv-*|eval-ma2023-*)  # Stage I / II at codec C (CODECS)
      local m=${1#eval-}; m=${m%-*}; local q=${1##*-} s="" c
      if [[ $m == *-s1 ]]; then m=${m%-s1}; s=-s1; fi  # eval-pkdt-s1-q4long: seed 1
      c=$(codec "$q")
      evaluate "$c-$m$s" "${LABEL[$m]}${s:+, seed 1} ($q)" ;;
    eval-teacher|eval-pkdt|eval-adv|eval-ma2023)  # Stage I / II from hyper-q4
      evaluate "hyper-q4-${1#eval-}" "${LABEL[${1#eval-}]}" ;;
    eval-q4) evaluate hyper-q4 "pretrained (q4)" ;;
    eval-q2) evaluate hyper-q2 "pretrained (q2)" ;;
    eval-q6) evaluate hyper-q6 "pretrained (q6)" ;;
    eval-q4long) evaluate hyper-q4-long "pretrained (q4, 22000 steps)" ;;
    eval-q6long) evaluate hyper-q6-long "pretrained (q6, 28000 steps)" ;;
    eval-q6wide) evaluate hyper-q6-wide "pretrained (q6, M 192, widened from hyper-q6-long)" ;;
    eval-q6n88) evaluate hyper-q6-n88 "pretrained (q6, N 88, widened from hyper-q6-p256)" ;;
    eval-q6p256long) evaluate hyper-q6-p256-long "pretrained (q6, 256x256 patches, 9000 steps more)" ;;
    eval-q4p256) evaluate hyper-q4-p256 "pretrained (q4, 256x256 patches, 4000 steps more)" ;;
    eval-q6widep256) evaluate hyper-q6-wide-p256 "pretrained (q6, M 192, 256x256 patches)" ;;
    eval-q6widep256long) evaluate hyper-q6-wide-p256-long "pretrained (q6, M 192, 256x256 patches, 4000 steps more)" ;;
    eval-q6widep256long2) evaluate hyper-q6-wide-p256-long2 "pretrained (q6, M 192, 256x256 patches, 7000 steps more)" ;;
    eval-q1) evaluate hyper-q1 "pretrained (q1)" ;;
    eval-cheng-q4) evaluate cheng-q4 "pretrained Cheng (q4)" ;;
    ablations)  # Table 2: notebook 04 trains and evaluates each variant (resumable per variant)
      variants_done params/cpu/hyper-q4/04_ablations.yaml && return
      .venv/bin/papermill notebooks/04_ablations.ipynb runs/cpu/04_ablations.ipynb \
        -f params/cpu/hyper-q4/04_ablations.yaml -p threads "$T" ;;
    ablations-q4long)  # Table 2 again, from hyper-q4-long and its teacher
      variants_done params/cpu/hyper-q4-long/04_ablations.yaml && return
      .venv/bin/papermill notebooks/04_ablations.ipynb runs/cpu/04_ablations_q4long.ipynb \
        -f params/cpu/hyper-q4-long/04_ablations.yaml -p threads "$T" ;;
    tune|tune-q4long)  # alpha, beta and Stage II length on the validation split
      # (params/cpu/hyper-q4/04_tune.yaml; tune-q4long: the same from hyper-q4-long)
      local c=hyper-q4 over="" q=q4
      if [ "$1" = tune-q4long ]; then c=hyper-q4-long; over=$(rate_point q4long); q="q4, 22000 steps"; fi
      if ! variants_done "params/cpu/$c/04_tune.yaml"; then
        # shellcheck disable=SC2086  # rate_point's words are meant to split
        $PY -m nic_core.runs teacher -f params/cpu/hyper-q4/02_teacher.yaml $over -p threads "$T" \
          -p progress false -p train_split train -p run_dir "runs/cpu/$c-tune/teacher" --no-eval
        .venv/bin/papermill notebooks/04_ablations.ipynb "runs/cpu/04_tune${1#tune}.ipynb" \
          -f "params/cpu/$c/04_tune.yaml" -p threads "$T"
      fi
      # the reference rows: the pretrained codec, and the teacher when its run is at hand (a
      # fresh clone with every variant's results committed has not trained it)
      local ref ckpt label
      for ref in pretrained teacher; do
        ckpt=models/cpu/$c/model.pt label="pretrained ($q)"
        if [ $ref = teacher ]; then
          ckpt=runs/cpu/$c-tune/teacher/checkpoint.pt label="teacher (Stage I, the distilled model)"
        fi
        local out=results/cpu/$c-tune/$ref/metrics.json
        if [ -f "$out" ]; then continue; fi
        if [ ! -f "$ckpt" ]; then echo "== $out: $ckpt not trained here, skipped"; continue; fi
        $PY -m nic_core.runs pretrain -f "$EVAL" -p threads "$T" -p eval_set val -p eval_limit 0 \
          -p eval_crop 192 -p eval_worst_case "" --eval-only "$ckpt" --out "$out" --name "$label"
      done ;;
    jpeg) $PY -m nic_core.jpeg -f "$EVAL" --out results/cpu/jpeg_kodak8.json \
            --vs results/cpu/hyper-q{2,4,6}/metrics_p2.json ;;
    jpeg-div2k) $PY -m nic_core.jpeg -f "$EVAL" -p eval_set div2k-valid -p eval_limit 0 \
                  --out results/cpu/jpeg_div2k.json ;;
    jpeg-k24) $PY -m nic_core.jpeg -f "$EVAL" -p eval_limit 0 --out results/cpu/jpeg_kodak24.json ;;
    figures) make figures ;;
    *) echo "unknown step $1; steps: ${STEPS[*]}" >&2; exit 2 ;;
  esac
}

for s in "${@:-${STEPS[@]}}"; do run_step "$s"; done
