"""Job parameters: the ``<stem>.json`` sidecar (or a manifest row), then the ``_defaults.json`` of
the folder and of each folder above it (deepest first), then S3 object metadata, then stack defaults.

Each field is taken from the first source that sets it, and the job records which source that was.
A value that is set but wrong is an ``InputError`` naming the source, the field and what would be
accepted, never a silent default.
Pure: no I/O.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from s2v.model import documents
from s2v.model.errors import InputError
from s2v.model.models import CATALOG, Catalog, Model
from s2v.model.naming import check_template

FIELDS = ("prompt", "resolution", "seed", "model", "order", "segment_seconds")
SEED_MIN, SEED_MAX = -1, 2_147_483_647  # -1 asks the provider for a random seed
MAX_NUMBER_CHARS = 24  # a number's text where it is converted (a seed has at most 11)
OUTPUT_NAME = "output_name"  # a name template (``s2v.model.naming``); never sent to the provider
STACK_DEFAULT = "stack default"
EXAMPLE = '{"prompt": "a warm, friendly greeting", "resolution": "720p", "seed": 42}'


@dataclass(frozen=True)
class Params:
    prompt: str = ""
    resolution: str = "480p"
    seed: int = -1
    model: str = ""  # a model's name (model/models.py); "" until chosen for the set (``choose_model``)
    order: str = ""  # two-speaker models only: how the speakers' tracks are laid out
    # Long talks: cut into segments of at most this many seconds, rendered in parallel (0: only
    # audio longer than one call is cut). Checked against the stack's limits in flows/ingest.py.
    segment_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        chosen = {"prompt": self.prompt, "resolution": self.resolution, "seed": self.seed, "model": self.model}
        return chosen | ({"order": self.order} if self.order else {})


@dataclass(frozen=True)
class Layer:
    """One params document and where it came from (``inputs/a/_defaults.json``, ``... row 3``)."""

    source: str
    document: Mapping[str, Any]
    from_json: bool = True  # False: every value is text (a CSV cell), read like object metadata


@dataclass(frozen=True)
class Resolved:
    params: Params
    output_name: str = ""  # the template that won, "" for the default name
    sources: Mapping[str, str] = field(default_factory=dict)  # field -> where its value came from


def document_keys() -> tuple[str, ...]:
    return (*FIELDS, OUTPUT_NAME)


def parse_document(raw: bytes, key: str) -> dict[str, Any]:
    """A sidecar or ``_defaults.json``: a JSON object with known keys, or an ``InputError``."""
    return _sidecar_document(raw, key)


def check_document(document: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A document that is already parsed (a manifest row): the same unknown-key check as a file."""
    unknown = sorted(set(document) - set(document_keys()))
    if unknown:
        raise InputError(f"{source} has unknown keys: {_unknown_list(unknown)}; the allowed keys are "
                         f"{_allowed_list()}.", code="unknown_params")
    return dict(document)


def resolve_layers(layers: Sequence[Layer], metadata: Mapping[str, str], *, defaults: Params,
                   max_prompt_chars: int) -> Resolved:
    """Params for one job from ``layers`` (highest precedence first), then metadata, then defaults.

    Per field the value that wins is validated with its source named; one it overrides is never
    used, so a sidecar can fix a bad value in a folder's defaults."""
    chosen: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in FIELDS:
        layer = next((lay for lay in layers if name in lay.document), None)
        if layer is not None:
            chosen[name] = _field(name, layer.document[name], f"{layer.source}:", max_prompt_chars,
                                  from_json=layer.from_json)
            sources[name] = layer.source
        elif name in metadata:
            chosen[name] = _field(name, metadata[name], f"S3 object metadata x-amz-meta-{name}:", max_prompt_chars,
                                  from_json=False)
            sources[name] = f"S3 object metadata x-amz-meta-{name}"
        else:
            sources[name] = STACK_DEFAULT
    output_name = ""
    named = next((lay for lay in layers if OUTPUT_NAME in lay.document), None)
    if named is not None:
        output_name = check_template(named.document[OUTPUT_NAME], f"{named.source}:")
        sources[OUTPUT_NAME] = named.source
    return Resolved(params=replace(defaults, **chosen), output_name=output_name, sources=sources)


def check_values(layer: Layer, max_prompt_chars: int) -> None:
    """Every value ``layer`` sets is valid, or an ``InputError`` names the first that is not."""
    check_document(layer.document, layer.source)
    for name in FIELDS:
        if name in layer.document:
            _field(name, layer.document[name], f"{layer.source}:", max_prompt_chars, from_json=layer.from_json)
    if OUTPUT_NAME in layer.document:
        check_template(layer.document[OUTPUT_NAME], f"{layer.source}:")


def resolve_params(sidecar: bytes | None, metadata: Mapping[str, str], *, defaults: Params,
                   max_prompt_chars: int, sidecar_key: str = "", catalog: Catalog = CATALOG) -> Params:
    """Params for one job. ``metadata`` is boto3's ``Metadata`` (``x-amz-meta-`` already stripped).

    A sidecar must be a well-formed object with known keys. Per field, the value that wins is
    validated; one it overrides is never used, so a sidecar can fix bad metadata. Other metadata
    keys (set by upload tools, or by s2v itself) are not ours to judge and are ignored.
    """
    key = sidecar_key or "the params file"
    document = _sidecar_document(sidecar, key) if sidecar is not None else {}
    chosen: dict[str, Any] = {}
    for name in FIELDS:
        if name in document:
            chosen[name] = _field(name, document[name], f"{key}:", max_prompt_chars, from_json=True,
                                  catalog=catalog)
        elif name in metadata:
            chosen[name] = _field(name, metadata[name], f"S3 object metadata x-amz-meta-{name}:", max_prompt_chars,
                                  from_json=False, catalog=catalog)
    return replace(defaults, **chosen)


def choose_model(params: Params, roles: frozenset[str], *, default_model: str, files: str,
                 catalog: Catalog = CATALOG) -> tuple[Params, Model]:
    """The model for a set of files with these bucket roles, and the params completed for it.

    A model the params name must take the set's files; with none named, the stack default is
    used when it can, else the first model in the table that takes them (a two-speaker set needs a
    two-speaker model). The resolution and the order are checked against the model's own lists.
    ``files`` names the set's files for the messages.
    """
    named = catalog.get(params.model) if params.model else None
    if params.model and named is None:  # unreachable through resolve_params; a direct caller's slip
        raise InputError(f"unknown model {params.model!r}", code="unknown_model")
    candidates = (named,) if named else tuple(m for m in (catalog.get(default_model),) if m) + catalog.models
    model = next((m for m in candidates if m.takes(roles)), None)
    if model is None:
        takers = [m.name for m in catalog.for_roles(roles)]
        hint = f'set "model" to {" or ".join(repr(n) for n in takers)}' if takers else "no model takes them"
        needs = " + ".join(sorted(named.required_roles)) if named else ""
        which = f"model {named.name!r} needs {needs}" if named else "no model takes these files"
        raise InputError(f"{which}, but the set has {files}: {hint}, or rename the files "
                         "(see the README: choosing a model).", code="model_does_not_fit")
    if params.resolution not in model.resolutions:
        allowed = " or ".join(f'"{r}"' for r in model.resolutions)
        raise InputError(f"model {model.name!r} renders at {allowed}, not {params.resolution!r}.",
                         code="invalid_resolution")
    order = params.order
    if order and not model.orders:
        raise InputError(f'"order" applies to two-speaker models only; model {model.name!r} takes one audio: '
                         "remove it.", code="invalid_order")
    if model.orders and order not in model.orders:
        order = model.default_order if not order else _bad_order(order, model)
    return replace(params, model=model.name, order=order), model


def _bad_order(order: str, model: Model) -> str:
    allowed = ", ".join(f'"{o}"' for o in model.orders)
    raise InputError(f"order must be one of {allowed} for model {model.name!r}, not {_shown(order)}.",
                     code="invalid_order")


def _sidecar_document(raw: bytes, key: str) -> dict[str, Any]:
    document = _parse_json(raw, key)
    if not isinstance(document, dict):
        raise InputError(f"{key} must hold a JSON object like {EXAMPLE}; it holds {_json_type(document)}.",
                         code="not_a_json_object")
    unknown = sorted(set(document) - set(document_keys()))
    if unknown:
        raise InputError(f"{key} has unknown keys: {_unknown_list(unknown)}; the allowed keys are "
                         f"{_allowed_list()}.", code="unknown_params")
    return document


def _field(name: str, value: object, source: str, max_prompt_chars: int, *, from_json: bool,
           catalog: Catalog = CATALOG) -> object:
    if name == "prompt":
        return _prompt(value, source, max_prompt_chars)
    if name == "resolution":
        return _resolution(value, source, catalog)
    if name == "model":
        return _model(value, source, catalog)
    if name == "order":
        return _order(value, source, catalog)
    if name == "segment_seconds":
        return _segment_seconds(value, source)
    return _json_seed(value, source) if from_json else _text_seed(value, source)


def _parse_json(raw: bytes, key: str) -> Any:
    if not raw.decode("utf-8-sig", "replace").strip():
        raise InputError(f"{key} is empty: write a JSON object like {EXAMPLE}, or delete the file to use the "
                         "defaults.", code="invalid_json")
    return documents.parse(raw, key, documents.SIDECAR, example=EXAMPLE)


def _unknown_list(unknown: list[str]) -> str:
    described = []
    for name in (documents.storable(n, max_chars=60) for n in unknown):  # a key may be long: shown cut
        close = difflib.get_close_matches(name.lower(), document_keys(), n=1)
        described.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    return ", ".join(described)


def _allowed_list() -> str:
    keys = document_keys()
    return ", ".join(keys[:-1]) + " and " + keys[-1]


def _prompt(value: object, source: str, max_prompt_chars: int) -> str:
    if not isinstance(value, str):
        raise InputError(f"{source} prompt must be text in quotes, not {_json_type(value)}.", code="invalid_prompt")
    if len(value) > max_prompt_chars:
        raise InputError(f"{source} prompt is {len(value):,} characters long; the limit is {max_prompt_chars:,}: "
                         "shorten it.", code="prompt_too_long")
    return value


def _model(value: object, source: str, catalog: Catalog) -> str:
    model = catalog.get(value) if isinstance(value, str) else None
    if model is None:
        allowed = ", ".join(f'"{n}"' for n in catalog.names)
        close = difflib.get_close_matches(str(value).strip().lower(), catalog.names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"{source} model {_shown(value)} is not known{hint}; use one of {allowed}.",
                         code="unknown_model")
    return model.name


def _order(value: object, source: str, catalog: Catalog) -> str:
    normalised = value.strip().lower() if isinstance(value, str) else None
    if normalised not in catalog.orders:
        allowed = ", ".join(f'"{o}"' for o in catalog.orders)
        raise InputError(f"{source} order must be one of {allowed} (two speakers: who speaks when), not "
                         f"{_shown(value)}.", code="invalid_order")
    return normalised


def _resolution(value: object, source: str, catalog: Catalog = CATALOG) -> str:
    normalised = value.strip().lower() if isinstance(value, str) else None
    if normalised not in catalog.resolutions:
        allowed = " or ".join(f'"{r}"' for r in catalog.resolutions)
        raise InputError(f"{source} resolution must be {allowed}, not {_shown(value)}.", code="invalid_resolution")
    return normalised


def _segment_seconds(value: object, source: str) -> float:
    number: float | None = None
    if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)
                                    and abs(value) < 10 ** MAX_NUMBER_CHARS):
        number = float(value)
    elif isinstance(value, str) and len(value) <= MAX_NUMBER_CHARS:
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or number < 0:
        raise InputError(f"{source} segment_seconds must be a number of seconds (like 60), or 0 to cut only talks "
                         f"longer than one call; not {_shown(value)}.", code="invalid_segment_seconds")
    return number


def _json_seed(value: object, source: str) -> int:
    if isinstance(value, str):
        raise InputError(f"{source} seed must be a number without quotes, like 42 (or -1 for random), not "
                         f"{_shown(value)}.", code="invalid_seed")
    if isinstance(value, bool) or not isinstance(value, int):  # bool is an int in Python, not in JSON
        raise InputError(f"{source} seed must be a whole number from {SEED_MIN} (random) to {SEED_MAX}, not "
                         f"{_shown(value)}.", code="invalid_seed")
    return _seed_in_range(value, source)


def _text_seed(value: object, source: str) -> int:
    try:
        if isinstance(value, str) and len(value) > MAX_NUMBER_CHARS:  # int() of thousands of digits is slow
            raise ValueError("too long")
        seed = int(str(value).strip(), 10)
    except ValueError as exc:
        raise InputError(f"{source} seed must be a whole number from {SEED_MIN} (random) to {SEED_MAX}, not "
                         f"{_shown(value)}.", code="invalid_seed") from exc
    return _seed_in_range(seed, source)


def _seed_in_range(seed: int, source: str) -> int:
    if not SEED_MIN <= seed <= SEED_MAX:
        raise InputError(f"{source} seed {seed} is out of range: use a whole number from {SEED_MIN} (random) to "
                         f"{SEED_MAX}.", code="invalid_seed")
    return seed


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {_shown(value)}"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _shown(value: object) -> str:
    """A value as the user wrote it, cut short if long."""
    if isinstance(value, str) and len(value) > 60:
        return json.dumps(value[:60], ensure_ascii=False)[:-1] + '…"'
    return json.dumps(value, ensure_ascii=False)
