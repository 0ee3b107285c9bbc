"""The model table and what reads it: pairing of masks and speaker tracks, the choice of model,
output length and billing, and the provider request's body. Pure: no I/O."""

from __future__ import annotations

import itertools

import pytest

from s2v.adapters.providers.wavespeed import SubmitRequest
from s2v.model.errors import InputError
from s2v.model.jobs import InputObject, job_id_for
from s2v.model.models import CATALOG, INFINITETALK, INFINITETALK_MULTI, WAN_S2V, Catalog, Model
from s2v.model.pairing import Ambiguous, Incomplete, ListedObject, Pair, match, parse_key
from s2v.model.params import Params, choose_model, resolve_params

P = "inputs/"
TWO = ("inputs/t/duo.png", "inputs/t/duo.left.wav", "inputs/t/duo.right.mp3")


def listed(*keys: str) -> list[ListedObject]:
    return [ListedObject(key=k, etag=f"etag-{i}", size=10) for i, k in enumerate(keys)]


def matched(event_key: str, *keys: str) -> Pair | Incomplete | Ambiguous:
    ref = parse_key(event_key, P)
    assert ref is not None
    return match(ref, listed(*keys), P)


def test_speaker_tracks_and_masks_belong_to_their_stem() -> None:
    left, mask = parse_key("inputs/t/duo.Left.WAV", P), parse_key("inputs/t/ann.mask.png", P)
    assert left and (left.stem, left.kind) == ("duo", "left")
    assert mask and (mask.stem, mask.kind) == ("ann", "mask")
    image = parse_key("inputs/t/duo.left.png", P)  # an image is never a speaker track
    assert image and (image.stem, image.kind) == ("duo.left", "image")


@pytest.mark.parametrize("arrived", list(itertools.permutations(TWO)))
def test_a_two_speaker_set_pairs_only_when_all_three_files_are_there_in_any_order(arrived: tuple[str, ...]) -> None:
    # Each event sees the files that arrived so far: never a pair before the third one.
    for seen in range(1, 3):
        found = matched(arrived[seen - 1], *arrived[:seen])
        assert isinstance(found, Incomplete), found
    found = matched(arrived[-1], *arrived)
    assert isinstance(found, Pair) and found.audio is None
    assert {role: obj.key for role, obj in found.extras.items()} == {"left": TWO[1], "right": TWO[2]}
    assert found.roles == {"image", "left", "right"}


def test_a_left_track_alone_is_never_a_single_speaker_pair() -> None:
    found = matched("inputs/t/duo.png", "inputs/t/duo.png", "inputs/t/duo.left.wav")
    assert found == Incomplete("right")
    assert matched("inputs/t/duo.right.wav", "inputs/t/duo.png", "inputs/t/duo.right.wav") == Incomplete("left")


def test_a_single_audio_beside_speaker_tracks_is_ambiguous() -> None:
    found = matched("inputs/t/duo.wav", *TWO, "inputs/t/duo.wav")
    assert isinstance(found, Ambiguous)
    assert "both a single audio and speaker tracks (duo.wav, duo.left.wav, duo.right.mp3)" in found.reason


def test_two_left_tracks_are_ambiguous() -> None:
    found = matched("inputs/t/duo.png", *TWO, "inputs/t/duo.left.mp3")
    assert isinstance(found, Ambiguous) and "2 left speaker track (.left.*) files" in found.reason


def test_a_mask_joins_a_pair_and_the_job_identity() -> None:
    found = matched("inputs/t/ann.mask.png", "inputs/t/ann.png", "inputs/t/ann.wav", "inputs/t/ann.mask.png")
    assert isinstance(found, Pair) and found.audio and found.extras["mask"].key == "inputs/t/ann.mask.png"
    image, audio = InputObject("i", "e1", 1), InputObject("a", "e2", 1)
    plain = job_id_for("t", "ann", image, audio)
    masked = job_id_for("t", "ann", image, audio, extra_inputs={"mask": InputObject("m", "e3", 1)})
    remasked = job_id_for("t", "ann", image, audio, extra_inputs={"mask": InputObject("m", "e4", 1)})
    assert len({plain, masked, remasked}) == 3
    assert plain == job_id_for("t", "ann", image, audio, extra_inputs={})  # a plain pair's id is unchanged


def test_both_tracks_make_the_identity() -> None:
    image = InputObject("i", "e1", 1)
    ids = {job_id_for("t", "duo", image, None, extra_inputs={"left": InputObject("l", "e2", 1),
                                                              "right": InputObject("r", etag, 1)})
           for etag in ("e3", "e4")}
    assert len(ids) == 2


# --- output length and billing -------------------------------------------------------------------

def test_two_speakers_play_by_order_and_bill_both_tracks() -> None:
    tracks = {"left": 3.2, "right": 2.1}
    assert INFINITETALK_MULTI.output_seconds(tracks, "left_right") == pytest.approx(5.3)
    assert INFINITETALK_MULTI.output_seconds(tracks, "right_left") == pytest.approx(5.3)
    assert INFINITETALK_MULTI.output_seconds(tracks, "meanwhile") == pytest.approx(3.2)
    assert INFINITETALK_MULTI.output_seconds(tracks) == pytest.approx(3.2)  # the default order: meanwhile
    # Docs silent on longest vs sum: the sum (5.3 → 6 s), whatever the order; capped at 600 s.
    assert INFINITETALK_MULTI.billed_seconds(tracks, "meanwhile") == 6
    assert INFINITETALK_MULTI.billed_seconds({"left": 400.0, "right": 400.0}, "meanwhile") == 600
    assert INFINITETALK_MULTI.price_usd(tracks, "720p", "left_right") == pytest.approx(0.36)


@pytest.mark.parametrize(("model", "seconds", "billed"), [
    (WAN_S2V, 1.0, 3), (WAN_S2V, 3.0000001, 3), (WAN_S2V, 3.2, 4),
    (INFINITETALK, 1.0, 5), (INFINITETALK, 5.0004, 5), (INFINITETALK, 7.01, 8),
])
def test_each_model_bills_by_its_own_minimum(model: Model, seconds: float, billed: int) -> None:
    assert model.billed_seconds({"audio": seconds}) == billed


# --- choosing the model --------------------------------------------------------------------------

def chosen(roles: set[str], default: str = WAN_S2V.name, **params: str) -> tuple[Params, Model]:
    return choose_model(Params(**params), frozenset(roles), default_model=default, files="f.png, f.wav")


def test_the_stack_default_renders_a_pair_and_other_sets_get_the_model_that_takes_them() -> None:
    assert chosen({"image", "audio"})[1] is WAN_S2V
    assert chosen({"image", "audio"}, default="infinitetalk")[1] is INFINITETALK
    assert chosen({"image", "audio", "mask"})[1] is INFINITETALK
    params, model = chosen({"image", "left", "right"})
    assert model is INFINITETALK_MULTI and params.order == "meanwhile" and params.model == "infinitetalk-multi"


@pytest.mark.parametrize(("roles", "params", "code", "words"), [
    ({"image", "left", "right"}, {"model": "wan-2.2-s2v"}, "model_does_not_fit",
     ("model 'wan-2.2-s2v' needs audio + image", "set \"model\" to 'infinitetalk-multi'")),
    ({"image", "audio", "mask"}, {"model": "wan-2.2-s2v"}, "model_does_not_fit", ("'infinitetalk'",)),
    ({"image", "audio"}, {"order": "left_right"}, "invalid_order", ('"order" applies to two-speaker models only',)),
    ({"image", "left", "right"}, {"order": "sideways"}, "invalid_order", ('"meanwhile", "left_right", "right_left"',)),
])
def test_a_model_that_cannot_take_the_set_is_refused_precisely(roles: set[str], params: dict[str, str], code: str,
                                                                words: tuple[str, ...]) -> None:
    with pytest.raises(InputError) as caught:
        chosen(roles, **params)
    assert caught.value.code == code
    for word in words:
        assert word in caught.value.reason


def test_model_and_order_come_from_the_sidecar_or_metadata_and_are_checked() -> None:
    defaults = Params()
    got = resolve_params(b'{"model": "InfiniteTalk"}', {"order": "left_right"}, defaults=defaults,
                         max_prompt_chars=100)
    assert (got.model, got.order) == ("infinitetalk", "left_right")
    assert resolve_params(b'{"model": "wavespeed-ai/infinitetalk/multi"}', {}, defaults=defaults,
                          max_prompt_chars=100).model == "infinitetalk-multi"
    with pytest.raises(InputError, match=r"model \"infinite-talk\" is not known \(did you mean 'infinitetalk'\?\)"):
        resolve_params(b'{"model": "infinite-talk"}', {}, defaults=defaults, max_prompt_chars=100, sidecar_key="k")
    with pytest.raises(InputError, match="x-amz-meta-order: order must be one of"):
        resolve_params(None, {"order": "together"}, defaults=defaults, max_prompt_chars=100)


# --- the request body ----------------------------------------------------------------------------

def test_the_request_body_names_each_file_as_the_model_does() -> None:
    urls = {"image": "https://i", "left": "https://l", "right": "https://r"}
    request = SubmitRequest.for_model(INFINITETALK_MULTI, urls, prompt="p", resolution="720p", seed=3,
                                      order="right_left")
    assert request.model == "wavespeed-ai/infinitetalk/multi"
    assert request.body() == {"image": "https://i", "left_audio": "https://l", "right_audio": "https://r",
                              "prompt": "p", "resolution": "720p", "seed": 3, "order": "right_left"}
    single = SubmitRequest.for_model(INFINITETALK, {"image": "https://i", "audio": "https://a"}, order="meanwhile")
    assert single.body() == {"image": "https://i", "audio": "https://a", "prompt": "", "resolution": "480p",
                             "seed": -1}  # no mask given, no mask_image; no order for a one-speaker model
    assert SubmitRequest("https://i", "https://a").body() == SubmitRequest.for_model(
        WAN_S2V, {"image": "https://i", "audio": "https://a"}).body()


def test_a_catalog_finds_models_by_name_or_path_and_lists_what_they_accept() -> None:
    catalog = Catalog((WAN_S2V, INFINITETALK))
    assert catalog.get(" WAVESPEED-AI/INFINITETALK ") is INFINITETALK and catalog.get("infinitetalk-multi") is None
    assert catalog.orders == () and CATALOG.orders == ("meanwhile", "left_right", "right_left")
    assert catalog.for_roles({"image", "audio"}) == (WAN_S2V, INFINITETALK)
