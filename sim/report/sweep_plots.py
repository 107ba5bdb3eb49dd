"""Figures of a sweep table (:func:`sim.studies.sweep.run_sweep`): each function returns a matplotlib
Figure. Nothing here simulates or writes.

- :func:`metric_vs_parameter`: a metric against one swept parameter, a line and a 95% CI band
  per architecture (and per combination of the other swept keys, when there are any).
- :func:`cost_vs_quality`: every point and architecture as cost per day against quality, with the
  Pareto front (nothing both cheaper and better) marked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.results import catalogue
from sim.studies.designs import magnitude
from sim.studies.sweep import pareto_mask, swept_keys
from sim.units import parse_duration, parse_rate

_MAX_LINES = 24


def _subplots():
    import matplotlib.pyplot as plt  # imported on use: nothing happens at import time
    return plt.subplots(figsize=(7.5, 4.2), layout="constrained")


def label(column: str) -> str:
    """A readable axis label for a summary column (the catalogue's label)."""
    return catalogue.label(column)


def _x_values(series: pd.Series) -> np.ndarray:
    return np.array([magnitude(v) for v in series], dtype=float)


def _x_label(table: pd.DataFrame, parameter: str) -> str:
    """The parameter, with the unit its text values were converted to (s, per s)."""
    text = [v for v in table[parameter] if isinstance(v, str)]
    if not text:
        return parameter
    for unit, parse in (("s", parse_duration), ("per s", parse_rate)):
        try:
            for value in text:
                parse(value)
        except ValueError:
            continue
        return f"{parameter} ({unit})"
    return parameter


def _concerns(key: str, architecture: str) -> bool:
    """Whether a swept key can change ``architecture``: keys outside ``architectures.`` change
    every architecture; ``architectures.NAME....`` only NAME."""
    parts = key.split(".")
    return not (parts[0] == "architectures" and len(parts) > 2 and parts[1] != architecture)


def metric_vs_parameter(table: pd.DataFrame, parameter: str,
                        metric: str = "net_value_usd_per_day", *,
                        architectures: list[str] | None = None):
    """``metric`` (mean, with its 95% CI as a band) against the swept ``parameter``: one line per
    architecture, and per combination of the other swept keys when the sweep has several.
    Keys of *another* architecture (``architectures.OTHER....``) do not change an
    architecture's configuration: its line is drawn at their first value only.

    Values written with units (``6h``, ``50/s``) are plotted by magnitude (seconds, per second).
    A group with a single point (random designs) is drawn as a marker with an error bar.
    """
    if parameter not in table:
        raise ValueError(f"{parameter!r} is not a column of the sweep table "
                         f"(swept keys: {', '.join(swept_keys(table)) or 'none'})")
    if metric not in table:
        raise ValueError(f"{metric!r} is not a column of the sweep table")
    fig, ax = _subplots()
    others = [k for k in swept_keys(table) if k != parameter and table[k].nunique() > 1]
    names = architectures or list(dict.fromkeys(table["architecture"]))
    ci_column = f"{metric}_ci95"
    lines = 0
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    for name in names:
        rows = table[table["architecture"] == name]
        own = [k for k in others if _concerns(k, name)]
        for key in others:
            if key not in own:
                rows = rows[rows[key] == table[key].iloc[0]]
        groups = rows.groupby(own, sort=False, dropna=False) if own else [((), rows)]
        for i, (values, group) in enumerate(groups):
            if lines >= _MAX_LINES:
                break
            x = _x_values(group[parameter])
            y = group[metric].to_numpy(float)
            ci = (group[ci_column].to_numpy(float) if ci_column in group
                  else np.full(y.size, np.nan))
            keep = np.isfinite(x) & np.isfinite(y)
            if not keep.any():
                continue
            order = np.argsort(x[keep], kind="stable")
            x, y, ci = x[keep][order], y[keep][order], ci[keep][order]
            values = values if isinstance(values, tuple) else (values,)
            suffix = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(own, values))
            text = f"{name} ({suffix})" if suffix else name
            style = {"color": colours[name], "linestyle": ["-", "--", ":", "-."][i % 4]}
            if x.size > 1:
                ax.plot(x, y, marker="o", label=text, **style)
                band = np.isfinite(ci)
                if band.any():
                    ax.fill_between(x[band], (y - ci)[band], (y + ci)[band],
                                    color=colours[name], alpha=0.18, linewidth=0)
            else:
                ax.errorbar(x, y, yerr=np.nan_to_num(ci) if np.isfinite(ci).any() else None,
                            fmt="o", capsize=4, label=text, color=colours[name])
            lines += 1
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
           for v in table[parameter]):
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(_x_label(table, parameter))
    ax.set_ylabel(label(metric))
    reps = int(table["replications"].max()) if "replications" in table and len(table) else 1
    ax.set_title(f"{label(metric)} against {parameter.rsplit('.', 1)[-1]}" +
                 (f" (mean ± 95% CI, {reps} replications)" if reps > 1 else ""))
    if lines:
        ax.legend(fontsize=8)
    return fig


def cost_vs_quality(table: pd.DataFrame, cost: str = "cost_usd_per_day",
                    quality: str = "quality_mean"):
    """Every row (point × architecture) as cost per day against quality, coloured by
    architecture; the Pareto front (no other row both cheaper and better) is circled and joined.
    Error bars are 95% CIs where the table has them."""
    fig, ax = _subplots()
    x = table[cost].to_numpy(float)
    y = table[quality].to_numpy(float)
    front = pareto_mask(x, y)
    for i, name in enumerate(dict.fromkeys(table["architecture"])):
        rows = (table["architecture"] == name).to_numpy()
        xerr = table[f"{cost}_ci95"].to_numpy(float)[rows] if f"{cost}_ci95" in table else None
        yerr = table[f"{quality}_ci95"].to_numpy(float)[rows] if f"{quality}_ci95" in table \
            else None
        ax.errorbar(x[rows], y[rows],
                    xerr=np.nan_to_num(xerr) if xerr is not None else None,
                    yerr=np.nan_to_num(yerr) if yerr is not None else None,
                    fmt="o", markersize=5, capsize=2, alpha=0.8, color=f"C{i % 10}", label=name)
    if front.any():
        order = np.argsort(x[front], kind="stable")
        fx, fy = x[front][order], y[front][order]
        ax.step(fx, fy, where="post", color="black", linewidth=1.2,
                label=f"Pareto front ({int(front.sum())} of {int(np.isfinite(x).sum())})")
        ax.scatter(fx, fy, s=140, facecolors="none", edgecolors="black", linewidths=1.5,
                   zorder=3)
    ax.set_xlabel(label(cost))
    ax.set_ylabel(label(quality))
    ax.set_title("Cost against quality: the Pareto front")
    ax.legend(fontsize=8)
    return fig
