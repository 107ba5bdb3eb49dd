"""The value of data freshness, measured: staleness curves fitted to the team's own experiment.

The experiment (docs/measuring-inputs.md): train a model on data up to a point and evaluate it on
later windows (model age), or score with features deliberately aged (feature age), and write
down the metric per age. :func:`read_freshness` reads that table (CSV: an age column, a metric
column, optionally an experiment column saying ``feature`` or ``model`` when both experiments
are in one file, or ``batch`` and ``stream`` when each class of features was aged on its own, the
other held fresh); :func:`fit_freshness` fits each series three ways:

- ``exponential``: ``m(a) = floor + (fresh - floor) * 2^(-a / half_life)`` (3 parameters, least
  squares with :func:`scipy.optimize.curve_fit`, standard errors from its covariance);
- ``linear``: ``m(a) = fresh + per_day * a / 1d`` (2 parameters);
- ``table``: the mean metric at each measured age (one parameter per age).

It reports for each the RMSE, R² and the small-sample Akaike criterion
``AICc = n ln(RSS / n) + 2k + 2k(k + 1) / (n - k - 1)``, and picks the usable form with the lowest
AICc (a parameter must buy a real drop in the residuals), or the table when no curve is usable.
The scenario's quality is "higher is better" and is clamped to [0, fresh]: a metric where lower
is better (log loss, normalised entropy) is turned into one relative to fresh,
``quality = fresh * (2 - m / m0)`` (1% worse log loss costs 1% of quality), and a metric where
higher is better into ``fresh * m / m0`` (the metric itself, unless ``--fresh`` rescales it).
``m0`` is the chosen curve's value at age 0.

Nothing here simulates; ``predsim calibrate freshness`` prints what these functions return.
"""

from __future__ import annotations

import csv
import io
import math
import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import optimize

from sim.inputs.logs import InputError
from sim.units import DAY_S, parse_duration, round_duration

MIN_POINTS = 3
MAX_REPORTED = 10
# Age columns whose name carries their unit; ``age`` itself holds durations such as 6h.
AGE_COLUMNS_S = {"age_s": 1.0, "age_sec": 1.0, "age_seconds": 1.0, "age_min": 60.0,
                 "age_minutes": 60.0, "age_h": 3600.0, "age_hours": 3600.0, "age_d": DAY_S,
                 "age_days": DAY_S}
AGE_UNITS_S = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": DAY_S}
EXPERIMENT_COLUMNS = ("experiment", "kind")
EXPERIMENTS = {"feature": "feature", "features": "feature", "feature_age": "feature",
               "feature_staleness": "feature", "model": "model", "models": "model",
               "model_age": "model", "model_staleness": "model",
               "batch": "batch", "batch_features": "batch", "batch_feature_age": "batch",
               "stream": "stream", "stream_features": "stream",
               "stream_feature_age": "stream"}
# Experiments that age one class of features (written under quality.features.<class>).
FEATURE_CLASS_EXPERIMENTS = ("batch", "stream")
# Metrics where lower is better, recognised by name (case and punctuation ignored).
LOWER_IS_BETTER = {"ne", "normalizedentropy", "normalisedentropy", "logloss", "crossentropy",
                   "mse", "rmse", "mae", "error", "errorrate", "brier", "brierscore", "loss"}
HIGHER_IS_BETTER = {"ctr", "auc", "rocauc", "prauc", "accuracy", "precision", "recall", "f1",
                    "ndcg", "map", "mrr", "hitrate", "conversion", "conversionrate", "revenue",
                    "engagement", "quality"}
FORMS = ("exponential", "linear", "table")


# --------------------------------------------------------------------------------------------
# Reading the table
# --------------------------------------------------------------------------------------------

@dataclass
class Series:
    """One experiment's points: ages in seconds and the metric, with their file lines."""

    experiment: str   # "feature" or "model"
    ages_s: np.ndarray
    values: np.ndarray
    lines: np.ndarray


@dataclass
class FreshnessTable:
    """A freshness experiment as read from its file."""

    source: str
    age_column: str
    metric_column: str
    series: dict[str, Series]


def read_freshness(path: str | Path, age_column: str | None = None,
                   metric_column: str | None = None, experiment_column: str | None = None,
                   age_unit: str | None = None, metric: str | None = None,
                   experiment: str = "model") -> FreshnessTable:
    """Read a freshness-experiment table (CSV; lines starting with ``#`` are comments).

    Columns: the age (``age_s``, ``age_hours``, ``age_days``..., or ``age`` holding durations
    such as ``6h``; bare numbers need ``age_unit``), the metric (``metric_column``, else a column
    ``metric``, else one named ``metric``, the scenario's metric name, else the one column left)
    and optionally ``experiment`` (or ``kind``) with ``feature`` or ``model`` per row; without
    it every row belongs to ``experiment``. Raises :class:`InputError` naming the file, the
    line and the column of each bad cell (up to ten), or a series with fewer than three points.
    """
    path = Path(path)
    label = str(path)
    if not path.is_file():
        raise InputError([f"{label}: file not found"])
    try:
        text = path.read_text()
    except (UnicodeDecodeError, OSError) as exc:
        raise InputError([f"{label}: cannot read it as a text CSV file ({exc})"]) from None
    rows = [(n, line) for n, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        raise InputError([f"{label}: no header line (expected columns such as age_days and "
                          f"metric)"])
    header_line, header_text = rows[0]
    header = [c.strip() for c in next(csv.reader(io.StringIO(header_text)))]
    columns = ", ".join(header)

    def missing(name: str) -> InputError:
        return InputError([f"{label}: line {header_line}: no column {name!r} (the columns are "
                           f"{columns})"])

    if age_column is None:
        age_column = next((c for c in header if c.lower() in AGE_COLUMNS_S or c.lower() == "age"),
                          None)
        if age_column is None:
            raise InputError([f"{label}: line {header_line}: no age column: expected one of "
                              f"age_s, age_hours, age_days or age (durations such as 6h), or "
                              f"name it with --age-column (the columns are {columns})"])
    elif age_column not in header:
        raise missing(age_column)
    if age_unit is not None and age_unit not in AGE_UNITS_S:
        raise InputError([f"age unit must be one of {', '.join(AGE_UNITS_S)} (got {age_unit!r})"])
    scale = AGE_UNITS_S[age_unit] if age_unit else AGE_COLUMNS_S.get(age_column.lower())

    if experiment_column is None:
        experiment_column = next((c for c in header if c.lower() in EXPERIMENT_COLUMNS), None)
    elif experiment_column not in header:
        raise missing(experiment_column)

    if metric_column is None:
        named = [c for c in header if c.lower() == "metric" or (metric and c == metric)]
        rest = [c for c in header if c not in (age_column, experiment_column)]
        if named:
            metric_column = named[0]
        elif len(rest) == 1:
            metric_column = rest[0]
        else:
            raise InputError([f"{label}: line {header_line}: which column is the metric? "
                              f"expected a column named metric{f' or {metric}' if metric else ''}"
                              f", or give --metric-column (the columns are {columns})"])
    elif metric_column not in header:
        raise missing(metric_column)

    at = {name: header.index(name) for name in (age_column, metric_column, experiment_column)
          if name is not None}
    problems: list[str] = []
    points: dict[str, list[tuple[float, float, int]]] = {}
    for line_no, line in rows[1:]:
        cells = [c.strip() for c in next(csv.reader(io.StringIO(line)))]
        if len(cells) != len(header):
            problems.append(f"{label}: line {line_no}: expected {len(header)} values, as in the "
                            f"header (got {len(cells)})")
            continue
        age = _age_s(cells[at[age_column]], scale, age_column, age_unit)
        if isinstance(age, str):
            problems.append(f"{label}: line {line_no}: column {age_column}: {age}")
        value = _number(cells[at[metric_column]])
        if value is None:
            problems.append(f"{label}: line {line_no}: column {metric_column}: expected a number "
                            f"(got {cells[at[metric_column]]!r})")
        which = experiment
        if experiment_column is not None:
            raw = cells[at[experiment_column]]
            which = EXPERIMENTS.get(raw.lower())
            if which is None:
                problems.append(f"{label}: line {line_no}: column {experiment_column}: expected "
                                f"feature, batch, stream or model (got {raw!r})")
        if not isinstance(age, str) and value is not None and which is not None:
            points.setdefault(which, []).append((age, value, line_no))
    if problems:
        extra = len(problems) - MAX_REPORTED
        raise InputError(problems[:MAX_REPORTED] + ([f"{label}: ... and {extra} more bad rows"]
                                                    if extra > 0 else []))
    if not points:
        raise InputError([f"{label}: no rows after the header"])
    if "feature" in points and "batch" in points:
        raise InputError([f"{label}: column {experiment_column}: both feature and batch rows; "
                          f"'feature' means the batch features (the only class), so call them "
                          f"all batch when stream features were aged separately"])
    series = {}
    for which, rows_ in sorted(points.items()):
        ages = np.array([a for a, _, _ in rows_])
        if len(rows_) < MIN_POINTS or np.unique(ages).size < 2:
            raise InputError([f"{label}: the {which} experiment has {len(rows_)} rows at "
                              f"{np.unique(ages).size} different ages (lines "
                              f"{', '.join(str(n) for _, _, n in rows_)}): a fit needs at least "
                              f"{MIN_POINTS} rows at two or more ages"])
        order = np.argsort(ages, kind="stable")
        series[which] = Series(which, ages[order], np.array([v for _, v, _ in rows_])[order],
                               np.array([n for _, _, n in rows_])[order])
    return FreshnessTable(label, age_column, metric_column, series)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _age_s(text: str, scale: float | None, column: str, unit: str | None) -> float | str:
    """Seconds, or the problem as text."""
    number = _number(text)
    if number is not None:
        if scale is None:
            return (f"{text!r} has no unit: write it as a duration (6h, 1d), name the column "
                    f"age_s, age_hours or age_days, or give --age-unit")
        seconds = number * scale
    else:
        try:
            seconds = parse_duration(text)
        except ValueError:
            return f"expected an age such as 6h or 1d (got {text!r})"
    if seconds < 0:
        return f"must be >= 0 (got {text!r})"
    return seconds


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------

@dataclass
class CurveFit:
    """One form fitted to one series, in the metric's own units."""

    form: str
    params: dict[str, float]        # fresh, floor, half_life_s (exponential) / per_day (linear)
    errors: dict[str, float]        # standard errors of params (inf: not determined)
    rmse: float
    r2: float
    aicc: float                     # inf when there are too few points for its parameters
    k: int
    usable: bool
    note: str = ""
    table: list[tuple[float, float]] = field(default_factory=list)   # table form: (age, mean)

    @property
    def fresh(self) -> float:
        return self.params["fresh"]


@dataclass
class SeriesFit:
    """The three forms fitted to one experiment, the chosen one and why."""

    series: Series
    fits: dict[str, CurveFit]
    chosen: str
    reason: str

    @property
    def best(self) -> CurveFit:
        return self.fits[self.chosen]


def model_value(form: str, params: dict[str, float], ages_s: np.ndarray,
                table: list[tuple[float, float]] | None = None) -> np.ndarray:
    """The metric at each age according to a fitted form (no floor applied)."""
    ages_s = np.asarray(ages_s, dtype=float)
    if form == "exponential":
        return params["floor"] + (params["fresh"] - params["floor"]) * \
            np.exp2(-ages_s / params["half_life_s"])
    if form == "linear":
        return params["fresh"] + params["per_day"] * ages_s / DAY_S
    ages, values = zip(*table)
    return np.interp(ages_s, ages, values)


def _scores(y: np.ndarray, predicted: np.ndarray, k: int) -> tuple[float, float, float]:
    """RMSE, R² and AICc of a least-squares fit with k parameters."""
    n = y.size
    rss = float(np.sum((y - predicted) ** 2))
    tss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1 - rss / tss if tss > 0 else float("nan")
    if n - k - 1 <= 0 or rss <= 0:
        aicc = float("inf")
    else:
        aicc = n * math.log(rss / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)
    return math.sqrt(rss / n), r2, aicc


def _fit_linear(s: Series, sign: float) -> CurveFit:
    x = s.ages_s / DAY_S
    design = np.vstack([x, np.ones_like(x)]).T
    (slope, intercept), *_ = np.linalg.lstsq(design, s.values, rcond=None)
    residuals = s.values - design @ np.array([slope, intercept])
    dof = x.size - 2
    if dof > 0:
        cov = np.linalg.inv(design.T @ design) * float(residuals @ residuals) / dof
        errors = {"per_day": math.sqrt(cov[0, 0]), "fresh": math.sqrt(cov[1, 1])}
    else:
        errors = {"per_day": math.inf, "fresh": math.inf}
    params = {"fresh": float(intercept), "per_day": float(slope)}
    rmse, r2, aicc = _scores(s.values, model_value("linear", params, s.ages_s), 2)
    usable, note = True, ""
    if sign * slope > 0:
        usable, note = False, "the metric gets better with age"
    return CurveFit("linear", params, errors, rmse, r2, aicc, 2, usable, note)


def _fit_exponential(s: Series, sign: float) -> CurveFit:
    span = float(s.ages_s.max())
    x = s.ages_s / span            # ages in units of the longest age, for conditioning
    y = s.values
    young, old = y[x == x.min()].mean(), y[x == x.max()].mean()

    def f(a, fresh, floor, half_life):
        return floor + (fresh - floor) * np.exp2(-a / half_life)

    best = None
    for h0 in (0.05, 0.2, 0.5, 1.0, 3.0):
        p0 = (young, old - (young - old) * 0.2, h0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optimize.OptimizeWarning)
                p, cov = optimize.curve_fit(f, x, y, p0=p0, maxfev=20000,
                                            bounds=([-np.inf, -np.inf, 1e-6],
                                                    [np.inf, np.inf, 1e6]))
        except (RuntimeError, ValueError):
            continue
        rss = float(np.sum((y - f(x, *p)) ** 2))
        if best is None or rss < best[0]:
            best = (rss, p, cov)
    if best is None:
        return CurveFit("exponential", {"fresh": young, "floor": old, "half_life_s": span},
                        {}, math.inf, math.nan, math.inf, 3, False, "the fit did not converge")
    _, (fresh, floor, h), cov = best
    with np.errstate(invalid="ignore"):
        se = np.sqrt(np.diag(cov)) if np.all(np.isfinite(cov)) else np.full(3, math.inf)
    params = {"fresh": float(fresh), "floor": float(floor), "half_life_s": float(h * span)}
    errors = {"fresh": float(se[0]), "floor": float(se[1]), "half_life_s": float(se[2] * span)}
    rmse, r2, aicc = _scores(y, model_value("exponential", params, s.ages_s), 3)
    usable, note = True, ""
    if sign * (floor - fresh) > 0:
        usable, note = False, "the metric gets better with age"
    elif not all(math.isfinite(e) for e in errors.values()) or \
            errors["half_life_s"] > params["half_life_s"] or h >= 1e3:
        usable, note = False, ("half-life not determined: the metric does not level off "
                               "within the ages measured")
    return CurveFit("exponential", params, errors, rmse, r2, aicc, 3, usable, note)


def _fit_table(s: Series) -> CurveFit:
    ages = np.unique(s.ages_s)
    means = np.array([s.values[s.ages_s == a].mean() for a in ages])
    table = list(zip(ages.tolist(), means.tolist()))
    params = {"fresh": float(means[0])}
    rmse, r2, aicc = _scores(s.values, model_value("table", params, s.ages_s, table), ages.size)
    note = "" if ages[0] == 0 else f"fresh is taken at the youngest age, {round_duration(ages[0])}"
    return CurveFit("table", params, {}, rmse, r2, aicc, int(ages.size), True, note, table)


def fit_series(s: Series, lower_is_better: bool, form: str = "auto") -> SeriesFit:
    """Fit the three forms to one series and choose one (``form``: or force one)."""
    sign = -1.0 if lower_is_better else 1.0
    fits = {"exponential": _fit_exponential(s, sign), "linear": _fit_linear(s, sign),
            "table": _fit_table(s)}
    if form != "auto":
        reason = f"chosen with --form {form}"
        if not fits[form].usable:
            reason += f" (warning: {fits[form].note})"
        return SeriesFit(s, fits, form, reason)
    ranked = sorted((f for f in fits.values() if f.usable and math.isfinite(f.aicc)),
                    key=lambda f: f.aicc)
    left_out = [f"{f.form}: {f.note}" if not f.usable else
                f"{f.form}: one row per age, so it fits exactly and cannot be judged"
                if f.form == "table" else f"{f.form}: too few rows for its parameters"
                for f in fits.values() if f not in ranked]
    why_not = f"; not compared: {'; '.join(left_out)}" if left_out else ""
    if ranked:
        best = ranked[0]
        scores = ", ".join(f"{f.form} {f.aicc:.1f}" for f in ranked)
        reason = (f"the lowest AICc, which weighs the residuals against the number of "
                  f"parameters ({scores}){why_not}")
        return SeriesFit(s, fits, best.form, reason)
    return SeriesFit(s, fits, "table", f"no curve is usable, so the measured points "
                                       f"themselves{why_not}")


@dataclass
class FreshnessFit:
    """Curves fitted to a freshness experiment, and the ``quality:`` section they make."""

    table: FreshnessTable
    fits: dict[str, SeriesFit]                # by experiment: "feature"/"batch"/"stream", "model"
    lower_is_better: bool
    direction_reason: str
    metric: str                               # the name written as quality.metric
    fresh: float                              # the scenario's fresh quality
    fresh_given: bool

    def _quality(self, fit: SeriesFit, metric_values: np.ndarray) -> np.ndarray:
        """The metric turned into the scenario's quality (higher is better, scaled to fresh)."""
        ratio = np.asarray(metric_values, dtype=float) / fit.best.fresh
        return self.fresh * ((2 - ratio) if self.lower_is_better else ratio)

    def curve(self, experiment: str) -> dict:
        """The chosen curve of one experiment as scenario data (in quality units)."""
        fit = self.fits[experiment]
        best = fit.best
        if best.form == "exponential":
            floor = float(self._quality(fit, np.array([best.params["floor"]]))[0])
            return {"exponential": {"half_life": round_duration(best.params["half_life_s"]),
                                    "floor": _num(min(max(floor, 0.0), self.fresh))}}
        if best.form == "linear":
            per_day = self.fresh * best.params["per_day"] / best.fresh
            per_day = -per_day if self.lower_is_better else per_day
            return {"linear": {"per_day": _num(min(per_day, 0.0)), "floor": 0}}
        values = self._quality(fit, np.array([v for _, v in best.table]))
        return {"table": [[round_duration(a), _num(max(float(v), 0.0))]
                          for (a, _), v in zip(best.table, values)]}

    def section(self) -> dict:
        """The ``quality:`` section as plain data (durations as text)."""
        out: dict = {"metric": self.metric, "fresh": _num(self.fresh)}
        if "feature" in self.fits:
            out["feature_staleness"] = self.curve("feature")
        classes = {c: {"staleness": self.curve(c)} for c in FEATURE_CLASS_EXPERIMENTS
                   if c in self.fits}
        if classes:
            out["features"] = classes
        if "model" in self.fits:
            out["model_staleness"] = self.curve("model")
        return out

    def comments(self) -> list[str]:
        t = self.table
        lines = [f"predsim calibrate freshness: {Path(t.source).name}: metric column "
                 f"{t.metric_column}, {self.direction_reason}."]
        for experiment, fit in self.fits.items():
            s = fit.series
            lines.append(f"{experiment} age: {s.values.size} rows, ages "
                         f"{round_duration(s.ages_s.min())} to {round_duration(s.ages_s.max())}; "
                         f"{fit.chosen}: {fit.reason}.")
            if fit.chosen == "linear":
                lines.append(f"{experiment} age: linear floor 0: not measured, the line is "
                             f"extrapolated beyond {round_duration(s.ages_s.max())}; set a floor "
                             f"if you know where the metric levels off.")
            if fit.chosen == "table":
                lines.append(f"{experiment} age: the table is held flat beyond "
                             f"{round_duration(s.ages_s.max())}.")
        if self.lower_is_better:
            lines.append(f"{t.metric_column} is lower-is-better; the scenario's quality is "
                         f"higher-is-better, so quality = fresh x (2 - {t.metric_column} / "
                         f"{t.metric_column} at age 0): 1% worse {t.metric_column} costs 1% of "
                         f"quality (an assumption: check it against an online test).")
        elif len(self.fits) > 1 or self.fresh_given:
            lines.append(f"quality = fresh x {t.metric_column} / {t.metric_column} at age 0 "
                         f"(each experiment against its own age 0).")
        if not self.fresh_given and (self.lower_is_better or len(self.fits) > 1):
            lines.append("fresh: " + ("1 = as good as fresh (relative); rerun with --fresh "
                                      "VALUE, the metric you value (e.g. CTR) with fresh "
                                      "features and a just-trained model" if self.lower_is_better
                                      else "the mean of the experiments' fitted values at age 0"))
        lines.append("fallback: not measured here; add the metric of your fallback.")
        return lines

    def to_yaml(self) -> str:
        """The section as YAML under ``quality:``, preceded by comment lines."""
        out = [f"# {part}" if i == 0 else f"#   {part}" for line in self.comments()
               for i, part in enumerate(textwrap.wrap(line, 96))]
        section = self.section()
        out += ["quality:", f"  metric: {section['metric']}",
                f"  fresh: {_plain(section['fresh'])}"]
        def curve_lines(key: str, curve: dict, indent: str) -> list[str]:
            form, value = next(iter(curve.items()))
            if form == "table":
                return [f"{indent}{key}:", f"{indent}  table:"] + \
                    [f"{indent}    - [{a}, {_plain(v)}]" for a, v in value]
            inner = ", ".join(f"{k}: {_plain(v)}" for k, v in value.items())
            return [f"{indent}{key}: {{{form}: {{{inner}}}}}"]

        if "feature_staleness" in section:
            out += curve_lines("feature_staleness", section["feature_staleness"], "  ")
        if "features" in section:
            out.append("  features:")
            for feature_class, spec in section["features"].items():
                out.append(f"    {feature_class}:")
                out += curve_lines("staleness", spec["staleness"], "      ")
        if "model_staleness" in section:
            out += curve_lines("model_staleness", section["model_staleness"], "  ")
        return "\n".join(out) + "\n"

    def rows(self) -> list[dict]:
        """The goodness of fit of every form of every experiment, for a table."""
        rows = []
        for experiment, fit in self.fits.items():
            for f in fit.fits.values():
                rows.append({"experiment": experiment, "form": f.form,
                             "parameters": _parameters(f), "rmse": f.rmse, "r2": f.r2,
                             "aicc": f.aicc, "chosen": f.form == fit.chosen, "usable": f.usable,
                             "note": f.note})
        return rows


def fit_freshness(table: FreshnessTable, lower_is_better: bool | None = None,
                  fresh: float | None = None, metric: str | None = None,
                  form: str = "auto") -> FreshnessFit:
    """Fit every series of ``table`` and build the ``quality:`` section.

    ``lower_is_better``: None decides by the metric column's name (log loss, NE, error...) or,
    failing that, by its trend (a metric that grows with age is taken as lower-is-better).
    ``fresh``: the scenario's quality with fresh features and a just-trained model; None keeps
    a higher-is-better metric in its own units (the mean of the experiments' age-0 values when
    there are two) and makes a lower-is-better one relative (fresh = 1).
    """
    if form not in ("auto",) + FORMS:
        raise InputError([f"form must be auto, {', '.join(FORMS)} (got {form!r})"])
    if fresh is not None and not fresh > 0:
        raise InputError([f"--fresh must be > 0 (got {fresh:g})"])
    column = table.metric_column
    key = "".join(ch for ch in column.lower() if ch.isalnum())
    if lower_is_better is not None:
        reason = f"{'lower' if lower_is_better else 'higher'} is better (as given)"
    elif key in LOWER_IS_BETTER:
        lower_is_better, reason = True, "lower is better (by its name)"
    elif key in HIGHER_IS_BETTER:
        lower_is_better, reason = False, "higher is better (by its name)"
    else:
        slopes = [np.polyfit(s.ages_s, s.values, 1)[0] for s in table.series.values()]
        lower_is_better = float(np.mean(slopes)) > 0
        reason = (f"{'lower' if lower_is_better else 'higher'} is better (by its trend: it "
                  f"{'grows' if lower_is_better else 'falls'} with age; say --lower-is-better "
                  f"or --higher-is-better if not)")
    fits = {name: fit_series(s, lower_is_better, form) for name, s in table.series.items()}
    fresh_given = fresh is not None
    if fresh is None:
        fresh = 1.0 if lower_is_better else float(np.mean([f.best.fresh for f in fits.values()]))
        if fresh <= 0:
            raise InputError([f"{table.source}: the metric at age 0 is {fresh:g}; a quality "
                              f"must be > 0 when fresh: give --fresh VALUE"])
    name = metric or (column if not lower_is_better else "quality")
    return FreshnessFit(table, fits, lower_is_better, reason, name, float(fresh), fresh_given)


def _num(x: float) -> float | int:
    """A metric to 5 significant digits, written without an exponent (so YAML reads a number)."""
    x = float(x)
    if x == 0:
        return 0
    return float(np.format_float_positional(x, precision=5, unique=False, fractional=False,
                                            trim="-"))


def _plain(value):
    """A number as YAML text without an exponent (PyYAML reads ``-5e-06`` as a string)."""
    if isinstance(value, float):
        return np.format_float_positional(value, trim="-")
    return value


def _parameters(f: CurveFit) -> str:
    def pm(key, text, err):
        e = f.errors.get(key, math.inf)
        return f"{text} ± {err(e)}" if math.isfinite(e) else f"{text} (± ?)"

    if f.form == "exponential":
        p = f.params
        return "\n".join([
            pm("half_life_s", f"half-life {round_duration(p['half_life_s'])}",
               lambda e: round_duration(e, 2)),
            pm("floor", f"floor {p['floor']:.5g}", lambda e: f"{e:.2g}"),
            pm("fresh", f"fresh {p['fresh']:.5g}", lambda e: f"{e:.2g}")])
    if f.form == "linear":
        p = f.params
        return "\n".join([pm("per_day", f"per day {p['per_day']:+.4g}", lambda e: f"{e:.2g}"),
                          pm("fresh", f"fresh {p['fresh']:.5g}", lambda e: f"{e:.2g}")])
    return f"{len(f.table)} ages"


__all__ = ["read_freshness", "fit_freshness", "fit_series", "FreshnessTable", "FreshnessFit",
           "Series", "SeriesFit", "CurveFit"]
