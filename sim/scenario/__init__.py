"""The scenario: one YAML file, validated into typed objects.

The pydantic models are the declaration of the format (see DESIGN.md), one module per
section: ``fields`` (durations, rates, counts, distributions and their bounds), ``workload``,
``quality``, ``operations`` (training, drift, costs, business, SLO), ``architectures``, and
``loading`` (the whole scenario; :func:`load_scenario` reads a file, applies ``--set``
overrides, validates, and turns every problem into a :class:`ScenarioError` whose lines name
the file, the key path, what was expected and what was found). Everything is importable from
here, as before the split.
"""

from __future__ import annotations

from sim.scenario.fields import (Count, Dist, Duration, MAX_COUNT, MAX_DURATION_S, MAX_METRIC,
                                 MAX_MULTIPLIER, MAX_PRICE, MAX_UNITS, MIN_DURATION_S,
                                 MIN_RATE_PER_S, MetricValue, Model, Multiplier,
                                 NonNegativeDuration, PositiveDuration, Price, Rate,
                                 ScenarioError, _COUNT_JSON_SCHEMA, _did_you_mean, _DIST_HELP,
                                 _DURATION_UNITS_RE, _NUMBER_RE, _PERCENTILE_RE,
                                 _RATE_JSON_SCHEMA, _alternatives, _check_seconds, _count,
                                 _dist_json_schema, _distribution, _duration,
                                 _duration_json_schema, _metric_bound, _multiplier_bound,
                                 _must_be_non_negative, _must_be_positive, _non_negative,
                                 _parse_duration, _percentiles, _positive, _price_bound, _rate,
                                 _rate_positive, _read_empirical, _text_schema)
from sim.scenario.workload import (Arrivals, Burst, Mmpp, NewEntities, Popularity, Trace,
                                   Workload, _PATTERN_DEFAULTS, _StrictBool)
from sim.scenario.quality import (Curve, ExponentialCurve, FEATURE_CLASSES, FeatureClass,
                                  FeatureClasses, LinearCurve, Quality,
                                  RequestFeatureClass)
from sim.scenario.operations import (BadModels, Business, Costs, Drift, EVALUATION_METHODS,
                                     Evaluation, Freshness, Labels, LatencyPenalty, Slo, Stateful,
                                     Training, Trigger)
from sim.scenario.architectures import (ARCHITECTURE_SPECS, Architecture, Autoscaling, BatchArchitecture,
                                        BatchFeatures, Batching, CloudFallback, EdgeArchitecture,
                                        Features, HybridArchitecture, Sync,
                                        KINDS, OnlineArchitecture, RequestFeatures, Serving,
                                        SlowPeriods, SlowState, StreamFeatures, StreamingArchitecture,
                                        _Scheduled)
from sim.scenario.deployment import VARIANTS, Network, Region, Variant, with_variant
from sim.scenario.pipelines import (FALLBACK_STEPS, Failures, Pipelines, Spot,
                                    StreamOutages)
from sim.scenario.loading import (Scenario, dump_yaml, load_scenario, scenario_from_dict,
                                  _MESSAGES, _clean_loc, _explain,
                                  _known_fields, _model_of, _parse_overrides, _replay_problems,
                                  _set_path)

__all__ = ["Scenario", "ScenarioError", "load_scenario", "scenario_from_dict", "dump_yaml"]
