"""Figures of Results: each method returns a matplotlib Figure, one line per architecture.

Used by ``predsim run --out``, the report and the notebooks. Nothing here simulates or writes.
"""

from __future__ import annotations

import numpy as np

from sim.units import HOUR_S


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
    ``.serving_load()``, ``.replicas()``, ``.cost_breakdown()``, ``.net_value()``."""

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
        """Cumulative distribution of each feature class's age over requests with a real
        prediction: batch features solid, stream features dashed, one colour per
        architecture."""
        fig, ax = _subplots()
        classes = (("batch_feature_age_s", "-", "batch"), ("stream_feature_age_s", "--", "stream"))
        hists = [(name, key, style, label, hist[key])
                 for name, hist in self.results.distributions.items()
                 for key, style, label in classes if hist[key].counts.sum()]
        longest = max((h.quantile(1.0) for *_, h in hists), default=1.0)
        scale, unit = _age_unit(longest)
        colours = {name: f"C{i}" for i, name in enumerate(self.results.distributions)}
        streams = any(key == "stream_feature_age_s" for _, key, *_ in hists)
        for name, key, style, label, hist in hists:
            x, y = hist.cdf()
            if streams:  # seconds and hours on one axis: a log scale
                x = np.maximum(x, 1e-3)
            ax.step(x / scale, y, where="post", linestyle=style, color=colours[name],
                    label=f"{name}, {label} features" if streams else name)
        if streams:
            ax.set_xscale("log")
            unit += ", log scale"
        ax.set_xlabel(f"feature age ({unit})")
        ax.set_ylabel("share of predictions at most this old")
        ax.set_title("Feature freshness, by class of features" if streams else
                     "Feature freshness")
        ax.set_ylim(0, 1.01)
        ax.legend()
        return fig

    def freshness_over_time(self):
        """Mean age per time bucket of each architecture's batch data (batch features or stored
        predictions) and, in a panel of its own scale below, of its stream features, with the
        pipelines' incidents: stream outages shaded, failed or preempted runs ticked along the
        bottom; each class's freshness bound (``slo.freshness``) dotted."""
        import matplotlib.pyplot as plt
        ts = self.results.timeseries
        sc = self.results.scenario
        panels = [(what, column, words) for what, column, words in (
            ("batch", "batch_feature_age_s_mean", "batch features or stored predictions"),
            ("stream", "stream_feature_age_s_mean", "stream features"))
            if ts[column].notna().any()] or [
            ("batch", "batch_feature_age_s_mean", "batch features or stored predictions")]
        fig, axes = plt.subplots(len(panels), 1, sharex=True, layout="constrained",
                                 figsize=(7.5, 4.2 if len(panels) == 1 else 6.4), squeeze=False)
        names = list(dict.fromkeys(ts["architecture"]))
        colours = {name: f"C{i}" for i, name in enumerate(names)}
        incidents = self.results.incidents
        if incidents is not None:  # those in the measured window
            incidents = incidents[(incidents["end_s"] >= sc.warmup) &
                                  (incidents["start_s"] <= sc.end_s)]
        many = self.results.replications > 1
        for ax, (what, column, words) in zip(axes[:, 0], panels):
            bound = sc.slo.freshness_bound(what)
            ages = ts[column].to_numpy(float)
            longest = max(np.nanmax(ages) if np.isfinite(ages).any() else 1.0, bound or 0.0)
            scale, unit = _age_unit(longest)
            for name, frame in ts.groupby("architecture", sort=False):
                if frame[column].notna().any():
                    ax.plot(frame["bucket_start_s"] / HOUR_S, frame[column] / scale, label=name,
                            color=colours[name])
            # each panel its own class's incidents: stream outages, or failed and preempted
            # scoring runs and materialisations
            mine = None if incidents is None else incidents[
                (incidents["component"] == "stream_processing") == (what == "stream")]
            if mine is not None and len(mine):
                for row in mine.itertuples():
                    colour = colours.get(row.architecture, "grey")
                    if row.end_s > row.start_s:
                        ax.axvspan(row.start_s / HOUR_S, row.end_s / HOUR_S, color=colour,
                                   alpha=0.15, linewidth=0)
                    else:
                        ax.plot([row.start_s / HOUR_S], [0], marker="|", markersize=12,
                                color=colour, clip_on=False)
                any_rep = " (any replication)" if many else ""
                if (mine["end_s"] > mine["start_s"]).any():
                    ax.plot([], [], color="grey", alpha=0.4, linewidth=6,
                            label="stream outage" + any_rep)
                if (mine["end_s"] <= mine["start_s"]).any():
                    ax.plot([], [], color="grey", marker="|", linestyle="none", markersize=12,
                            label="failed or preempted run" + any_rep)
            if bound:
                ax.axhline(bound / scale, color="black", linestyle=":", linewidth=1,
                           label="freshness bound (slo.freshness)")
            ax.set_ylabel(f"mean age ({unit})")
            ax.set_title(f"Age of {words}", fontsize="medium")
            ax.legend(fontsize="small")
        axes[-1, 0].set_xlim(sc.warmup / HOUR_S, sc.end_s / HOUR_S)
        axes[-1, 0].set_xlabel("simulated time (hours since start)")
        fig.suptitle("Freshness over time, and what went wrong")
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

    def serving_load(self):
        """Per time bucket: arrival rate, serving replicas, their utilisation and the mean
        number of requests waiting, for the architectures that serve online."""
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(4, 1, figsize=(7.5, 8.0), sharex=True, layout="constrained")
        ts = self.results.timeseries
        panels = (("arrival_rate_per_s", "requests / s", "Load"),
                  ("replicas", "replicas", "Serving replicas (paid for)"),
                  ("utilization", "share busy", "Utilisation of ready replicas"),
                  ("queue_length_mean", "requests waiting", "Mean queue length"))
        online = [name for name, frame in ts.groupby("architecture", sort=False)
                  if frame["replicas"].notna().any()]
        scaled = set(self._autoscaled())
        for ax, (column, unit, title) in zip(axes, panels):
            names = online if column != "arrival_rate_per_s" else online[:1] or \
                list(ts["architecture"].unique()[:1])
            for k, name in enumerate(names):
                frame = ts[ts["architecture"] == name]
                ax.step(frame["bucket_start_s"] / HOUR_S, frame[column], where="post",
                        label=name, color=f"C{k}")
                if column == "replicas" and name in scaled:  # the autoscaler's view too
                    for other, style in (("replicas_asked", ":"), ("replicas_ready", "--")):
                        ax.step(frame["bucket_start_s"] / HOUR_S, frame[other], where="post",
                                color=f"C{k}", linestyle=style, linewidth=1)
            if column == "replicas" and scaled:
                title = ("Serving replicas: paid for (solid), asked for by the autoscaler "
                         "(dotted), ready (dashed)")
            ax.set_ylabel(unit)
            ax.set_title(title, fontsize="medium", loc="left")
            ax.set_ylim(bottom=0)
        if not online:
            axes[1].text(0.5, 0.5, "no architecture serves online", ha="center",
                         transform=axes[1].transAxes, color="grey")
        else:
            axes[1].legend(fontsize="small")
        axes[-1].set_xlabel("simulated time (hours since start)")
        return fig

    def _autoscaled(self) -> list[str]:
        """The architectures whose serving has an autoscaler, in the scenario's order."""
        out = []
        for name, spec in self.results.scenario.architectures.items():
            serving = getattr(spec, "serving", None)
            if serving is not None and serving.autoscaling is not None:
                out.append(name)
        return out

    def replicas(self):
        """Replicas over time for each architecture with an autoscaler, one panel each: those
        ready (serving) and starting (stacked), those asked for by the autoscaler (a scale-up
        within its decision lag included) and those paid for (the warm pool included); time
        averages per bucket."""
        import matplotlib.pyplot as plt
        names = self._autoscaled()
        rows = max(len(names), 1)
        fig, axes = plt.subplots(rows, 1, figsize=(7.5, 1.0 + 2.6 * rows), sharex=True,
                                 layout="constrained", squeeze=False)
        ts = self.results.timeseries
        for ax, name in zip(axes[:, 0], names):
            frame = ts[ts["architecture"] == name]
            x = np.r_[frame["bucket_start_s"].to_numpy(float),
                      frame["bucket_start_s"].iloc[-1] + frame["bucket_s"].iloc[-1]] / HOUR_S

            def steps(column):
                values = frame[column].to_numpy(float)
                return np.r_[values, values[-1]]

            ready, starting = steps("replicas_ready"), steps("replicas_starting")
            ax.fill_between(x, 0, ready, step="post", color="C0", alpha=0.6, label="ready")
            ax.fill_between(x, ready, ready + starting, step="post", color="C1", alpha=0.5,
                            label="starting")
            ax.step(x, steps("replicas_asked"), where="post", color="black", linewidth=1.2,
                    label="asked for")
            ax.step(x, steps("replicas"), where="post", color="grey", linestyle="--",
                    linewidth=1, label="paid for")
            ax.set_ylabel("replicas")
            ax.set_ylim(bottom=0)
            ax.set_title(name, fontsize="medium", loc="left")
            ax.legend(fontsize="small", loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=4,
                      frameon=False)
        if not names:
            axes[0, 0].text(0.5, 0.5, "no architecture has an autoscaler", ha="center",
                            transform=axes[0, 0].transAxes, color="grey")
        axes[-1, 0].set_xlabel("simulated time (hours since start)")
        fig.suptitle("Replicas asked for, starting and ready")
        return fig

    def cost_breakdown(self):
        """Stacked cost per day by component, per architecture."""
        from sim.results.catalogue import COST_COMPONENTS
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

    def net_value(self):
        """Net value per day (value minus cost) per architecture, with 95% CI bars.

        The baseline's bar is hatched. The bars are confidence intervals of each mean; whether
        two architectures differ is the *paired* interval of their difference (see
        ``results.differences``), which is usually much narrower.
        """
        fig, ax = _subplots()
        summary = self.results.summary
        names = list(summary["architecture"])
        values = summary["net_value_usd_per_day"].to_numpy(float)
        column = "net_value_usd_per_day_ci95"
        errors = (summary[column].to_numpy(float) if column in summary
                  else np.full(len(names), np.nan))
        has_ci = bool(np.isfinite(errors).any())
        bars = ax.bar(names, values, yerr=np.nan_to_num(errors) if has_ci else None,
                      capsize=6, color=[f"C{i}" for i in range(len(names))])
        for bar, name in zip(bars, names):
            if name == self.results.baseline:
                bar.set_hatch("//")
                bar.set_edgecolor("white")
        ax.set_xticks(range(len(names)), [f"{n}\n(baseline)" if n == self.results.baseline
                                          else n for n in names])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel("US$ per day")
        reps = self.results.replications
        ax.set_title("Net value per day (value − cost)" +
                     (f", mean ± 95% CI over {reps} replications" if has_ci else ""))
        ax.yaxis.set_major_formatter(_money_formatter())
        return fig


def _money_formatter():
    from matplotlib.ticker import FuncFormatter
    return FuncFormatter(lambda x, _: f"-${-x:,.0f}" if x < 0 else f"${x:,.0f}")


def tornado(frame, base_usd: float, title: str):
    """One-at-a-time sensitivity as a tornado chart.

    ``frame`` has one row per input, most influential first, with columns ``label``,
    ``low_label`` / ``high_label`` (the perturbed values) and ``low_usd`` / ``high_usd`` (the
    output at those values, NaN where that side could not be run); ``base_usd`` is the output at
    the scenario's values.
    """
    import matplotlib.pyplot as plt
    rows = len(frame)
    fig, ax = plt.subplots(figsize=(9.0, 1.4 + 0.6 * max(rows, 1)), layout="constrained")
    for i, row in enumerate(frame.to_dict("records")):
        y = rows - 1 - i
        # The two sides as two thin bars, one above the other, so that neither hides the other
        # when both move the output the same way.
        for side, colour, dy in (("low", "C0", 0.17), ("high", "C1", -0.17)):
            value = row[f"{side}_usd"]
            if value != value:  # NaN: not run
                continue
            ax.barh(y + dy, value - base_usd, left=base_usd, color=colour, height=0.34,
                    label=f"input {'lowered' if side == 'low' else 'raised'}" if i == 0 else None)
            ax.text(value, y + dy, f" {row[f'{side}_label']} ", va="center",
                    ha="left" if value >= base_usd else "right", fontsize=8)
    from matplotlib.ticker import MaxNLocator
    ax.axvline(base_usd, color="black", linewidth=1)
    ax.set_yticks(range(rows), [r for r in reversed(list(frame["label"]))])
    ax.set_xlabel("net value difference, US$ per day (line: at the scenario's values)")
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.xaxis.set_major_formatter(_money_formatter())
    ax.set_title(title)
    ax.margins(x=0.25)
    if rows:
        ax.legend(loc="best", fontsize=8)
    return fig


def breakeven(points, flip_per_s: float | None, current_per_s: float, title: str):
    """Net value difference against arrival rate (log scale), the flip and today's rate marked.

    ``points`` is a sequence of ``(rate_per_s, difference_usd_per_day)``.
    """
    fig, ax = _subplots()
    pts = sorted(points)
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    ax.plot(xs, ys, marker="o", color="C0")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axvline(current_per_s, color="grey", linestyle="--", linewidth=1)
    ax.text(current_per_s, ax.get_ylim()[1], " today", color="grey", va="top")
    if flip_per_s is not None:
        ax.axvline(flip_per_s, color="C3", linewidth=1.5)
        ax.text(flip_per_s, ax.get_ylim()[0], " decision flips", color="C3", va="bottom")
    ax.set_xscale("log")
    ax.set_xlabel("mean arrival rate (requests per second, log scale)")
    ax.set_ylabel("net value difference, US$ per day")
    ax.yaxis.set_major_formatter(_money_formatter())
    ax.set_title(title)
    return fig
