"""Where the model runs and how fast it is: the network between clients and the serving tier,
and model variants (quantised, distilled, pruned, compiled)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from sim.scenario.fields import Dist, Model

# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


class Region(Model):
    """Clients in one region: their share of users and their round trip to the serving tier."""

    name: str = Field(description="A label, e.g. eu or mobile.")
    share: float = Field(gt=0, le=1, description="Share of users (entities) in this region.")
    rtt: Dist = Field(description="Round trip between a client here and the serving tier.")


class Network(Model):
    """The round trip between the client and the serving tier: added to the latency of every
    request served in the cloud (stored or online predictions), counted in the SLO and the
    latency penalty, occupying no replica. One ``rtt`` for every client, or ``regions``, each
    user always in the same one (by a hash of the entity)."""

    rtt: Dist | None = Field(None, description="Round trip for every client, e.g. {lognormal: "
                             "{median: 40ms, p99: 200ms}}.")
    regions: list[Region] | None = Field(None, description="Per region: [{name, share, rtt}, "
                                         "...], shares summing to 1.")

    @model_validator(mode="after")
    def _check(self) -> "Network":
        if (self.rtt is None) == (self.regions is None):
            raise ValueError("give rtt (one round trip for every client) or regions (a list of "
                             "{name, share, rtt}), not both and not neither")
        if self.regions is not None:
            if not self.regions:
                raise ValueError("regions: give at least one")
            total = sum(r.share for r in self.regions)
            if abs(total - 1) > 1e-6:
                raise ValueError(f"regions: the shares must sum to 1 (got {total:g})")
        return self

    @property
    def parts(self) -> list[tuple[float, object]]:
        """(share of users, round trip) per region; one part without regions."""
        if self.regions is None:
            return [(1.0, self.rtt)]
        return [(r.share, r.rtt) for r in self.regions]


# ---------------------------------------------------------------------------------------------
# Model variants
# ---------------------------------------------------------------------------------------------

class Variant(Model):
    """A cheaper form of the model: each factor multiplies what the full model does."""

    name: str = Field(description="What it is, e.g. int8, distilled, pruned, compiled.")
    latency: float = Field(1.0, gt=0, description="Service time per request (one at a time), "
                           "and a batch's fixed time, times this (0.5: twice as fast).")
    throughput: float = Field(1.0, gt=0, description="Requests per second under batching (a "
                              "batch's per-item time divided by this; a measured batch_time "
                              "table divided by it), and a batch scoring job's throughput "
                              "times it.")
    quality_kept: float = Field(1.0, gt=0, le=1, description="Share of the full model's quality "
                                "kept: each prediction loses (1 - quality_kept) x "
                                "quality.fresh.")


# The book's figures (C. Huyen, Designing Machine Learning Systems, O'Reilly 2022, ch. 7), as
# defaults a team replaces with its own measurements.
VARIANTS = {
    # Roblox (via the book): INT8 quantisation of a BERT model, 7x lower latency and 8x the
    # throughput; the book gives no quality figure, so none is lost here: measure yours.
    "int8": Variant(name="int8", latency=1 / 7, throughput=8.0, quality_kept=1.0),
    # DistilBERT (Sanh et al. 2019, via the book): 40% smaller, 60% faster, 97% of the quality.
    "distilled": Variant(name="distilled", latency=1 / 1.6, throughput=1.6, quality_kept=0.97),
}

VariantField = Annotated[Variant | None, WithJsonSchema({"anyOf": [
    {"type": "string", "enum": sorted(VARIANTS)},
    {"type": "object", "additionalProperties": False, "required": ["name"],
     "properties": {name: {"type": "string" if name == "name" else "number",
                           "description": field.description}
                    for name, field in Variant.model_fields.items()}},
    {"type": "null"}]})]

VARIANT_HELP = ("The model variant served: int8 (7x lower latency, 8x throughput, no quality "
                "lost: the book's BERT figures), distilled (60% faster, 97% of the quality: "
                "DistilBERT), or {name, latency, throughput, quality_kept} from your own "
                "measurements.")


def variant_from(value):
    """A variant's name becomes its preset; a mapping stays as it is."""
    if isinstance(value, str):
        if value not in VARIANTS:
            raise ValueError(f"unknown variant {value!r}: use one of {', '.join(sorted(VARIANTS))}"
                             f" or {{name, latency, throughput, quality_kept}}")
        return VARIANTS[value]
    return value


class _WithVariant(Model):
    """The ``variant`` key every architecture takes."""

    variant: VariantField = Field(None, description=VARIANT_HELP)

    @field_validator("variant", mode="before")
    @classmethod
    def _preset(cls, value):
        return variant_from(value)

    @property
    def variant_loss(self) -> float:
        """Fraction of ``quality.fresh`` each prediction loses to the variant."""
        return 0.0 if self.variant is None else 1.0 - self.variant.quality_kept


def with_variant(spec):
    """The architecture section as its variant serves: service and batch times scaled by
    ``latency`` (per-item and measured batch times by 1 / ``throughput``), a scoring job's
    throughput times ``throughput``. The section itself when it has no variant."""
    v = getattr(spec, "variant", None)
    if v is None:
        return spec
    updates = {}
    if getattr(spec, "device_time", None) is not None:
        updates["device_time"] = spec.device_time.scaled(v.latency)
    cloud = getattr(spec, "cloud", None)
    if cloud is not None:
        updates["cloud"] = cloud.model_copy(update={"serving": _scaled_serving(cloud.serving,
                                                                               v)})
    if getattr(spec, "throughput", None) is not None:
        updates["throughput"] = spec.throughput * v.throughput
    serving = getattr(spec, "serving", None)
    if serving is not None:
        updates["serving"] = _scaled_serving(serving, v)
    return spec.model_copy(update=updates)


def _scaled_serving(serving, v: Variant):
    changed = {}
    if serving.service_time is not None:
        changed["service_time"] = serving.service_time.scaled(v.latency)
    b = serving.batching
    if b is not None and b.batch_time is not None:
        changed["batching"] = b.model_copy(update={"batch_time": {
            size: d.scaled(1 / v.throughput) for size, d in b.batch_time.items()}})
    elif b is not None:
        changed["batching"] = b.model_copy(update={"fixed": b.fixed.scaled(v.latency),
                                                   "per_item": b.per_item.scaled(
                                                       1 / v.throughput)})
    return serving.model_copy(update=changed)
