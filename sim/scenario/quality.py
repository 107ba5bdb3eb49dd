"""The quality section: staleness curves, feature classes (batch, stream, request) and what each is
worth.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from sim.scenario.fields import Duration, MetricValue, Model, PositiveDuration


# --------------------------------------------------------------------------------------------
# Quality
# --------------------------------------------------------------------------------------------

class ExponentialCurve(Model):
    """Quality decays halfway to ``floor`` every ``half_life``."""

    half_life: PositiveDuration = Field(description="Age at which half the gap between fresh "
                                        "and floor is lost.")
    floor: float = Field(description="Metric at a very old age.")


class LinearCurve(Model):
    """Quality changes by ``per_day`` (negative) per day of age, never below ``floor``."""

    per_day: MetricValue = Field(le=0, description="Change of the metric per day of age (<= 0).")
    floor: float = Field(description="The metric never falls below this.")


class Curve(Model):
    """A staleness curve: metric as a function of age. Exactly one of the three forms."""

    exponential: ExponentialCurve | None = Field(None, description="{half_life, floor}.")
    linear: LinearCurve | None = Field(None, description="{per_day, floor}.")
    table: list[tuple[Duration, MetricValue]] | None = Field(
        None, description="[[age, metric], ...] interpolated linearly, flat beyond the ends.")

    @model_validator(mode="after")
    def _exactly_one(self) -> "Curve":
        given = [k for k in ("exponential", "linear", "table") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("expected exactly one of exponential, linear or table "
                             f"(got {', '.join(given) or 'none'})")
        if self.table is not None:
            ages = [a for a, _ in self.table]
            if len(ages) < 1 or any(b <= a for a, b in zip(ages, ages[1:])):
                raise ValueError("table ages must be increasing")
            if ages[0] < 0:
                raise ValueError("table ages must be >= 0")
        return self

    def limit(self, fresh: float) -> float:
        """The metric at a very old age: the floor (or fresh for a flat line), or the table's
        last value."""
        if self.exponential is not None:
            return self.exponential.floor
        if self.linear is not None:
            return self.linear.floor if self.linear.per_day < 0 else fresh
        return self.table[-1][1]


FEATURE_CLASSES = ("batch", "stream", "request")


class FeatureClass(Model):
    """What one class of features (batch or stream) is worth: how quality decays as they age,
    and what a prediction is worth without them."""

    staleness: Curve | None = Field(None, description="Metric as a function of this class's "
                                    "age, every other age zero; none: its age costs nothing.")
    cold_start: float | None = Field(None, ge=0, description="Metric of a prediction for an "
                                     "entity that has none of these features yet (created "
                                     "after the last refresh that could include it). Default: "
                                     "quality.fallback for batch features, `without` for "
                                     "stream features.")
    without: float | None = Field(None, ge=0, description="Metric of a prediction made by an "
                                  "architecture that has no features of this class at all "
                                  "(online has no stream features). Default: the staleness "
                                  "curve at a very old age (features that say nothing), or "
                                  "fresh without a curve.")


class RequestFeatureClass(Model):
    """Request-time features: computed in the request, so never stale; what they are worth is
    the quality lost by an architecture that cannot have them (batch, stored predictions)."""

    without: float | None = Field(None, ge=0, description="Metric of a prediction made without "
                                  "request-time features (batch and stored predictions). "
                                  "Default: fresh (they add nothing).")


class FeatureClasses(Model):
    """Quality per class of features: batch (materialised on a schedule), stream (windows with
    lag) and request (computed in the request). Each staleness curve gives the metric at that
    class's age with every other age zero; the losses of the classes add up."""

    batch: FeatureClass | None = Field(None, description="Features materialised on a schedule.")
    stream: FeatureClass | None = Field(None, description="Features from a stream processor.")
    request: RequestFeatureClass | None = Field(None, description="Features computed in the "
                                                "request.")


class Quality(Model):
    """The team's metric, fresh and stale, and the quality of the fallback.

    The loss against ``fresh`` of each feature class (its staleness, its cold start, or its
    absence), of model age and of drift add up; the result is clamped to [0, fresh].
    """

    metric: str = Field("quality", description="Name of the metric (ctr, accuracy, ...).")
    fresh: MetricValue = Field(gt=0, description="Metric with fresh features and a "
                               "just-trained model.")
    fallback: float = Field(0.0, ge=0, description="Metric of the fallback (no prediction).")
    feature_staleness: Curve | None = Field(None, description="Metric as a function of the "
                                            "batch features' age (model age zero): shorthand "
                                            "for features.batch.staleness.")
    features: FeatureClasses | None = Field(None, description="Quality per feature class: "
                                            "{batch, stream: {staleness, cold_start, without}, "
                                            "request: {without}}.")
    model_staleness: Curve | None = Field(None, description="Metric as a function of model age "
                                          "(feature age zero); none: no loss.")

    @model_validator(mode="after")
    def _check(self) -> "Quality":
        if self.fallback > self.fresh:
            raise ValueError(f"fallback ({self.fallback:g}) must not exceed fresh ({self.fresh:g})")
        if self.feature_staleness is not None and self.features is not None and \
                self.features.batch is not None and self.features.batch.staleness is not None:
            raise ValueError("give the batch features' curve once: feature_staleness is "
                             "shorthand for features.batch.staleness")
        curves = [("feature_staleness", self.feature_staleness),
                  ("model_staleness", self.model_staleness)]
        levels = []
        for name in ("batch", "stream", "request"):
            spec = getattr(self.features, name, None) if self.features else None
            if spec is None:
                continue
            if name != "request":
                curves.append((f"features.{name}.staleness", spec.staleness))
                levels.append((f"features.{name}.cold_start", spec.cold_start))
            levels.append((f"features.{name}.without", spec.without))
        for name, curve in curves:
            form = curve and (curve.exponential or curve.linear)
            if form is not None and not 0 <= form.floor <= self.fresh:
                raise ValueError(f"{name} floor must be between 0 and fresh ({self.fresh:g}) "
                                 f"(got {form.floor:g})")
        for name, level in levels:
            if level is not None and level > self.fresh:
                raise ValueError(f"{name} ({level:g}) must not exceed fresh ({self.fresh:g})")
        return self

    def curve(self, feature_class: str) -> Curve | None:
        """The staleness curve of ``batch`` or ``stream`` features (None: age costs nothing)."""
        spec = getattr(self.features, feature_class, None) if self.features else None
        if feature_class == "batch" and self.feature_staleness is not None:
            return self.feature_staleness
        return getattr(spec, "staleness", None)

    def without(self, feature_class: str) -> float:
        """The metric of a prediction made with no features of this class at all."""
        spec = getattr(self.features, feature_class, None) if self.features else None
        if spec is not None and spec.without is not None:
            return spec.without
        curve = self.curve(feature_class) if feature_class != "request" else None
        return self.fresh if curve is None else curve.limit(self.fresh)

    def cold_start(self, feature_class: str) -> float:
        """The metric of a prediction for an entity with none of this class's features yet."""
        spec = getattr(self.features, feature_class, None) if self.features else None
        if spec is not None and getattr(spec, "cold_start", None) is not None:
            return spec.cold_start
        return self.fallback if feature_class == "batch" else self.without(feature_class)

    def stale_classes(self) -> list[str]:
        """The feature classes whose age costs quality."""
        return [c for c in ("batch", "stream") if self.curve(c) is not None]
