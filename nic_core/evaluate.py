"""Robustness evaluation: clean rate-distortion plus psnr / bpp attacks, in one JSON format.

:func:`evaluate_robustness` reproduces the measurements behind Table 1 and Fig. 3-5 of
arXiv 2403.06700: per image the clean estimated and real (bitstream) bpp, PSNR and MS-SSIM,
then for each attack the same quantities on the adversarial image, with PSNR / MS-SSIM taken
against the ORIGINAL clean image (as in the paper), the deltas to clean and the noise achieved.

The result is CompressAI's ``eval_model`` JSON, extended with ``"attacks"`` (one block per attack
spec and worst case), ``"per_image"`` rows and ``"findings"``; :mod:`nic_core.results` describes
the format and holds its helpers (``save_results``, ``load_results``, ``CLEAN_KEYS``,
``ATTACK_KEYS``, re-exported here). Transfer between models and attack saturation, and the CLI
``python -m nic_core.evaluate transfer|saturation``, are in :mod:`nic_core.transfer`.

An attack spec is ``kind[@quant][:iterations][/schedule]`` (``attacks.parse_spec``); the
worst-case rows take, per image, the lowest PSNR (highest rate) over the ensemble among the
results that *held* the other quantity (rate within ``RATE_TOL``, PSNR within ``PSNR_TOL``).
Protocol 1 files (before the strongest-iterate attacks) have no ``config.evaluation.protocol``.

``bpp`` is the real bitstream rate when ``real=True`` (default) and the estimated one otherwise
(``config["evaluation"]["real"]`` says which).
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from tqdm.auto import tqdm

from . import attacks as _attacks
from . import cli, distributed, stats
from . import worst_case as _wc
from .journal import Journal, stop_on_signals, tensors_sha256, weights_sha256
from .metrics import ms_ssim, psnr, psnr_from_mse, real_codec, update_entropy_tables
from .models import codec_forward
from .results import (ATTACK_KEYS, CLEAN_KEYS, REQUIRED_KEYS, REQUIRED_RESULTS, mean_or_none, plain_number,
                      plain_values, load_results, save_results)


__all__ = ["evaluate_robustness", "parse_attacks", "save_results", "load_results", "CLEAN_KEYS",
           "ATTACK_KEYS", "REQUIRED_KEYS", "REQUIRED_RESULTS"]  # the format's from .results

RATE_TOL = 0.05  # a psnr-side result "held" the rate: |bpp / bpp_clean - 1| <= 5 %
PSNR_TOL = 1.0   # a bpp-side result "held" the PSNR: drop <= 1 dB
# 2: strongest iterate, cosine step, restarts, attack specs, worst case (1: last iterate)
PROTOCOL = 2

Images = Union[torch.Tensor, Sequence[Tuple[str, torch.Tensor]]]


def as_images(images: Images) -> List[Tuple[str, torch.Tensor]]:
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a [B,3,H,W] tensor or a list of (name, [3,H,W]) "
                             f"pairs, got a tensor of shape {tuple(images.shape)}")
        return [(f"image{i:03d}", t) for i, t in enumerate(images)]
    items = list(images)
    out = []
    for i, item in enumerate(items):
        if not (isinstance(item, (tuple, list)) and len(item) == 2
                and isinstance(item[1], torch.Tensor)):
            raise ValueError(f"images[{i}] must be a (name, [3,H,W] tensor) pair")
        name, t = item
        if t.dim() != 3 or t.shape[0] != 3:
            raise ValueError(f"image {name!r} must be [3,H,W], got shape {tuple(t.shape)}")
        out.append((str(name), t))
    if not out:
        raise ValueError("no images to evaluate")
    return out


def measure_coding(model, x_ref, x_in, real: bool) -> Dict[str, List[Optional[float]]]:
    """Estimated and (optionally) real rate of coding ``x_in``; quality against ``x_ref``."""
    with torch.no_grad():
        out = codec_forward(model, x_in, quant="round")
    B = x_in.shape[0]
    m = {"bpp-est": [plain_number(v) for v in out["bpp"]],
         "bpp_main-est": [plain_number(v) for v in out["bpp_main"]]}
    if real:
        rc = real_codec(model, x_in, update=False)
        x_hat = rc["x_hat"]
        m["bpp"] = [plain_number(v) for v in rc["bpp"]]
        m["encoding_time"] = [rc["enc_s"] / B] * B
        m["decoding_time"] = [rc["dec_s"] / B] * B
    else:
        x_hat = out["x_hat"].clamp(0, 1)
        m["bpp"] = list(m["bpp-est"])
        m["encoding_time"] = m["decoding_time"] = [None] * B
    m["psnr-rgb"] = [plain_number(v) for v in psnr(x_ref, x_hat)]
    m["ms-ssim-rgb"] = [plain_number(v) for v in ms_ssim(x_ref, x_hat)]
    return m


def _groups(images: List[Tuple[str, torch.Tensor]], batch_size: int):
    """Indices of equal-size images in batches of at most ``batch_size`` (first-seen order)."""
    by_shape: Dict[tuple, List[int]] = {}
    for i, (_, t) in enumerate(images):
        by_shape.setdefault(tuple(t.shape), []).append(i)
    for idx in by_shape.values():
        for s in range(0, len(idx), batch_size):
            yield idx[s:s + batch_size]


Spec = Tuple[str, str, int, str]  # kind, quant, iterations, schedule


def parse_attacks(specs: Sequence[str], quant: str = "ste",
                  iterations: Union[int, Mapping[str, int]] = 100,
                  schedule: str = "cosine") -> Dict[str, Spec]:
    """``{key: (kind, quant, iterations, schedule)}`` for specs
    ``kind[@quant][:iterations][/schedule]``; the key leaves out the parts that are defaults.

    ``iterations`` is the default count, or a mapping kind -> count (older callers). Specs that
    name the same attack twice are an error (they would be computed twice).
    """
    out: Dict[str, Spec] = {}
    for spec in specs:
        kind, q, it, sch = _attacks.parse_spec(spec, quant, schedule=schedule)
        default_it = iterations.get(kind) if isinstance(iterations, Mapping) else iterations
        if it is None:
            if default_it is None:
                raise ValueError(f"iterations has no entry for attack {kind!r}")
            it = int(default_it)
        key = (kind + (f"@{q}" if q != quant else "")
               + (f":{it}" if default_it is None or it != int(default_it) else "")
               + (f"/{sch}" if sch != schedule else ""))
        if key in out or (kind, q, it, sch) in out.values():
            raise ValueError(f"attack {spec!r} is listed twice")
        out[key] = (kind, q, it, sch)
    return out


def _merge_specs(attacks: Sequence[str], worst_case: Sequence[str], quant: str,
                 iterations: Union[int, Mapping[str, int]], schedule: str
                 ) -> Tuple[Dict[str, Spec], List[str]]:
    """The attacks to run (``attacks``, then the ensemble's other members) and the keys of the
    ensemble's members (a member also listed in ``attacks`` is computed once, under its key)."""
    specs = parse_attacks(list(attacks), quant, iterations, schedule)
    extra = parse_attacks(list(worst_case), quant, iterations, schedule) if worst_case else {}
    members = []
    for key, spec in extra.items():
        same = [k for k, v in specs.items() if v == spec]
        members.append(same[0] if same else key)
        if not same:
            specs[key] = spec
    return specs, members


def _check_inputs(items: List[Tuple[str, torch.Tensor]], batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    for _, t in items:
        if not t.is_floating_point():
            raise ValueError(f"images must be float tensors in [0, 1], got {t.dtype}")


def _attack_row(att: Mapping[str, list], adv: Mapping[str, Any], b: int,
                clean: Mapping[str, Any], eps: float, seconds: float) -> Dict[str, Any]:
    """Sample ``b`` of one batched attack: its measurements against the clean row (no "held")."""
    nmse = float(adv["noise_mse"][b])
    return {"psnr-rgb": att["psnr-rgb"][b], "ms-ssim-rgb": att["ms-ssim-rgb"][b],
            "bpp": att["bpp"][b], "bpp-est": att["bpp-est"][b],
            "delta-psnr": (None if att["psnr-rgb"][b] is None or clean["psnr-rgb"] is None
                           else att["psnr-rgb"][b] - clean["psnr-rgb"]),
            "delta-bpp": att["bpp"][b] - clean["bpp"],
            "noise-mse": nmse, "noise-psnr": plain_number(psnr_from_mse(nmse)),
            "budget-use": nmse / eps,
            "best-iteration": int(adv["best_iteration"][b]),
            "restart": int(adv["restart"][b]),
            "seconds": seconds}


def _add_attack_rows(rows: List[Dict[str, Any]], keys: List[str], specs: Mapping[str, Spec],
                     adv: Mapping[str, Any], att: Mapping[str, list], kw: Mapping[str, Any],
                     adversarial: Optional[Dict[str, Dict[str, torch.Tensor]]]) -> None:
    """File one batched call's results (samples: ``keys`` x ``rows``) under each image's row."""
    n = len(rows)
    for s, key in enumerate(keys):
        for j, row in enumerate(rows):
            b = s * n + j
            r = _attack_row(att, adv, b, row, kw["eps"], adv["seconds"] / (n * len(keys)))
            r["held"] = _wc.held(specs[key][0], r, row, kw["rate_tol"], kw["psnr_tol"])
            row["attacks"][key] = r
            if adversarial is not None:
                adversarial.setdefault(key, {})[row["name"]] = adv["x_adv"][b].detach().cpu()


def _group_rows(model: torch.nn.Module, items: List[Tuple[str, torch.Tensor]], idx: List[int],
                specs: Mapping[str, Spec], members: Sequence[str], real: bool,
                kw: Mapping[str, Any], adversarial, bar) -> List[Dict[str, Any]]:
    """The per-image rows of one group of equal-size images: clean, every attack (one batched
    call per gradient path and schedule), worst case."""
    x = torch.stack([items[i][1] for i in idx]).to(next(model.parameters()).device)
    n = len(idx)
    clean = measure_coding(model, x, x, real)
    rows = [{"name": items[i][0], "height": int(x.shape[-2]), "width": int(x.shape[-1]),
             **{k: clean[k][j] for k in CLEAN_KEYS}, "attacks": {}}
            for j, i in enumerate(idx)]
    by_call: Dict[Tuple[str, str], List[str]] = {}  # one batched call per (path, schedule)
    for key, (_, q, _, sch) in specs.items():
        by_call.setdefault((q, sch), []).append(key)
    for (q, sch), keys in by_call.items():
        adv = _attacks.attack(
            model, x.repeat(len(keys), 1, 1, 1), [specs[k][0] for k in keys for _ in idx],
            iterations=[specs[k][2] for k in keys for _ in idx], quant=q, schedule=sch, **kw)
        att = measure_coding(model, x.repeat(len(keys), 1, 1, 1), adv["x_adv"], real)
        _add_attack_rows(rows, keys, specs, adv, att, kw, adversarial)
        bar.update(n * kw["restarts"] * sum(specs[k][2] for k in keys))
    _wc.add_worst(rows, members, specs)
    return rows


def _key(idx: Sequence[int]) -> str:
    """A group's journal key: its images' indices."""
    return ",".join(map(str, idx))


def _evaluate_groups(model: torch.nn.Module, items: List[Tuple[str, torch.Tensor]],
                     groups: List[List[int]], specs: Mapping[str, Spec], members: Sequence[str],
                     real: bool, kw: Mapping[str, Any], adversarial, desc: str,
                     disable: bool, per_image: List[Optional[Dict[str, Any]]],
                     journal: Optional[Journal] = None, done: int = 0) -> None:
    """Fill ``per_image`` with the rows of the images in ``groups``; each finished group is
    appended to ``journal`` at once. ``model`` in eval mode meanwhile, its modes given back
    after. The progress bar counts ``done`` (iterations already journalled) and ``groups``."""
    modes = [(m, m.training) for m in model.modules()]
    per_group = kw["restarts"] * sum(v[2] for v in specs.values())
    total = done + sum(map(len, groups)) * per_group
    try:
        model.eval()
        if real:
            update_entropy_tables(model)
        bar = tqdm(total=total, initial=done, desc=desc, unit="it", disable=disable)
        for idx in groups:
            adv_group = {} if adversarial is not None else None
            rows = _group_rows(model, items, idx, specs, members, real, kw, adv_group, bar)
            if journal is not None:
                journal.append(_key(idx), rows, adv_group)
            for j, i in enumerate(idx):
                per_image[i] = rows[j]
            for key, imgs in (adv_group or {}).items():
                adversarial.setdefault(key, {}).update(imgs)
        bar.close()
    finally:
        for m, t in modes:
            m.training = t


def _open_journal(path, fresh: bool, rank: int, name: str, model: torch.nn.Module,
                  items: List[Tuple[str, torch.Tensor]], settings: Mapping[str, Any]) -> Journal:
    """The evaluation's journal, read on every rank (rank 0 deletes it first when ``fresh``)."""
    header = {"what": "evaluate_robustness", "name": name, "model": type(model).__name__,
              "images": [n for n, _ in items], "images_sha256": tensors_sha256(items),
              "settings": settings}
    jr = Journal(path, header, fresh=fresh, rank=rank)
    distributed.barrier()  # the fresh deletion is done before anyone reads
    jr.load()
    distributed.barrier()  # everyone has read before anyone appends
    return jr


def _gather(per_image: List[Optional[Dict[str, Any]]], groups: List[List[int]],
            adversarial: Optional[Dict[str, Dict[str, torch.Tensor]]]) -> None:
    """Under torchrun: every rank's rows (and adversarial images) into every rank's lists."""
    for part in distributed.gather({i: per_image[i] for idx in groups for i in idx}):
        for i, row in part.items():
            per_image[i] = row
    if adversarial is not None:
        for part in distributed.gather(dict(adversarial)):
            for key, imgs in part.items():
                adversarial.setdefault(key, {}).update(imgs)


def _results(name, description, dataset, config: Optional[Mapping[str, Any]],
             settings: Dict[str, Any], per_image: List[Dict[str, Any]], blocks: Dict[str, Any],
             findings: List[str]) -> Dict[str, Any]:
    """The results dict (the format of :mod:`nic_core.results`), as plain JSON values."""
    results = {
        "name": str(name),
        "description": str(description),
        "dataset": str(dataset),
        "config": {**plain_values(dict(config or {})), "evaluation": plain_values(settings)},
        "results": {k: [mean_or_none(r[k] for r in per_image)] for k in CLEAN_KEYS},
        "stderr": {k: stats.mean_se([r[k] for r in per_image])["se"] for k in ("psnr-rgb", "bpp")},
        "attacks": blocks,
        "per_image": per_image,
        "findings": findings,
    }
    return plain_values(results)


def evaluate_robustness(model: torch.nn.Module, images: Images,
                        attacks: Sequence[str] = ("psnr", "bpp"), eps: float = 5e-4,
                        iterations: Union[int, Mapping[str, int]] = 100,
                        lr: Optional[float] = None, quant: str = "ste", seed: int = 0,
                        to_uint8: bool = False, name: str = "model", description: str = "",
                        config: Optional[Mapping[str, Any]] = None, dataset: str = "",
                        real: bool = True, progress: bool = True, batch_size: int = 1,
                        worst_case: Sequence[str] = (), restarts: int = 1,
                        schedule: str = "cosine", keep_best: bool = True,
                        rate_tol: float = RATE_TOL, psnr_tol: float = PSNR_TOL,
                        adversarial: Optional[Dict[str, Dict[str, torch.Tensor]]] = None,
                        journal=None, fresh: bool = False) -> Dict[str, Any]:
    """Clean and attacked rate-distortion of ``model`` on ``images`` (paper Table 1, Fig. 3).

    Every attack keeps its strongest iterate (``keep_best``) under a decaying step
    (``schedule``), with ``restarts`` starts per image; ``worst_case`` adds, per image, the
    worst result over an ensemble of attacks for the quality side (``worst-psnr``) and the rate
    side (``worst-bpp``), each reported beside the members' own rows with how often each won.

    Args:
        model: CompressAI codec; put in eval mode for the evaluation and restored after. Its
            entropy tables are rebuilt once (``update_entropy_tables``) when ``real``.
        images: list of ``(name, [3,H,W])`` as from ``nic_core.data.load_images``, or a
            [B,3,H,W] tensor; values in [0, 1]. Sizes may differ.
        attacks: attack specs ``kind[@quant][:iterations][/schedule]`` (kinds of
            :data:`nic_core.attacks.ATTACKS`, e.g. ``"psnr:400"``, ``"bpp@noise"``); ``()``
            gives a clean R-D evaluation only. Results are keyed by the spec, with the default
            quant and iterations left out (``"psnr"``).
        eps, lr, quant, seed, to_uint8, restarts, schedule, keep_best, rate_tol, psnr_tol:
            passed to :func:`nic_core.attacks.attack` (``quant`` is the default path).
        iterations: default attack iterations, or a mapping kind -> iterations (the paper uses
            N_p = N_b = 1000 on Kodak, 500 on DIV2K).
        worst_case: attack specs of the ensemble (may repeat ``attacks``; computed once).
        name, description, dataset: labels stored in the results.
        config: plain-valued settings of the run, stored under ``"config"`` (the evaluation's
            own settings are added under ``config["evaluation"]``).
        real: also code every clean and adversarial image into real bitstreams (``bpp`` is
            then the real rate; otherwise it is the estimate).
        progress: tqdm bar over attack iterations (with an ETA).
        batch_size: attack this many equal-size images together; every attack of one gradient
            path and schedule runs as samples of one batch (per-image results do not depend on either with
            ``quant="ste"``).
        adversarial: if a dict is given, it receives ``{spec: {image name: x_adv [3,H,W]}}``
            (e.g. for :func:`nic_core.transfer.transfer_matrix`).
        journal: path of a journal (:mod:`nic_core.journal`, e.g. ``journal_path(out)``): each
            finished image group is appended to it at once, and the groups already there are
            read back instead of recomputed, so a stopped evaluation resumes by calling again
            (per-image results equal an uninterrupted run's). While it runs, SIGTERM / SIGINT
            raise :class:`nic_core.journal.Stopped`. A journal of other settings, weights or
            images is refused (``ValueError``); the caller removes it
            (:func:`nic_core.journal.remove`) once the results are saved.
        fresh: delete an existing ``journal`` first instead of resuming it.

    Returns:
        The results dict described in :mod:`nic_core.results`, plus ``"findings"`` (list of str).
    """
    items = as_images(images)
    specs, members = _merge_specs(attacks, worst_case, quant, iterations, schedule)
    _check_inputs(items, batch_size)
    settings = {"attacks": list(specs), "worst_case": members, "eps": eps,
                "iterations": {k: v[2] for k, v in specs.items()}, "lr": lr, "quant": quant,
                "seed": seed, "to_uint8": to_uint8, "real": real, "n_images": len(items),
                "batch_size": batch_size, "restarts": restarts, "schedule": schedule,
                "keep_best": keep_best, "rate_tol": rate_tol, "psnr_tol": psnr_tol,
                "protocol": PROTOCOL, "weights_sha256": weights_sha256(model)}
    # under torchrun each rank takes every size-th group of images still to do; rows are
    # gathered below, so the results equal a single process's (the same groups, seeds, batches)
    rank, size = distributed.world()
    groups = list(_groups(items, batch_size))
    per_image: List[Optional[Dict[str, Any]]] = [None] * len(items)
    jr = _open_journal(journal, fresh, rank, name, model, items, settings) if journal else None
    if jr is not None:
        for idx in groups:  # the groups a stopped run finished: read back, not recomputed
            adv = jr.tensors(_key(idx)) if _key(idx) in jr and adversarial is not None else {}
            if _key(idx) in jr and adv is not None:  # (a group saved without its images: redone)
                for i, row in zip(idx, jr.rows(_key(idx))):
                    per_image[i] = row
                for key, imgs in adv.items():
                    adversarial.setdefault(key, {}).update(imgs)
    todo = [idx for idx in groups if per_image[idx[0]] is None]
    mine = todo[rank::size]
    kw = dict(eps=eps, lr=lr, seed=seed, to_uint8=to_uint8, keep_best=keep_best,
              restarts=restarts, rate_tol=rate_tol, psnr_tol=psnr_tol)  # of every attack call
    n_done = len(items) - sum(map(len, todo))
    if jr is not None and n_done and rank == 0:
        print(f"resuming: {n_done} of {len(items)} images read from {jr.path}")
    run = lambda: _evaluate_groups(  # noqa: E731
        model, items, mine, specs, members, real, kw, adversarial, f"evaluate {name}",
        not progress or rank > 0, per_image, jr,
        done=n_done * restarts * sum(v[2] for v in specs.values()))
    if jr is None:
        run()
    else:
        saved = lambda: (f"stopped: {sum(len(k.split(',')) for k in jr.records)} of "  # noqa: E731
                         f"{len(items)} images saved in {jr.path}; rerun the same command "
                         "to resume")
        with stop_on_signals(saved):
            run()
    if size > 1:
        _gather(per_image, mine, adversarial)
    blocks = _wc.attack_blocks(per_image, specs, members, eps, lr)
    findings = _wc.findings(per_image, specs, members)
    if findings and progress:
        print(f"{name}: {len(findings)} finding(s):\n  " + "\n  ".join(findings))
    return _results(name, description, dataset, config, settings, per_image, blocks, findings)


def main(argv=None) -> int:
    """``python -m nic_core.evaluate transfer|saturation ...``: :func:`nic_core.transfer.main`."""
    from .transfer import main as transfer_main  # transfer imports this module
    return transfer_main(argv)


if __name__ == "__main__":
    sys.exit(cli.run(main))
