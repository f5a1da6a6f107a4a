"""Evaluation reports: a rich table, ``eval.json``, ``adaptation.png``; and a training-curve plot.

Every function takes an :class:`~meta_rl.evaluation.EvalResult` or the dict of its ``to_dict()``
(so ``eval.json`` read back with :func:`~meta_rl.evaluation.load_eval` can be re-rendered).

``eval.json`` (written atomically) has the shape other tools rely on::

    {"family": str, "tasks": N, "seed": S, "steps": [0, .., K],
     "methods": {"meta": {"mean": [K + 1 floats], "ci95": [K + 1 floats], ...}, ...},
     ...}

with only the methods that were run. Each method also carries ``tasks`` (how many it was
measured on), ``per_task`` (``[K + 1][n]``), ``env_steps``, ``wall_s`` and method notes; the top
level also has ``algo``, ``episodes``, ``horizon``, ``run``, ``task_seed``, ``rollout_seed``,
``ci``, ``later_lr_scale``, ``later_lr_decay``, ``batch_unit``, ``env_revision`` (the task
family's revision the tasks ran on), ``trained_env_revision`` (the model's) and ``task_list``.
A non-finite number (a diverged policy) is written as ``null``.

Plots use matplotlib's Agg canvas directly (no pyplot, no display, no global backend switch).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from meta_rl.checkpoint import atomic_write

LABELS = {
    "meta": "meta-learned",
    "random": "random init",
    "pretrained": "pretrained (multi-task)",
    "ppo": "PPO from scratch",
}
"""legend labels of the plot (the table uses the method names, as the CLI does)"""


def _as_dict(result) -> dict:
    return result.to_dict() if hasattr(result, "to_dict") else result


def _finite(value):
    """JSON-safe numbers: non-finite floats become ``None``, containers are walked."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# -- console --------------------------------------------------------------------------------------


def _cell(mean, ci, compact: bool) -> str:
    if mean is None or not math.isfinite(mean):
        return "-"
    if ci is None or not math.isfinite(ci):  # one task: no interval
        return f"{mean:.2f}"
    return f"{mean:.2f}{chr(10) if compact else ' '}± {ci:.2f}"


def _lr_note(d: dict) -> str:
    scale, decay = d.get("later_lr_scale", 1.0), d.get("later_lr_decay", 1.0)
    note = ""
    if scale != 1.0 or decay != 1.0:
        note = f"; steps after the first at {scale:g}× the step size"
        note += "" if decay == 1.0 else f", ×{decay:g} more at each later step"
    if d.get("later_kl") is not None:
        note += (f"; each untrained step moves a task's policy at most {d['later_kl']:g}× as "
                 "far (KL) as its first step did")
    return note


def _step_size(m: dict) -> str:
    """How a method's step size came about: trained, learned, or chosen on validation tasks."""
    lr = m.get("inner_lr")
    if lr is None:
        return "—"  # PPO: its own optimiser
    if isinstance(lr, str):
        return lr
    return f"{lr:g}" + (" (chosen)" if "chosen_on" in m else "")


def _batch_note(d: dict) -> str:
    episodes = d.get("episodes", "?")
    if d.get("batch_unit", "episodes") == "steps":
        return f"batches of {episodes} × {d.get('horizon', '?')} env steps (whole episodes)"
    return f"{episodes} episodes each"


def _split_word(d: dict) -> str:
    """How the caption names the evaluation's tasks: "training" or "held-out"."""
    return "training" if d.get("split") == "train" else "held-out"


def eval_table(result, compact: bool = False) -> Table:
    """Rows: methods; columns: return after step ``0..K`` as ``mean ± 95% CI`` (``compact``: the
    CI on a second line, for narrow consoles)."""
    d = _as_dict(result)
    table = Table(
        title=f"{escape(d['family'])} ({d.get('algo', '?')}): return after k adaptation steps",
        caption=f"{d['tasks']} {_split_word(d)} tasks, {_batch_note(d)}, "
                f"seed {d['seed']}{_lr_note(d)}; mean ± 95% CI over tasks"
                + ("; wall s includes pretraining" if "pretrained" in d["methods"] else ""),
    )
    table.add_column("method", no_wrap=True)
    table.add_column("step size", overflow="fold")
    for k in d["steps"]:
        table.add_column(f"step {k}", justify="right", overflow="fold", min_width=6)
    table.add_column("tasks", justify="right")
    table.add_column("wall s", justify="right")
    for name, m in d["methods"].items():
        cells = [_cell(mean, ci, compact) for mean, ci in zip(m["mean"], m["ci95"])]
        wall = (m.get("wall_s") or 0.0) + (m.get("train_wall_s") or 0.0)
        table.add_row(name, _step_size(m), *cells, str(m.get("tasks", d["tasks"])),
                      f"{wall:.1f}")
    return table


def _percent(mean, ci) -> str:
    if mean is None or not math.isfinite(mean):
        return "-"
    if ci is None or not math.isfinite(ci):
        return f"{100 * mean:.0f}%"
    return f"{100 * mean:.0f}% ± {100 * ci:.0f}"


def success_table(result) -> Table | None:
    """Rows: methods; columns: success rate after step ``0..K`` (the share of a task's episodes
    that succeeded, mean ± 95% CI over tasks); ``None`` when no method recorded success."""
    d = _as_dict(result)
    rows = {name: m["success"] for name, m in d["methods"].items() if m.get("success")}
    if not rows:
        return None
    table = Table(title=f"{escape(d['family'])} ({d.get('algo', '?')}): success rate after k "
                        "adaptation steps",
                  caption="an episode succeeds if the env reported success at any step; "
                          "mean ± 95% CI over tasks")
    table.add_column("method", no_wrap=True)
    for k in d["steps"]:
        table.add_column(f"step {k}", justify="right", overflow="fold")
    for name, s in rows.items():
        table.add_row(name, *(_percent(mean, ci) for mean, ci in zip(s["mean"], s["ci95"])))
    return table


def print_eval(result, console: Console | None = None) -> None:
    """Print :func:`eval_table`, compact when the console is too narrow for one-line cells, and
    a note when the model was trained on another revision of its family than the tasks'."""
    console = console or Console()
    d = _as_dict(result)
    wide = 30 + 18 * len(d["steps"]) + 18  # one-line cells
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = max(console.width, wide)  # a pipe or a log file: never cut a number
    console.print(eval_table(d, compact=console.width < wide))
    success = success_table(d)
    if success is not None:
        console.print(success)
    trained, now = d.get("trained_env_revision", 1), d.get("env_revision", 1)
    if trained != now:
        console.print(f"[bold yellow]note:[/] the model was trained on revision {trained} of "
                      f"{escape(d['family'])}, and these tasks are revision {now}",
                      highlight=False)


# -- files ----------------------------------------------------------------------------------------


def write_eval(result, out_dir: str | Path) -> dict[str, Path]:
    """Write ``eval.json`` and ``adaptation.png`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    d = _finite(_as_dict(result))
    data = json.dumps(d, indent=2, allow_nan=False).encode() + b"\n"
    json_path = out_dir / "eval.json"
    atomic_write(json_path, lambda f: f.write(data))
    png_path = out_dir / "adaptation.png"
    plot_adaptation(d, png_path)
    return {"json": json_path, "png": png_path}


def figure(size=(6.4, 4.4)):
    """A matplotlib figure on the Agg canvas (no pyplot, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: Path) -> None:
    """Write ``fig`` to ``path`` as a PNG, atomically."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))


def plot_adaptation(result, path: str | Path) -> Path:
    """Mean return vs adaptation step per method, with 95% CI bands, to ``path`` (PNG)."""
    d = _as_dict(result)
    path = Path(path)
    success = any(m.get("success") for m in d["methods"].values())
    fig = figure((11.5, 4.4) if success else (6.4, 4.4))
    panels = [("mean return per episode", lambda m: m, 1.0)]
    if success:  # a second panel: the success rate, in percent
        panels.append(("success rate (%)", lambda m: m.get("success"), 100.0))
    steps = d["steps"]
    for i, (ylabel, pick, factor) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for name, m in d["methods"].items():
            values = pick(m)
            if not values:
                continue
            pts = [(k, factor * mu, factor * ci)
                   for k, mu, ci in zip(steps, values["mean"], values["ci95"])
                   if mu is not None and ci is not None]
            if not pts:
                continue
            ks, mus, cis = zip(*pts)
            label = f"{LABELS.get(name, name)} (n={m.get('tasks', d['tasks'])})"
            (line,) = ax.plot(ks, mus, marker="o", label=label)
            ax.fill_between(ks, [a - b for a, b in zip(mus, cis)],
                            [a + b for a, b in zip(mus, cis)],
                            color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xticks(steps)
        ax.set_xlabel("adaptation steps k" + (" (PPO: k × episodes × horizon env steps)"
                                              if "ppo" in d["methods"] else ""))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend()
    fig.suptitle(f"{d['family']}: {d.get('algo', '?')} vs baselines "
                 f"({d['tasks']} {_split_word(d)} tasks, 95% CI)")
    save_figure(fig, path)
    return path


def plot_training(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Pre- and post-adaptation return vs iteration from ``metrics.jsonl`` to ``training.png``."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise ValueError(f"no metrics.jsonl in {run_dir} (is it a run directory?)")
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not records:
        raise ValueError(f"{metrics} is empty: the run has no completed iteration")
    config = {}
    if (run_dir / "config.yaml").is_file():
        import yaml

        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    fig = figure()
    ax = fig.add_subplot()
    its = [r["iteration"] for r in records]
    ax.plot(its, [r["pre_adapt_return"] for r in records], label="before adaptation")
    ax.plot(its, [r["post_adapt_return"] for r in records], label="after adaptation")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("mean return per episode")
    ax.set_title(f"{config.get('env', '?')}: {config.get('algo', '?')} meta-training")
    ax.grid(alpha=0.3)
    ax.legend()
    path = Path(out) if out is not None else run_dir / "training.png"
    save_figure(fig, path)
    return path
