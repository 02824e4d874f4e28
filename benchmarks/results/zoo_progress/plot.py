"""Where the zoo models stand against issue 31's targets as campaign CPU minutes accumulate, and what a fit
predicts.

``progress.csv`` holds one row per side-run measurement (each row names the output file and commit it comes
from; a new side run adds its rows). This script draws ``progress.png`` (one panel per target, log-scaled
CPU minutes, the target as a dashed line) and prints, for every series with at least three points, a
least-squares fit ``value = a + b ln(minutes)`` and the CPU minutes at which it would reach the target. The
fit is an extrapolation from a handful of noisy points (a side run scores 3-50 test images): read it as an
order of magnitude, and as "never" when the slope points away from the target.

To add points after a campaign session: commit the zoo, run the side runs from a checkout of that commit (so a
running campaign cannot change the zoo under them: ``git worktree add /tmp/wt HEAD`` and ``PYTHONPATH=/tmp/wt``)
— ``meta-prior/zoo_sr/run.py``, ``meta-prior/zoo_mri/run.py`` (~30 CPU min), ``metadip/zoo_speedup/run.py``,
``zoo_side_runs/run.py`` —, copy their outputs back, add one row per measurement here, and rerun this script.

Run: python benchmarks/results/zoo_progress/plot.py > benchmarks/results/zoo_progress/output.txt
"""

import csv
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter, ScalarFormatter
import numpy as np

from deepinv_meta.figures import save_figure

here = Path(__file__).parent
rows = list(csv.DictReader(open(here / "progress.csv")))
panels = defaultdict(lambda: defaultdict(list))
for row in rows:
    panels[row["measure"]][row["model"]].append(row)


def fit(points):
    """Least squares of value on ln(minutes); returns (a, b)."""
    t = np.log([float(p["cpu_minutes"]) for p in points])
    v = np.array([float(p["value"]) for p in points])
    b, a = np.polyfit(t, v, 1)
    return a, b


def minutes_to_target(a, b, target, better):
    """CPU minutes at which the fit reaches the target, or None when it moves away from it."""
    if (b > 0) != (better == "higher") or b == 0:
        return None
    return math.exp((target - a) / b)


print(f"{'measure':<55} {'model':<24} {'points':>6} {'last':>14} {'target':>7}  fit and prediction")
fig, axes = plt.subplots(2, 4, figsize=(18, 7.5))
for ax, (measure, series) in zip(axes.flat, panels.items()):
    target, better = None, None
    for model, points in series.items():
        points.sort(key=lambda p: float(p["cpu_minutes"]))
        minutes = [float(p["cpu_minutes"]) for p in points]
        values = [float(p["value"]) for p in points]
        target, better = float(points[0]["target"]), points[0]["better"]
        ax.plot(minutes, values, "o-", label=model)
        last = f"{values[-1]:g} @ {minutes[-1]:g} min"
        prediction = "fewer than 3 points: no fit"
        if len(points) >= 3:
            a, b = fit(points)
            reach = minutes_to_target(a, b, target, better)
            grid = np.geomspace(minutes[0], max(minutes[-1] * 8, minutes[-1] + 1), 50)
            ax.plot(grid, a + b * np.log(grid), ":", color=ax.lines[-1].get_color(), alpha=0.7)
            if reach is None:
                where = "moving away from the target"
            elif reach > 60 * 1e4:
                where = "target beyond 10,000 CPU hours"
            else:
                where = f"target at ~{reach / 60:.1f} CPU hours"
            prediction = f"{b:+.3f} per e-fold of minutes; {where}"
        print(f"{measure:<55} {model:<24} {len(points):>6} {last:>14} {target:>7g}  {prediction}")
    ax.axhline(target, ls="--", color="k", lw=1, label=f"target ({'at least' if better == 'higher' else 'at most'})")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("campaign CPU minutes (1 thread)")
    ax.set_title(measure, fontsize=9)
    ax.legend(fontsize=7)
for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
fig.suptitle("Zoo models on the benchmarks' protocols vs campaign CPU time (dotted: fit a + b ln t)", fontsize=10)
save_figure(fig, here / "progress.png")
print(f"figure: {here / 'progress.png'}")
