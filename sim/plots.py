"""Figures of Results: each method returns a matplotlib Figure, one line per architecture.

Used by ``predsim run --out``, the report and the notebooks. Nothing here simulates or writes.
"""

from __future__ import annotations

import numpy as np

HOUR_S = 3600.0


def _subplots(**kwargs):
    import matplotlib.pyplot as plt  # imported on use: nothing happens at import time
    return plt.subplots(figsize=(7.5, 4.2), layout="constrained", **kwargs)


def _age_unit(max_age_s: float) -> tuple[float, str]:
    if max_age_s >= 2 * 86400:
        return 86400.0, "days"
    if max_age_s >= 2 * 3600:
        return 3600.0, "hours"
    if max_age_s >= 120:
        return 60.0, "minutes"
    return 1.0, "seconds"


class Plotter:
    """``results.plot.latency_cdf()``, ``.feature_age()``, ``.quality_over_time()``,
    ``.cost_breakdown()``."""

    def __init__(self, results):
        self.results = results

    def latency_cdf(self):
        """Share of requests answered within each latency (log scale), with the SLO marked."""
        fig, ax = _subplots()
        for name, hist in self.results.distributions.items():
            x, y = hist["latency_s"].cdf()
            if x.size:
                ax.step(np.maximum(x, 1e-6) * 1e3, y, where="post", label=name)
        slo = self.results.scenario.slo.latency_p99
        if slo:
            ax.axvline(slo * 1e3, color="grey", linestyle="--", linewidth=1)
            ax.text(slo * 1e3, 0.02, " p99 SLO", color="grey")
        ax.axhline(0.99, color="lightgrey", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("share of requests answered within")
        ax.set_title("Latency distribution")
        ax.set_ylim(0, 1.01)
        ax.legend()
        return fig

    def feature_age(self):
        """Cumulative distribution of feature age over requests with a real prediction."""
        fig, ax = _subplots()
        longest = max((h["feature_age_s"].quantile(1.0) for h in
                       self.results.distributions.values()
                       if h["feature_age_s"].counts.sum()), default=1.0)
        scale, unit = _age_unit(longest)
        for name, hist in self.results.distributions.items():
            x, y = hist["feature_age_s"].cdf()
            if x.size:
                ax.step(x / scale, y, where="post", label=name)
        ax.set_xlabel(f"feature age ({unit})")
        ax.set_ylabel("share of predictions at most this old")
        ax.set_title("Feature freshness")
        ax.set_ylim(0, 1.01)
        ax.legend()
        return fig

    def quality_over_time(self):
        """Mean quality per time bucket (fallbacks included), per architecture."""
        fig, ax = _subplots()
        ts = self.results.timeseries
        for name, frame in ts.groupby("architecture", sort=False):
            ax.plot(frame["bucket_start_s"] / HOUR_S, frame["quality_mean"], label=name)
        ax.set_xlabel("simulated time (hours since start)")
        ax.set_ylabel(f"mean {self.results.scenario.quality.metric}")
        ax.set_title("Prediction quality over time")
        ax.legend()
        return fig

    def cost_breakdown(self):
        """Stacked cost per day by component, per architecture."""
        from sim.results import COST_COMPONENTS
        fig, ax = _subplots()
        summary = self.results.summary
        bottom = np.zeros(len(summary))
        for component in COST_COMPONENTS:
            values = summary[f"cost_usd_per_day_{component}"].to_numpy(float)
            if values.any():
                ax.bar(summary["architecture"], values, bottom=bottom,
                       label=component.replace("_", " "))
                bottom += values
        ax.set_ylabel("US$ per day")
        ax.set_title("Cost per day by component")
        ax.legend()
        return fig
