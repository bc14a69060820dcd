"""The registry of the reproduction's results: every results file, the command that makes it,
its label, and the paper's numbers beside which the tables put ours.

:data:`RUNS` maps a key (``"pkdt"``, ``"pretrained-q2"``, ``"pkdt-q2-kodak24"``, ...) to its
results file and the ``scripts/reproduce_cpu.sh`` steps that make it; :data:`LABELS` names each
key in tables and figures; :data:`TABLE1_ROWS`, :data:`TABLE1_AT`, :data:`TABLE2_ROWS`, ... list
the rows of each table; :data:`PAPER_TABLE1` and :data:`PAPER_TABLE2` are the numbers of Cao et
al., "Enhancing Adversarial Training with Prior Knowledge Distillation for Robust Image
Compression" (arXiv 2403.06700). Plain values only: :mod:`nic_core.tables` reads the files,
:mod:`nic_core.claims` states the verdicts, :mod:`nic_core.figures` draws them.
"""
from __future__ import annotations

from typing import Dict, Tuple

REPRO = "scripts/reproduce_cpu.sh"
# key: (results file, the command that makes it)
RUNS: Dict[str, Tuple[str, str]] = {
    "pretrained-q1": ("results/cpu/hyper-q1/metrics_p2.json", f"{REPRO} q1 eval-q1"),
    "pretrained-q2": ("results/cpu/hyper-q2/metrics_p2.json", f"{REPRO} q2 eval-q2"),
    "pretrained-q4": ("results/cpu/hyper-q4/metrics_p2.json", f"{REPRO} q4 eval-q4"),
    "pretrained-q6": ("results/cpu/hyper-q6/metrics_p2.json", f"{REPRO} q6 eval-q6"),
    "cheng-q4": ("results/cpu/cheng-q4/metrics_p2.json", f"{REPRO} cheng-q4 eval-cheng-q4"),
    "teacher": ("results/cpu/hyper-q4-teacher/metrics_p2.json", f"{REPRO} teacher eval-teacher"),
    "pkdt": ("results/cpu/hyper-q4-pkdt/metrics_p2.json", f"{REPRO} pkdt eval-pkdt"),
    "adv": ("results/cpu/hyper-q4-adv/metrics_p2.json", f"{REPRO} adv eval-adv"),
    "ma2023": ("results/cpu/hyper-q4-ma2023/metrics_p2.json", f"{REPRO} ma2023 eval-ma2023"),
    "pkdt-s1": ("results/cpu/hyper-q4-pkdt-s1/metrics_p2.json", f"{REPRO} pkdt-s1 eval-pkdt-s1"),
    "adv-s1": ("results/cpu/hyper-q4-adv-s1/metrics_p2.json", f"{REPRO} adv-s1 eval-adv-s1"),
    "ma2023-s1": ("results/cpu/hyper-q4-ma2023-s1/metrics_p2.json",
                  f"{REPRO} ma2023-s1 eval-ma2023-s1"),
    "jpeg": ("results/cpu/jpeg_kodak8.json", f"{REPRO} jpeg"),
    "jpeg-div2k": ("results/cpu/jpeg_div2k.json", f"{REPRO} jpeg-div2k"),
    "jpeg-kodak24": ("results/cpu/jpeg_kodak24.json", f"{REPRO} jpeg-k24"),
    "teacher-s1": ("results/cpu/hyper-q4-teacher-s1/metrics_p2.json",
                   f"{REPRO} teacher-s1 eval-teacher-s1"),
    **{f"abl-{v}": (f"results/cpu/hyper-q4-ablations/{v}/metrics.json", f"{REPRO} ablations")
       for v in ("no-smooth", "no-dydx", "no-dbpp")},
}
# Table 1 at the other rate points: Stage I / II from that rate point's own pretrained codec
# (same settings as at q4); keys "teacher-q2", "pkdt-q6", ...
OTHER_RATES = {"q1": "0.0018", "q2": "0.0035", "q6": "0.0483"}  # rate point: lmbda
METHODS = ("teacher", "pkdt", "adv", "ma2023")
RUNS.update({f"{m}-{q}": (f"results/cpu/hyper-{q}-{m}/metrics_p2.json",
                          f"{REPRO} {m}-{q} eval-{m}-{q}")
             for q in OTHER_RATES for m in METHODS})
# Stage I / II on the Cheng codec (the paper's Fig. 3: "more pronounced" on Cheng than on Hyper)
RUNS.update({f"{m}-cheng": (f"results/cpu/cheng-q4-{m}/metrics_p2.json",
                            f"{REPRO} {m}-cheng eval-{m}-cheng") for m in METHODS})
PRETRAINED = ("pretrained-q1", "pretrained-q2", "pretrained-q4", "pretrained-q6")  # the R-D curve
TABLE1_ROWS = ("pretrained-q4", "teacher", "pkdt", "adv", "ma2023")
# Another budget or image set for committed models: key "{base}-{suffix}", the base's results
# file with "_{suffix}", made by the step `eval-{step}-{base without "pretrained-"}`.
VARIANTS = {  # suffix: (step, label, bases)
    "eps1e-3": ("eps", "eps 1e-3", TABLE1_ROWS),  # Fig. 4: the paper's larger budget
    "div2k": ("div2k", "DIV2K", (*PRETRAINED, *METHODS)),  # the 4 DIV2K LR x4 images at hand
    "kodak24": ("k24", "Kodak 24", (*PRETRAINED, *METHODS)),  # all 24 (the others: the first 8)
}
TABLE1_K24 = tuple(f"{k}-kodak24" for k in TABLE1_ROWS)
JPEG_ON = {"": "jpeg", "-div2k": "jpeg-div2k", "-kodak24": "jpeg-kodak24"}  # same images
TABLE1_AT = {q: (f"pretrained-{q}", *(f"{m}-{q}" for m in METHODS)) for q in OTHER_RATES}
TABLE1_AT["cheng"] = ("cheng-q4", *(f"{m}-cheng" for m in METHODS))  # Table 1 on Cheng
# Table 1 again from the codecs trained longer: hyper-q4 6000 steps more (1.15 dB over JPEG
# where hyper-q4 is 0.77), hyper-q6 8000 steps more, hyper-q4-long 4000 steps more on 256x256
# patches (1.59 dB), the M 192 hyper-q6-wide 4000 steps more on 256x256 patches (0.88 dB) and
# that one 7000 steps more (1.02 dB): does what Stage I / II do depend on the codec's strength?
LONG = {  # rate point: (codec, what, the steps that train it)
    "q4long": ("hyper-q4-long", "Hyper, 22000 steps", "q4-long"),
    "q6long": ("hyper-q6-long", "lmbda 0.0483, 28000 steps", "q6-long"),
    "q4p256": ("hyper-q4-p256", "lmbda 0.013, hyper-q4-long trained 4000 steps more on 256x256 "
               "patches", "q4-p256"),
    "q6widep256": ("hyper-q6-wide-p256", "lmbda 0.0483, hyper-q6-wide (M 192) trained 4000 steps "
                   "more on 256x256 patches", "q6-wide-p256"),
    "q6widep256long2": ("hyper-q6-wide-p256-long2", "lmbda 0.0483, hyper-q6-wide-p256 trained "
                        "7000 steps more on 256x256 patches", "q6-wide-p256-long2")}
for q, (c, _, train) in LONG.items():
    RUNS[f"pretrained-{q}"] = (f"results/cpu/{c}/metrics_p2.json", f"{REPRO} {train} eval-{q}")
    RUNS.update({f"{m}-{q}": (f"results/cpu/{c}-{m}/metrics_p2.json",
                              f"{REPRO} {m}-{q} eval-{m}-{q}") for m in METHODS})
    TABLE1_AT[q] = (f"pretrained-{q}", *(f"{m}-{q}" for m in METHODS))
LONGER = tuple(f"pretrained-{q}" for q in LONG)  # the pretrained codecs trained longer
# codecs trained further to lift them over JPEG (nic_core.strength): wider (M 192, N 88, N 128
# by split twins), on 256x256 patches, soft-then-hard; the codecs table lists them, clean only
# where they have no protocol-2 file (hyper-q4-p256, hyper-q6-wide-p256 and -long2 are in LONG)
WIDE = {"pretrained-q6wide": ("results/cpu/hyper-q6-wide/metrics_p2.json",
                              f"{REPRO} q6-wide eval-q6wide"),
        "pretrained-q6n88": ("results/cpu/hyper-q6-n88/metrics_p2.json",  # N 64 -> 88
                             f"{REPRO} q6-n88 eval-q6n88"),
        "pretrained-q6p256long": ("results/cpu/hyper-q6-p256-long/metrics_p2.json",  # patch 256
                                  f"{REPRO} q6-p256 q6-p256-long eval-q6p256long"),
        "pretrained-q6hard": ("results/cpu/hyper-q6-hard/metrics_p2.json",
                              f"{REPRO} q6-hard clean-hyper-q6-hard"),
        "pretrained-q6n128": ("results/cpu/hyper-q6-n128/metrics_p2.json",  # N 64 -> 128, split
                              f"{REPRO} q6-p256 q6-n128 clean-hyper-q6-n128"),
        "pretrained-q6widep256long": ("results/cpu/hyper-q6-wide-p256-long/metrics_p2.json",
                                      f"{REPRO} q6-wide-p256-long eval-q6widep256long"),
        "pretrained-q6widep256b4": ("results/cpu/hyper-q6-wide-p256-b4/metrics_p2.json",
                                    f"{REPRO} q6-wide-p256-b4 clean-hyper-q6-wide-p256-b4")}
RUNS.update(WIDE)
# the eps 1e-3 / DIV2K / Kodak-24 evaluations again from hyper-q4-long and its Stage I / II
# models (their weights are not committed: `RETRAIN=1` trains them again first; the
# retrained Stage I / II models are not bit-identical to those of Table 1 from hyper-q4-long)
# and single codecs evaluated with one more budget / image set, by step
# PKDT beside its own pretrained codec at q2, on Cheng and from hyper-q6-wide-p256-long2, on all
# 24 Kodak crops and on DIV2K (Fig. 3's "pretrained vs ours" there) and at eps 1e-3 (Fig. 4 as
# R-D curves, with hyper-q1 for the pretrained curve); hyper-q4-p256 on all 24 Kodak crops; the
# teachers whose weights are committed (q2, Cheng): Stage II against Stage I there too
MORE_AT = ("q2", "cheng", "q6widep256long2")
_PAIRS = tuple(k for q in MORE_AT for k in (TABLE1_AT[q][0], f"pkdt-{q}"))  # pretrained, ours
MORE_BASES = {"k24": ("pretrained-q4p256", *_PAIRS, "teacher-q2"),
              "eps": ("pretrained-q1", *_PAIRS, "teacher-q2", "teacher-cheng"),
              "div2k": (*_PAIRS, "teacher-q2", "teacher-cheng")}
VARIANTS = {suffix: (step, what, tuple(dict.fromkeys((*bases, *TABLE1_AT["q4long"],
                                                      *MORE_BASES.get(step, ())))))
            for suffix, (step, what, bases) in VARIANTS.items()}


def _variant_cmd(base: str, step: str) -> str:
    """The command that evaluates ``base`` with another budget / on other images, after the
    steps that train it (and the teacher it distils) where their weights are not committed
    (those steps then say to set ``RETRAIN=1``)."""
    ev = f"eval-{step}-{base.replace('pretrained-', '')}"
    if base not in TABLE1_AT["q4long"][1:]:
        return f"{REPRO} {ev}"
    train = dict.fromkeys(("teacher-q4long", base))  # the teacher first, once
    return f"{REPRO} {' '.join(train)} {ev}"


# eps 1e-3: the worst case nested over the eps 5e-4 attacks of the same model (nic_core.budgets:
# the smaller ball lies inside the larger, and the attacks at 1e-3 alone end weaker on the rate
# side); the step writes the plain eps 1e-3 file, then the nested one
VARIANT_FILE = {"eps1e-3": "eps1e-3_nested"}
RUNS.update({f"{b}-{suffix}": (RUNS[b][0].replace(
                 "metrics_p2", f"metrics_p2_{VARIANT_FILE.get(suffix, suffix)}"),
             _variant_cmd(b, step))
             for suffix, (step, _, bases) in VARIANTS.items() for b in bases})
TABLE1_K24_AT = {q: tuple(f"{k}-kodak24" for k in TABLE1_AT[q] if f"{k}-kodak24" in RUNS)
                 for q in ("q4long", *MORE_AT)}  # Table 1 on Kodak 24: the rows evaluated there


def at_q4long(key: str) -> str:
    """The hyper-q4-long twin of a hyper-q4 key: ``"pkdt"`` -> ``"pkdt-q4long"``,
    ``"pretrained-q4-eps1e-3"`` -> ``"pretrained-q4long-eps1e-3"``, ``"adv-s1"`` ->
    ``"adv-s1-q4long"``."""
    for suffix in VARIANTS:
        if key.endswith(f"-{suffix}"):
            return f"{at_q4long(key[:-len(suffix) - 1])}-{suffix}"
    return "pretrained-q4long" if key == "pretrained-q4" else f"{key}-q4long"


ABLATIONS = ("no-smooth", "no-dydx", "no-dbpp")
TABLE2_ROWS = ("pkdt", *(f"abl-{v}" for v in ABLATIONS))
# Table 2 and the second training seed again from hyper-q4-long, the lmbda 0.013 codec that
# clears 1 dB over JPEG (hyper-q4 does not): key "{hyper-q4 key}-q4long"
FROM_Q4LONG = (*(f"{m}-s1" for m in METHODS), *TABLE2_ROWS[1:])  # hyper-q4 keys moved to q4long
RUNS.update({f"{m}-s1-q4long": (f"results/cpu/hyper-q4-long-{m}-s1/metrics_p2.json",
                                f"{REPRO} {m}-s1-q4long eval-{m}-s1-q4long") for m in METHODS})
RUNS.update({f"abl-{v}-q4long": (f"results/cpu/hyper-q4-long-ablations/{v}/metrics.json",
                                 f"{REPRO} ablations-q4long") for v in ABLATIONS})
TABLE2_AT = {"q4long": tuple(f"{k}-q4long" for k in TABLE2_ROWS)}
LABELS = {"pretrained-q4": "pretrained (Hyper)", "pretrained-q2": "pretrained (lmbda 0.0035)",
          "pretrained-q6": "pretrained (lmbda 0.0483)",
          "pretrained-q1": "pretrained (lmbda 0.0018)",
          "cheng-q4": "pretrained Cheng anchor (N 48, lmbda 0.013)",
          "teacher": "Ours w/o Stage II (teacher)", "pkdt": "Ours (PKDT)",
          "adv": "adversarial training", "ma2023": "Ma2023", "pkdt-s1": "Ours (PKDT), seed 1",
          "adv-s1": "adversarial training, seed 1", "ma2023-s1": "Ma2023, seed 1",
          "teacher-s1": "Ours w/o Stage II (teacher), seed 1",
          "abl-no-smooth": "best w/o smooth_loss", "abl-no-dydx": "best w/o dy/dx",
          "abl-no-dbpp": "best w/o dbpp_main/dx"}
LABELS.update({f"{m}-{q}": f"{LABELS[m]}, lmbda {lm}" for q, lm in OTHER_RATES.items()
               for m in METHODS})
LABELS.update({f"{m}-cheng": f"{LABELS[m]}, Cheng" for m in METHODS})
for q, (c, what, _) in LONG.items():
    LABELS.update({f"{m}-{q}": f"{LABELS[m]}, from {c}" for m in METHODS},
                  **{f"pretrained-{q}": f"pretrained ({what}: {c})"})
LABELS.update({f"{k}-q4long": f"{LABELS[k]}, from {LONG['q4long'][0]}" for k in FROM_Q4LONG},
              **{"pretrained-q6wide": "pretrained (lmbda 0.0483, M 192 widened from "
                 "hyper-q6-long, 8000 steps: hyper-q6-wide)",
                 "pretrained-q6n88": "pretrained (lmbda 0.0483, N 88 widened from "
                 "hyper-q6-p256, 5000 steps on 256x256 patches: hyper-q6-n88)",
                 "pretrained-q6p256long": "pretrained (lmbda 0.0483, hyper-q6-long trained 9000 "
                 "steps more on 256x256 patches: hyper-q6-p256-long)",
                 "pretrained-q6hard": "pretrained (lmbda 0.0483, hyper-q6-p256-long with g_a "
                 "frozen, 3000 steps with real rounding: hyper-q6-hard)",
                 "pretrained-q6n128": "pretrained (lmbda 0.0483, N 128 split from hyper-q6-p256, "
                 "5000 steps on 256x256 patches: hyper-q6-n128)",
                 "pretrained-q6widep256long": "pretrained (lmbda 0.0483, hyper-q6-wide-p256 "
                 "trained 4000 steps more, lr 2e-4: hyper-q6-wide-p256-long)",
                 "pretrained-q6widep256b4": "pretrained (lmbda 0.0483, hyper-q6-wide-p256 "
                 "trained 2000 steps more in batches of 4: hyper-q6-wide-p256-b4)"})
LABELS.update({f"{b}-{suffix}": f"{LABELS[b]}, {what}"
               for suffix, (_, what, bases) in VARIANTS.items() for b in bases})
# The paper's Table 1 (Kodak, Hyper, lowest rate point, eps 5e-4): clean, psnr attack, bpp
# attack, each (bpp, PSNR dB); and Table 2 (N_p = 400, N_b = 200).
PAPER_TABLE1 = {
    "pretrained-q4": ((0.4978, 33.0), (0.498, 22.3502), (0.9161, 33.7702)),
    "teacher": ((0.4322, 32.2592), (0.4309, 25.9039), (0.7225, 33.1432)),
    "pkdt": ((0.4323, 32.0802), (0.4286, 28.4039), (0.6822, 32.9933)),
}
PAPER_K24 = {f"{k}-kodak24": v for k, v in PAPER_TABLE1.items()}
PAPER_TABLE2 = {
    "pkdt": ((0.4323, 32.0802), (0.4273, 28.6556), (0.6953, 33.0194)),
    "abl-no-smooth": ((0.4358, 32.1936), (0.4328, 28.4497), (0.7214, 33.0731)),
    "abl-no-dydx": ((0.4355, 32.1549), (0.4301, 28.5293), (0.7075, 33.031)),
    "abl-no-dbpp": ((0.4332, 32.1463), (0.4279, 28.6224), (0.7083, 33.093)),
}
PAPER_TABLE2_AT = {q: dict(zip(rows, PAPER_TABLE2.values())) for q, rows in TABLE2_AT.items()}
