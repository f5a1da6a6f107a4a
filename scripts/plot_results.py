"""Draw the plots of docs/results.md.

    python scripts/plot_results.py adaptation                     # from docs/data/results.json
    python scripts/plot_results.py training navigation2d RUNS...  # from the runs' metrics.jsonl

``adaptation``: mean return after 0..3 adaptation steps, ours (the mean over seeds, a band of
+- one standard deviation over seeds, and each seed faintly where there are few) against the
paper's, for every benchmark in ``docs/data/results.json`` (the per-seed figures of the tables
in docs/results.md, each written by ``scripts/reproduce.py``).

``training``: the return before and after adaptation at every meta-iteration of the given run
folders (``metrics.jsonl``), grouped by algorithm (the run's ``config.yaml``): the mean over the
runs and the range they span.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from meta_rl.report import figure, save_figure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data" / "results.json"
IMG = ROOT / "docs" / "img"
LABELS = {"maml": "MAML", "metasgd": "Meta-SGD", "reptile": "Reptile",
          "maml_frame_skip_1": "MAML, the paper's time step (frame_skip 1)",
          "maml_frame_skip_5": "MAML, Gymnasium's time step (frame_skip 5)"}


def plot_adaptation(name: str, data: dict, out: Path) -> Path:
    fig = figure()
    ax = fig.add_subplot()
    for label, values in data["paper"].items():
        ax.plot(range(len(values)), values, "k--", marker="s", label=f"paper: {label}")
    for key, seeds in data.items():
        if key in ("paper", "command"):
            continue
        curves = [s["returns"] for s in seeds.values()]
        steps = range(len(curves[0]))
        mean = [statistics.mean(c[k] for c in curves) for k in steps]
        std = [statistics.stdev(c[k] for c in curves) for k in steps]
        (line,) = ax.plot(steps, mean, marker="o", label=f"{LABELS[key]}, {len(curves)} seeds")
        ax.fill_between(steps, [m - s for m, s in zip(mean, std)],
                        [m + s for m, s in zip(mean, std)], color=line.get_color(), alpha=0.15,
                        linewidth=0)
        if len(curves) <= 5:
            for c in curves:
                ax.plot(steps, c, color=line.get_color(), alpha=0.35, linewidth=0.8)
    ax.set_xticks(list(steps))
    return finish(fig, ax, "adaptation steps", "return on 40 held-out tasks (mean ± std over seeds)",
                  f"{name}: return after k adaptation steps", out / f"{name.lower()}-adaptation.png")


def plot_training(name: str, runs: list[Path], out: Path) -> Path:
    import yaml

    groups: dict[str, list[list[dict]]] = {}
    for run in runs:
        algo = yaml.safe_load((run / "config.yaml").read_text())["algo"]
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        groups.setdefault(algo, []).append(records)
    fig = figure(size=(7.2, 4.4))
    ax = fig.add_subplot()
    for algo, histories in groups.items():
        n = min(len(h) for h in histories)
        its = [histories[0][i]["iteration"] for i in range(n)]
        color = None  # the algorithm's colour, taken from its first line
        for key, style in (("post_adapt_return", "-"), ("pre_adapt_return", ":")):
            rows = [[h[i][key] for h in histories] for i in range(n)]
            mean = [statistics.mean(r) for r in rows]
            label = f"{LABELS[algo]}, {'after' if key.startswith('post') else 'before'} adaptation"
            (line,) = ax.plot(its, mean, style, label=f"{label} ({len(histories)} seeds)",
                              color=color)
            color = line.get_color()
            ax.fill_between(its, [min(r) for r in rows], [max(r) for r in rows],
                            color=color, alpha=0.12, linewidth=0)
    return finish(fig, ax, "meta-iteration", "mean training return per episode",
                  f"{name}: meta-training (mean over seeds; band: their range)",
                  out / f"{name.lower()}-training.png")


def finish(fig, ax, xlabel: str, ylabel: str, title: str, path: Path) -> Path:
    """Label, grid and legend ``ax``; save ``fig`` to ``path``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("adaptation", help="adaptation curves from docs/data/results.json")
    p = sub.add_parser("training", help="training curves from run folders")
    p.add_argument("name", help="the benchmark, as the plot's title and file name")
    p.add_argument("runs", nargs="+", type=Path, help="run folders (metrics.jsonl, config.yaml)")
    parser.add_argument("--out", type=Path, default=IMG, help="folder for the PNGs (docs/img)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.command == "adaptation":
        data = json.loads(DATA.read_text())
        names = {"navigation2d": "Navigation2D", "halfcheetahdir": "HalfCheetahDir"}
        paths = [plot_adaptation(names.get(k, k), v, args.out) for k, v in data.items()]
    else:
        paths = [plot_training(args.name, args.runs, args.out)]
    print("\n".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
