"""The provider's models as data: one entry per model, read by pairing, validation, cost, the
provider client's request body, the job report and the emulator. Pure: no I/O.

Adding a model of the same provider is one ``Model`` entry in ``MODELS`` (plus tests): nothing
else branches on a model's name. Each fact carries its source, as in ``provider_facts``.

Bucket roles: the files of one set (same folder, same stem) by what they are for:
``image`` (``alice.png``), ``audio`` (``alice.wav``), ``mask`` (``alice.mask.png``),
``left`` (``alice.left.wav``) and ``right`` (``alice.right.wav``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from s2v.model import provider_facts

IMAGE_ROLES = ("image", "mask")
AUDIO_ROLES = ("audio", "left", "right")
ROLE_NAMES = {"image": "image", "audio": "audio", "mask": "mask image", "left": "left speaker's track",
              "right": "right speaker's track"}

# How a model's output length follows its audio tracks (and ``order``, for models that take one):
SEQUENCE = "sequence"  # the tracks play one after the other: the video is as long as their sum
OVERLAP = "overlap"    # the tracks play at the same time: the video is as long as the longest
# How a model bills the tracks of one call:
BILL_LONGEST = "longest"  # one track (or the video's length)
BILL_SUM = "sum"          # every track's length added up


@dataclass(frozen=True)
class Model:
    name: str  # what a user writes in "model" (the provider path is accepted too)
    path: str  # the provider's model id: POST {base}/api/v3/{path}
    title: str
    # Request field -> the bucket role whose file (as a URL) fills it.
    fields: Mapping[str, str]
    optional_roles: frozenset[str] = frozenset()
    resolutions: tuple[str, ...] = provider_facts.RESOLUTIONS
    price_per_second: Mapping[str, float] = field(default_factory=lambda: dict(provider_facts.PRICE_PER_SECOND))
    max_seconds: float = provider_facts.MAX_SECONDS_PER_CALL
    billed_min_seconds: int = provider_facts.BILLED_MIN_SECONDS
    billing: str = BILL_LONGEST
    billing_cap_seconds: int | None = None
    # ``order`` values the model takes and how each lays out the tracks; empty: it takes no order.
    orders: Mapping[str, str] = field(default_factory=dict)
    default_order: str = ""
    # Other body fields every request carries: prompt, resolution, seed.
    sources: tuple[str, ...] = ()

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.fields.values())

    @property
    def required_roles(self) -> frozenset[str]:
        return self.roles - self.optional_roles

    @property
    def audio_roles(self) -> tuple[str, ...]:
        return tuple(r for r in AUDIO_ROLES if r in self.roles)

    def takes(self, roles: frozenset[str] | set[str]) -> bool:
        """Whether this model can render a set made of exactly these roles."""
        return self.required_roles <= roles <= self.roles

    def field_for(self, role: str) -> str:
        return next(name for name, r in self.fields.items() if r == role)

    def output_seconds(self, tracks: Mapping[str, float], order: str = "") -> float:
        """How long the rendered video is for audio tracks this long (role -> seconds)."""
        lengths = [tracks[r] for r in self.audio_roles if r in tracks]
        layout = self.orders.get(order or self.default_order, OVERLAP)
        return float(sum(lengths) if layout == SEQUENCE else max(lengths, default=0.0))

    def billed_seconds(self, tracks: Mapping[str, float], order: str = "") -> int:
        """Seconds the provider bills: whole seconds rounded up (after rounding to the millisecond,
        so 3.0000001 s bills 3 s), at least the minimum, at most the cap."""
        lengths = [tracks[r] for r in self.audio_roles if r in tracks]
        media = sum(lengths) if self.billing == BILL_SUM else self.output_seconds(tracks, order)
        billed = max(self.billed_min_seconds, math.ceil(round(media, 3)))
        return min(billed, self.billing_cap_seconds) if self.billing_cap_seconds else billed

    def price_usd(self, tracks: Mapping[str, float], resolution: str, order: str = "",
                  price_per_second: float | None = None) -> float:
        rate = self.price_per_second[resolution] if price_per_second is None else price_per_second
        return round(self.billed_seconds(tracks, order) * rate, 4)


WAN_S2V = Model(
    name="wan-2.2-s2v",
    path="wavespeed-ai/wan-2.2/speech-to-video",
    title="Wan 2.2 Speech-to-Video",
    fields={"image": "image", "audio": "audio"},
    sources=("model docs page wavespeed-ai/wan-2.2/speech-to-video (see provider_facts)",),
)

# InfiniteTalk docs pages (docs-api/wavespeed-ai/infinitetalk and .../infinitetalk/multi): same
# prices as Wan 2.2 S2V ($0.15 / $0.30 per 5 s at 480p / 720p), up to 10 minutes per call, 480p and
# 720p. The pages' billing notes differ between revisions: "minimum charge: 5 seconds" (billed
# duration = the video's length rounded up) and later "input media duration rounded up, at least
# 3 s". The higher minimum is kept: an estimate guards the budget, so it must not undercount.
INFINITETALK_BILLED_MIN_SECONDS = 5

INFINITETALK = Model(
    name="infinitetalk",
    path="wavespeed-ai/infinitetalk",
    title="InfiniteTalk",
    # Docs page "How to use": audio, image, optional mask_image ("which regions can move"),
    # optional prompt, resolution 480p | 720p, seed.
    fields={"image": "image", "audio": "audio", "mask_image": "mask"},
    optional_roles=frozenset({"mask"}),
    billed_min_seconds=INFINITETALK_BILLED_MIN_SECONDS,
    sources=("docs-api/wavespeed-ai/infinitetalk", "PROVIDER.md (related models)"),
)

INFINITETALK_MULTI = Model(
    name="infinitetalk-multi",
    path="wavespeed-ai/infinitetalk/multi",
    title="InfiniteTalk Multi (two speakers)",
    # Input schema (models/wavespeed-ai/infinitetalk-fast/multi/llms.txt, same fields as the
    # standard model's docs page): image, left_audio ("the person on the left"), right_audio,
    # prompt, order; the standard model's page adds resolution 480p | 720p and seed.
    fields={"image": "image", "left_audio": "left", "right_audio": "right"},
    billed_min_seconds=INFINITETALK_BILLED_MIN_SECONDS,
    # The docs do not say whether two tracks bill as the longer one or as their sum (nor whether
    # "meanwhile" bills the video's length): the sum is assumed, the higher of the readings.
    billing=BILL_SUM,
    # Docs page (infinitetalk-multi, billing rules): "billing is capped at 600 seconds".
    billing_cap_seconds=600,
    # ``order``: "meanwhile" means both play at the same time; "left_right" the left audio first,
    # then the right; "right_left" the reverse (input schema). The docs show no default; the
    # request always names one, and s2v's default is the docs' example value, "meanwhile".
    orders={"meanwhile": OVERLAP, "left_right": SEQUENCE, "right_left": SEQUENCE},
    default_order="meanwhile",
    sources=("docs-api/wavespeed-ai/infinitetalk-multi", "models/wavespeed-ai/infinitetalk-fast/multi/llms.txt"),
)

# The -fast variants (infinitetalk-fast, infinitetalk-fast/multi) take the same fields without
# resolution; their docs pages give no price, so they are not offered until one is known.
MODELS: tuple[Model, ...] = (WAN_S2V, INFINITETALK, INFINITETALK_MULTI)
DEFAULT_MODEL = WAN_S2V.name


class Catalog:
    """A table of models, looked up by name or provider path (tests build their own)."""

    def __init__(self, models: tuple[Model, ...] = MODELS) -> None:
        self.models = models

    def get(self, name: str) -> Model | None:
        """The model with this name or provider path (any case, surrounding spaces ignored)."""
        if not isinstance(name, str):
            return None
        wanted = name.strip().lower()
        return next((m for m in self.models if wanted in (m.name, m.path)), None)

    def __getitem__(self, name: str) -> Model:
        model = self.get(name)
        if model is None:
            raise KeyError(name)
        return model

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    @property
    def resolutions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r for m in self.models for r in m.resolutions))

    @property
    def orders(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(o for m in self.models for o in m.orders))

    def for_roles(self, roles: frozenset[str] | set[str]) -> tuple[Model, ...]:
        return tuple(m for m in self.models if m.takes(roles))

    def by_path(self, path: str) -> Model | None:
        return next((m for m in self.models if m.path == path), None)


CATALOG = Catalog()
