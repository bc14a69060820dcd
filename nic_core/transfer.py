"""Transfer of adversarial examples between models, and attack saturation.

:func:`transfer_matrix` codes the images attacked on each source model with every target model;
a target hurt more by a transferred attack than by the white-box attack on itself is flagged as
likely gradient masking. :func:`saturation` measures an attack's strength against its number of
iterations. Both reuse :func:`nic_core.evaluate.evaluate_robustness`'s measurements and write the
same plain JSON (:mod:`nic_core.results`); :func:`main` is the CLI
``python -m nic_core.evaluate transfer|saturation``.
"""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from tqdm.auto import tqdm

from . import attacks as _attacks
from . import stats
from .evaluate import Images, as_images, measure_coding, evaluate_robustness
from .journal import Journal, journal_path, remove, stop_on_signals, tensors_sha256, weights_sha256
from .metrics import update_entropy_tables
from .results import mean_or_none, plain_values, save_results

__all__ = ["transfer_matrix", "saturation", "main"]

Items = List[Tuple[str, torch.Tensor]]
PerImage = Dict[str, Dict[str, Dict[str, Dict[str, float]]]]  # source -> target -> image -> delta


def transfer_matrix(models: Mapping[str, torch.nn.Module], images: Images, attack: str = "psnr",
                    eps: float = 5e-4, iterations: int = 100, quant: str = "ste", seed: int = 0,
                    adversarial: Optional[Mapping[str, Mapping[str, torch.Tensor]]] = None,
                    progress: bool = True, tol_db: float = 0.1, tol_rate: float = 0.01,
                    journal=None, fresh: bool = False, **attack_kw) -> Dict[str, Any]:
    """Transfer attacks: images attacked on each source model, coded by every target model.

    Entry ``[s][t]`` is the mean change (real bitstreams) of target ``t`` under the attack
    crafted on source ``s``; the diagonal is the white-box attack. A target hurt *more* by a
    transferred attack than by the white-box attack on itself (paired per image, the 95 %
    bootstrap interval of the difference excluding zero, and the mean difference at least
    ``tol_db`` dB or ``tol_rate`` of the target's clean rate) is flagged as likely gradient
    masking (Athalye et al. 2018): its own gradients mislead the attack.

    Args:
        models: ``{name: codec}``, sources and targets alike.
        images: as for :func:`nic_core.evaluate.evaluate_robustness`.
        attack: one attack spec (``kind[@quant][:iterations]``).
        adversarial: optional precomputed ``{source name: {image name: x_adv}}`` (e.g. filled
            by :func:`nic_core.evaluate.evaluate_robustness` with the same spec); missing
            sources are attacked.
        journal, fresh: a journal path (:mod:`nic_core.journal`): each image attacked on a
            source is journalled at once and read back when called again (a stopped run
            resumes; SIGTERM / SIGINT raise :class:`nic_core.journal.Stopped`); ``fresh``
            deletes an old one first. The caller removes it once the results are saved.
        attack_kw: further arguments of :func:`nic_core.attacks.attack` (restarts, ...).

    Returns:
        ``{"attack", "eps", "models", "delta-psnr": [[...]], "delta-bpp": [[...]],
        "per_image": {source: {target: {image: {"delta-psnr", "delta-bpp"}}}}, "masking": [...]}``
    """
    items = as_images(images)
    kind, q, it, sch = _attacks.parse_spec(attack, quant, iterations)
    if sch is not None:
        attack_kw["schedule"] = sch
    names = list(models)
    if not names:
        raise ValueError("transfer_matrix needs at least one model")
    jr = None
    if journal:
        header = {"what": "transfer_matrix", "attack": attack, "kind": kind, "eps": eps,
                  "iterations": it, "quant": q, "seed": seed, "attack_kw": attack_kw,
                  "models": {n: weights_sha256(m) for n, m in models.items()},
                  "images": [n for n, _ in items], "images_sha256": tensors_sha256(items)}
        jr = Journal(journal, header, fresh=fresh).load()
    bar = tqdm(total=len(names) * len(items), desc=f"transfer {attack}", disable=not progress)
    stop = (stop_on_signals(lambda: f"stopped: {len(jr)} attacked images saved in {jr.path}; "
                            "rerun the same command to resume")
            if jr is not None else contextlib.nullcontext())
    with stop:
        adv_by_source = {src: _source_adversarial(models[src], src, items, adversarial, bar,
                                                  kind, jr, eps=eps, iterations=it, quant=q,
                                                  seed=seed, **attack_kw)
                         for src in names}
    bar.close()
    per: PerImage = {}
    clean_bpp: Dict[str, float] = {}
    for tgt in names:
        _code_on_target(models[tgt], tgt, names, items, adv_by_source, per, clean_bpp)
    mat = {k: [[mean_or_none(v[k] for v in per[s][t].values()) for t in names] for s in names]
           for k in ("delta-psnr", "delta-bpp")}
    masking = _masking(per, names, _attacks.side(kind), clean_bpp, tol_db, tol_rate)
    for f in masking:
        print(f"GRADIENT MASKING? {f['target']!r} is hurt more by the {attack} attack crafted on "
              f"{f['source']!r} ({f['key']} {f['transfer']:+.3f}) than by the white-box attack "
              f"on itself ({f['white-box']:+.3f})")
    return plain_values({"attack": attack, "eps": eps, "iterations": it, "quant": q, "models": names,
                   **mat, "clean-bpp": clean_bpp, "tol_db": tol_db, "tol_rate": tol_rate,
                   "per_image": per, "masking": masking})


def _source_adversarial(model: torch.nn.Module, src: str, items: Items,
                        adversarial: Optional[Mapping[str, Mapping[str, torch.Tensor]]], bar,
                        kind: str, jr: Optional[Journal] = None,
                        **attack_kw) -> Dict[str, torch.Tensor]:
    """``{image name: x_adv}`` crafted on source ``src``: the given ones, else attacked here
    (each image journalled in ``jr`` at once; those already there read back)."""
    given = (adversarial or {}).get(src)
    if given is not None:
        missing = [n for n, _ in items if n not in given]
        if missing:
            raise ValueError(f"adversarial images of {src!r} lack {missing}")
        out = {n: given[n] for n, _ in items}
    else:
        dev = next(model.parameters()).device
        out = {}
        for n, t in items:
            key = f"{src}\t{n}"
            saved = jr.tensors(key) if jr is not None and key in jr else None
            if saved is None:
                res = _attacks.attack(model, t[None].to(dev), kind, **attack_kw)
                saved = {"x_adv": res["x_adv"][0].detach().cpu()}
                if jr is not None:
                    jr.append(key, None, saved)
            out[n] = saved["x_adv"]
            bar.update(1)
        return out
    bar.update(len(items))
    return out


def _code_on_target(model: torch.nn.Module, tgt: str, names: List[str], items: Items,
                    adv_by_source: Mapping[str, Mapping[str, torch.Tensor]], per: PerImage,
                    clean_bpp: Dict[str, float]) -> None:
    """Code every image, clean and as attacked on each source, with target ``tgt`` (real
    bitstreams, eval mode, its modes given back after): ``per[src][tgt]`` and its clean rate."""
    dev = next(model.parameters()).device
    modes = [(mod, mod.training) for mod in model.modules()]
    model.eval()
    update_entropy_tables(model)
    try:
        for n, t in items:
            x = t[None].to(dev)
            c = measure_coding(model, x, x, True)
            clean_bpp[tgt] = clean_bpp.get(tgt, 0.0) + c["bpp"][0] / len(items)
            for src in names:
                a = measure_coding(model, x, adv_by_source[src][n][None].to(dev), True)
                per.setdefault(src, {}).setdefault(tgt, {})[n] = {
                    "delta-psnr": a["psnr-rgb"][0] - c["psnr-rgb"][0],
                    "delta-bpp": a["bpp"][0] - c["bpp"][0]}
    finally:
        for mod, tr in modes:
            mod.training = tr


def _masking(per: PerImage, names: List[str], side: Optional[str], clean_bpp: Mapping[str, float],
             tol_db: float, tol_rate: float) -> List[Dict[str, Any]]:
    """The (target, source) pairs where the transferred attack hurt the target significantly
    more than the white-box one (paired bootstrap over images; see :func:`transfer_matrix`)."""
    masking = []
    key = "delta-psnr" if side == "psnr" else "delta-bpp"
    sign = 1.0 if side == "psnr" else -1.0  # more harm: lower delta-psnr / higher delta-bpp
    for tgt in names:
        own = per[tgt][tgt]
        for src in names:
            if src == tgt or side is None:
                continue
            diffs = [sign * (per[src][tgt][n][key] - own[n][key]) for n in own]
            ci = stats.bootstrap_ci(diffs)
            tol = tol_db if side == "psnr" else tol_rate * clean_bpp[tgt]
            if ci["hi"] < 0 and ci["mean"] <= -tol:
                masking.append({"target": tgt, "source": src, "key": key,
                                "transfer": mean_or_none(per[src][tgt][n][key] for n in own),
                                "white-box": mean_or_none(own[n][key] for n in own),
                                "ci": sorted([sign * ci["lo"], sign * ci["hi"]])})
    return masking


def saturation(model: torch.nn.Module, images: Images, attack: str = "psnr",
               iterations: Sequence[int] = (50, 100, 200, 400), eps: float = 5e-4,
               tol_db: float = 0.1, tol_rate: float = 0.01, **kw) -> Dict[str, Any]:
    """Attack strength against its number of iterations (one evaluation, all counts batched).

    ``saturated_at`` is the first count after which the next one (e.g. a doubling) changes the
    mean attacked PSNR by less than ``tol_db`` (psnr-side) or the mean rate by less than
    ``tol_rate`` relative (bpp-side); ``None`` when the sweep never gets there: the attack is
    not saturated and more iterations are needed for a trustworthy number.
    """
    counts = sorted({int(i) for i in iterations})
    if len(counts) < 2:
        raise ValueError("a saturation sweep needs at least 2 iteration counts")
    kind, q, _, sch = _attacks.parse_spec(attack, kw.pop("quant", "ste"))
    specs = [f"{kind}@{q}:{n}" + (f"/{sch}" if sch else "") for n in counts]
    res = evaluate_robustness(model, images, attacks=specs, eps=eps, quant=q, iterations=counts[0],
                              **kw)
    keys = list(res["attacks"])
    rows = [{"iterations": n, **{k: res["attacks"][key]["results"][k][0]
                                 for k in ("psnr-rgb", "bpp", "delta-psnr", "delta-bpp")},
             "held": res["attacks"][key]["held"]}  # images that held the other quantity
            for n, key in zip(counts, keys)]
    sat = _saturated_at(rows, _attacks.side(kind), tol_db, tol_rate)
    return {"name": res["name"], "attack": attack, "eps": eps, "rows": rows,
            "saturated_at": sat, "tol_db": tol_db, "tol_rate": tol_rate,
            "clean": {k: res["results"][k][0] for k in ("psnr-rgb", "bpp")},
            "n_images": len(res["per_image"])}


def _saturated_at(rows, side, tol_db: float, tol_rate: float) -> Optional[int]:
    """The smallest count from which every further step of the sweep changes the mean attacked
    PSNR by less than ``tol_db`` (rate: relatively by less than ``tol_rate``)."""
    sat = None
    for a, b in reversed(list(zip(rows, rows[1:]))):
        if side == "bpp":
            ok = abs(b["bpp"] / a["bpp"] - 1) < tol_rate
        else:
            ok = abs(b["psnr-rgb"] - a["psnr-rgb"]) < tol_db
        if not ok:
            break
        sat = a["iterations"]
    return sat


def _named_paths(pairs: Sequence[str], what: str) -> Dict[str, str]:
    out = {}
    for p in pairs:
        name, sep, path = p.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise SystemExit(f"{what} must be NAME=PATH, got {p!r}")
        if not Path(path).is_file():
            raise SystemExit(f"{what} {name!r}: file not found: {path}")
        out[name.strip()] = path.strip()
    return out


def evaluate_model(target: str, out, params=None, pairs=(), fresh: bool = False) -> int:
    """Evaluate a zoo id or a checkpoint file with :data:`nic_core.config.PROTOCOL` (``params`` /
    ``pairs`` override it), resumably, into ``out``; the results' config describes the model's
    own weights (architecture from its checkpoint, N and M read off the weights) and records
    their sha256."""
    from . import checkpoints, config, runs, zoo
    from .download import sha256_file

    if Path(target).is_file():
        file, name, digest = Path(target), Path(target).parent.name or Path(target).stem, None
    else:
        file, name, digest = zoo.path(target), target, zoo.verify(target)
    ckpt = checkpoints.load_checkpoint(file)
    own = {k: v for k, v in ckpt.get("config", {}).items() if k in ("model", "lmbda", "quality")}
    cfg = config.validate("pretrain", {**config.PROTOCOL, **own, **zoo.width(ckpt["state_dict"]),
                                       "run_dir": str(file.parent),
                                       **config.cli_params(params, pairs)})
    device = runs.setup(cfg)
    model = checkpoints.load_model(file, device=device)
    what = (f"{ckpt.get('stage') or 'a'} model {file} ({cfg['model']}, N {cfg['N']}, M {cfg['M']}; "
            f"file sha256 {digest or sha256_file(file)})")
    runs.evaluate_run(model, cfg, name=name, out=Path(out), resumable=True, fresh=fresh,
                      description=what)
    print(f"saved {out}")
    return 0


def main(argv=None) -> int:
    """``python -m nic_core.evaluate transfer|saturation ...`` (evaluation settings from ``-f`` /
    ``-p`` like ``python -m nic_core.runs``: eval_set, eval_limit, eval_crop, eps, ...).

    transfer: ``--model NAME=CHECKPOINT`` (two or more) ``[--adversarial NAME=ADV.pt]`` (saved
    by ``python -m nic_core.runs ... --eval-only --adversarial``) ``--attack SPEC``.
    saturation: ``--model NAME=CHECKPOINT`` (one or more) ``--attack SPEC --iterations 50,100,...``.
    model: ``MODEL`` (a zoo id, :mod:`nic_core.zoo`, or a checkpoint file) ``--out OUT``: the
    protocol's evaluation (:data:`nic_core.config.PROTOCOL`), resumable.
    """
    from . import checkpoints, config, runs, viz  # CLI only: runs and viz import evaluate

    ap = argparse.ArgumentParser(prog="python -m nic_core.evaluate", description=main.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["transfer", "saturation", "model"])
    ap.add_argument("target", nargs="?", metavar="MODEL", help="model: a zoo id or a checkpoint")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=CHECKPOINT")
    ap.add_argument("--adversarial", action="append", default=[], metavar="NAME=ADV.pt")
    ap.add_argument("--attack", default="psnr", help="attack spec kind[@quant][:iters][/schedule]")
    ap.add_argument("--iterations", default="50,100,200,400", help="saturation: counts")
    ap.add_argument("-f", "--params", help="YAML parameter file (evaluation settings)")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("--out", required=True, help="results JSON")
    ap.add_argument("--plot", help="also save a figure (PNG)")
    ap.add_argument("--fresh", action="store_true", help="delete the journal of a stopped run "
                    "(OUT.journal, OUT.NAME.journal) instead of resuming it")
    args = ap.parse_args(argv)
    if args.command == "model":
        if not args.target:
            ap.error("model needs MODEL: a zoo id (python -m nic_core.zoo) or a checkpoint")
        return evaluate_model(args.target, args.out, args.params, args.p, fresh=args.fresh)
    cfg = config.validate("pretrain", config.cli_params(args.params, args.p))
    device = runs.setup(cfg)
    ckpts = _named_paths(args.model, "--model")
    if not ckpts or (args.command == "transfer" and len(ckpts) < 2):
        ap.error("transfer needs two or more --model NAME=CHECKPOINT; saturation one or more")
    models = {n: checkpoints.load_model(p, device=device) for n, p in ckpts.items()}
    images, desc = runs.test_images(cfg)
    kw = dict(eps=cfg["eps"], quant=cfg["attack_quant"], seed=cfg["seed"])
    if args.command == "transfer":
        adv = {n: torch.load(p, weights_only=True) for n, p in
               _named_paths(args.adversarial, "--adversarial").items()}
        spec_key = args.attack
        given = {n: a[spec_key] for n, a in adv.items() if spec_key in a}
        for n, a in adv.items():
            if spec_key not in a:
                raise SystemExit(f"{n}'s adversarial file has no {spec_key!r} (has {list(a)})")
        res = transfer_matrix(models, images, args.attack, iterations=cfg["attack_iterations"],
                              adversarial=given, progress=cfg["progress"],
                              schedule=cfg["attack_schedule"], lr=cfg["attack_lr"],
                              journal=journal_path(args.out), fresh=args.fresh, **kw)
        res["dataset"] = desc
        fig = viz.plot_transfer(res) if args.plot else None
    else:
        counts = [int(c) for c in args.iterations.split(",") if c.strip()]
        res = {"dataset": desc, "sweeps": [
            {**saturation(m, images, args.attack, counts, name=n, progress=cfg["progress"],
                          schedule=cfg["attack_schedule"], lr=cfg["attack_lr"],
                          batch_size=cfg["eval_batch"], journal=journal_path(args.out, n),
                          fresh=args.fresh, **kw), "name": n}
            for n, m in models.items()]}
        fig = viz.plot_saturation(res["sweeps"]) if args.plot else None
    save_results(res, args.out)
    for j in [journal_path(args.out)] + [journal_path(args.out, n) for n in models]:
        remove(j)  # the results are saved: the journals of the work are done with
    print(f"saved {args.out}")
    if fig is not None:
        fig.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"saved {args.plot}")
    return 0
