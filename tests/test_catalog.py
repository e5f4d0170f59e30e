"""The catalog: every documented rule of every model, one valid and one invalid request each (DESIGN §3).

An invalid request must be a 400 `invalid_request_error` whose `param` is the exact field (with the
list index for list items), whose `key` names the rule, and whose message names the field.
"""

from __future__ import annotations

from typing import Any

import pytest

from vidgate import catalog, i18n
from vidgate.catalog import MODELS, PixverseV6, ViduQ3, ViduQ3Mix
from vidgate.catalog.base import SEED_MAX
from vidgate.errors import InvalidRequest

URL = "https://example.com/a.png"
URLS = [f"https://cdn.example.com/img/{i}.png" for i in range(8)]
VIDU = ("viduq3", "viduq3-mix")
ALL_MODELS = (*VIDU, "pixverse-v6")

VIDU_FIELDS = {"model", "prompt", "image_urls", "duration", "resolution", "aspect_ratio", "seed"}
PIXVERSE_FIELDS = {
    "model",
    "prompt",
    "negative_prompt",
    "duration",
    "resolution",
    "size",
    "seed",
    "audio",
    "watermark",
    "motion_mode",
    "generate_multi_clip_switch",
    "extend_from_task_id",
    "img_references",
    "first_frame_image",
    "last_frame_image",
    "image_urls",
}
FIELDS = {"viduq3": VIDU_FIELDS, "viduq3-mix": VIDU_FIELDS, "pixverse-v6": PIXVERSE_FIELDS}


def vidu(model: str = "viduq3", **fields: Any) -> dict[str, Any]:
    return {"model": model, "prompt": "a cat on a skateboard", "image_urls": [URL], **fields}


def pix(**fields: Any) -> dict[str, Any]:
    return {"model": "pixverse-v6", "prompt": "a cat on a skateboard", **fields}


def minimal(model: str, **fields: Any) -> dict[str, Any]:
    return pix(**fields) if model == "pixverse-v6" else vidu(model, **fields)


def without(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in keys}


def frames(**fields: Any) -> dict[str, Any]:
    return pix(**{"first_frame_image": URLS[0], "last_frame_image": URLS[1], **fields})


def expect_invalid(body: Any, param: str, key: str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        catalog.parse(body)
    err = info.value
    assert (err.status, err.type) == (400, "invalid_request_error")
    assert (err.param, err.key) == (param, key), err.message("en")
    assert i18n.has_key(err.key), f"rule {err.key!r} has no message"
    en = err.message("en")
    assert param in en, en
    assert "{" not in en, f"message template not filled: {en}"
    zh = err.message("zh")
    assert zh != en
    if key != "model_unknown":  # zh says 模型 and lists the models instead
        assert param in zh, zh
    assert "{" not in zh, f"message template not filled: {zh}"
    return err


# --- valid requests -------------------------------------------------------------------------------


def _valid_cases() -> list[Any]:
    cases: list[Any] = []

    def add(name: str, body: dict[str, Any], **expect: Any) -> None:
        cases.append(pytest.param(body, expect, id=name))

    for m in VIDU:
        add(f"{m}-prompt-5000", vidu(m, prompt="x" * 5000), prompt="x" * 5000)
        add(f"{m}-prompt-5000-cjk", vidu(m, prompt="猫" * 5000))
        add(f"{m}-prompt-padded", vidu(m, prompt="  a cat  "), prompt="  a cat  ")
        add(f"{m}-image_urls-1", vidu(m, image_urls=[URLS[0]]), image_urls=[URLS[0]])
        add(f"{m}-image_urls-7", vidu(m, image_urls=URLS[:7]), image_urls=URLS[:7])
        add(f"{m}-image_urls-http", vidu(m, image_urls=["http://example.com/a.jpg?x=1#y"]))
        add(f"{m}-image_urls-upper-scheme", vidu(m, image_urls=["HTTPS://EXAMPLE.COM/A.PNG"]))
        for ratio in ("16:9", "9:16", "4:3", "3:4", "1:1"):
            add(f"{m}-aspect_ratio-{ratio}", vidu(m, aspect_ratio=ratio), aspect_ratio=ratio)
        add(f"{m}-seed-0", vidu(m, seed=0), seed=0)
        add(f"{m}-seed-max", vidu(m, seed=SEED_MAX), seed=SEED_MAX)
        add(f"{m}-seed-null", vidu(m, seed=None), seed=None)
        add(f"{m}-duration-16", vidu(m, duration=16), duration=16)
        add(f"{m}-resolution-720p", vidu(m, resolution="720p"), resolution="720p")
        add(f"{m}-resolution-1080p", vidu(m, resolution="1080p"), resolution="1080p")
    add("viduq3-duration-3", vidu("viduq3", duration=3), duration=3)
    add("viduq3-resolution-540p", vidu("viduq3", resolution="540p"), resolution="540p")
    add("viduq3-mix-duration-1", vidu("viduq3-mix", duration=1), duration=1)
    add(
        "viduq3-every-field",
        vidu(duration=8, resolution="1080p", aspect_ratio="1:1", seed=42),
        duration=8,
        resolution="1080p",
        aspect_ratio="1:1",
        seed=42,
    )

    add("pixverse-prompt-5000", pix(prompt="x" * 5000), prompt="x" * 5000)
    add("pixverse-negative_prompt-2048", pix(negative_prompt="n" * 2048), negative_prompt="n" * 2048)
    add("pixverse-negative_prompt-empty", pix(negative_prompt=""), negative_prompt="")
    add("pixverse-duration-1", pix(duration=1), duration=1)
    add("pixverse-duration-15", pix(duration=15), duration=15)
    for res in ("360p", "540p", "720p", "1080p"):
        add(f"pixverse-resolution-{res}", pix(resolution=res), resolution=res)
    for size in ("16:9", "4:3", "1:1", "3:4", "9:16", "2:3", "3:2", "21:9"):
        add(f"pixverse-size-{size}", pix(size=size), size=size)
    add("pixverse-seed-0", pix(seed=0), seed=0)
    add("pixverse-seed-max", pix(seed=SEED_MAX), seed=SEED_MAX)
    add("pixverse-audio-true", pix(audio=True), audio=True, has_audio=True)
    add("pixverse-audio-false", pix(audio=False), audio=False, has_audio=False)
    add("pixverse-watermark-true", pix(watermark=True), watermark=True)
    add("pixverse-motion_mode-normal", pix(motion_mode="normal"), motion_mode="normal")
    add("pixverse-multi-clip-text", pix(generate_multi_clip_switch=True), mode="text")
    add(
        "pixverse-multi-clip-image",
        pix(image_urls=[URL], generate_multi_clip_switch=True),
        mode="image",
        generate_multi_clip_switch=True,
    )
    add("pixverse-multi-clip-false-transition", frames(generate_multi_clip_switch=False), mode="transition")
    add(
        "pixverse-multi-clip-false-fusion",
        pix(img_references=[URL], generate_multi_clip_switch=False),
        mode="fusion",
    )
    add(
        "pixverse-multi-clip-false-extend",
        pix(extend_from_task_id="task_01", generate_multi_clip_switch=False),
        mode="extend",
    )
    add("pixverse-transition-5", frames(duration=5), mode="transition", duration=5)
    add("pixverse-transition-8", frames(duration=8), mode="transition", duration=8)
    add("pixverse-transition-default-duration", frames(), mode="transition", duration=5)
    add("pixverse-img_references-1", pix(img_references=URLS[:1]), mode="fusion")
    add("pixverse-img_references-7", pix(img_references=URLS[:7]), mode="fusion", img_references=URLS[:7])
    add("pixverse-image_urls-1", pix(image_urls=URLS[:1]), mode="image")
    add("pixverse-image_urls-7", pix(image_urls=URLS[:7]), mode="image", image_urls=URLS[:7])
    add(
        "pixverse-extend",
        pix(extend_from_task_id="task_01"),
        mode="extend",
        extend_from_task_id="task_01",
        source_task_id="task_01",
    )
    add("pixverse-explicit-nulls", pix(seed=None, img_references=None, image_urls=None), mode="text")
    add(
        "pixverse-every-scalar-field",
        pix(
            negative_prompt="blur",
            duration=10,
            resolution="1080p",
            size="21:9",
            seed=7,
            audio=True,
            watermark=True,
            motion_mode="normal",
            generate_multi_clip_switch=True,
        ),
        duration=10,
        resolution="1080p",
        size="21:9",
        seed=7,
        mode="text",
    )
    return cases


@pytest.mark.parametrize(("body", "expect"), _valid_cases())
def test_valid_request(body: dict[str, Any], expect: dict[str, Any]) -> None:
    req = catalog.parse(body)
    assert isinstance(req, MODELS[body["model"]])
    assert req.model == body["model"]
    for name, value in expect.items():
        assert getattr(req, name) == value, name


@pytest.mark.parametrize("model", ALL_MODELS)
def test_parse_does_not_modify_the_body(model: str) -> None:
    body = minimal(model)
    snapshot = {k: (list(v) if isinstance(v, list) else v) for k, v in body.items()}
    catalog.parse(body)
    assert body == snapshot


# --- invalid requests -----------------------------------------------------------------------------


def _invalid_cases() -> list[Any]:
    cases: list[Any] = []

    def add(name: str, body: Any, param: str, key: str) -> None:
        cases.append(pytest.param(body, param, key, id=name))

    # model
    add("model-missing", {"prompt": "a cat", "image_urls": [URL]}, "model", "model_required")
    add("model-null", vidu(model=None), "model", "model_required")
    add("model-int", vidu(model=3), "model", "type_string")
    add("model-list", vidu(model=["viduq3"]), "model", "type_string")
    add("model-unknown", vidu(model="sora-2"), "model", "model_unknown")
    add("model-empty", vidu(model=""), "model", "model_unknown")
    add("model-wrong-case", vidu(model="ViduQ3"), "model", "model_unknown")

    for m in ALL_MODELS:
        body = minimal(m)
        # prompt
        add(f"{m}-prompt-missing", without(body, "prompt"), "prompt", "field_required")
        add(f"{m}-prompt-empty", {**body, "prompt": ""}, "prompt", "string_empty")
        add(f"{m}-prompt-blank", {**body, "prompt": " \t\n "}, "prompt", "string_empty")
        add(f"{m}-prompt-ideographic-space", {**body, "prompt": "\u3000"}, "prompt", "string_empty")
        add(f"{m}-prompt-5001", {**body, "prompt": "x" * 5001}, "prompt", "string_too_long")
        add(f"{m}-prompt-int", {**body, "prompt": 5}, "prompt", "type_string")
        add(f"{m}-prompt-null", {**body, "prompt": None}, "prompt", "type_string")
        add(f"{m}-prompt-list", {**body, "prompt": ["a cat"]}, "prompt", "type_string")
        # fields the model does not document: a typo never falls back to a default
        add(f"{m}-typo-duraton", {**body, "duraton": 8}, "duraton", "field_unknown")
        add(f"{m}-typo-Duration", {**body, "Duration": 8}, "Duration", "field_unknown")
        add(f"{m}-typo-image_url", {**body, "image_url": URL}, "image_url", "field_unknown")
        add(f"{m}-unknown-mode", {**body, "mode": "text"}, "mode", "field_unknown")
        for other in sorted(set().union(*FIELDS.values()) - FIELDS[m]):
            add(f"{m}-foreign-{other}", {**body, other: "x"}, other, "field_unknown")
        # seed, shared by all
        add(f"{m}-seed-negative", {**body, "seed": -1}, "seed", "number_range")
        add(f"{m}-seed-too-big", {**body, "seed": SEED_MAX + 1}, "seed", "number_range")
        add(f"{m}-seed-string", {**body, "seed": "7"}, "seed", "type_integer")
        add(f"{m}-seed-float", {**body, "seed": 7.0}, "seed", "type_integer")
        add(f"{m}-seed-bool", {**body, "seed": True}, "seed", "type_integer")
        # duration type, shared by all
        add(f"{m}-duration-string", {**body, "duration": "5"}, "duration", "type_integer")
        add(f"{m}-duration-float", {**body, "duration": 5.0}, "duration", "type_integer")
        add(f"{m}-duration-fraction", {**body, "duration": 5.5}, "duration", "type_integer")
        add(f"{m}-duration-bool", {**body, "duration": True}, "duration", "type_integer")
        add(f"{m}-duration-null", {**body, "duration": None}, "duration", "type_integer")

    for m in VIDU:
        # image_urls
        add(f"{m}-image_urls-missing", without(vidu(m), "image_urls"), "image_urls", "field_required")
        add(f"{m}-image_urls-0", vidu(m, image_urls=[]), "image_urls", "array_length")
        add(f"{m}-image_urls-8", vidu(m, image_urls=URLS[:8]), "image_urls", "array_length")
        add(f"{m}-image_urls-string", vidu(m, image_urls=URL), "image_urls", "type_array")
        add(f"{m}-image_urls-null", vidu(m, image_urls=None), "image_urls", "type_array")
        bad_urls = {
            "ftp": "ftp://example.com/a.png",
            "javascript": "javascript:alert(1)",
            "data": "data:image/png;base64,AAAA",
            "relative": "img/a.png",
            "absolute-path": "/img/a.png",
            "scheme-relative": "//example.com/a.png",
            "leading-space": " https://example.com/a.png",
            "inner-space": "https://example.com/a b.png",
            "trailing-newline": "https://example.com/a.png\n",
            "tab": "https://exa\tmple.com/a.png",
            "no-host": "https://",
            "empty-host": "http:///a.png",
            "empty": "",
            "too-long": "https://example.com/" + "a" * 4100,
        }
        for name, bad in bad_urls.items():
            add(
                f"{m}-image_urls-{name}", vidu(m, image_urls=[*URLS[:2], bad]), "image_urls[2]", "url_invalid"
            )
        add(
            f"{m}-image_urls-first-bad",
            vidu(m, image_urls=["ftp://x/a.png", URL]),
            "image_urls[0]",
            "url_invalid",
        )
        add(f"{m}-image_urls-item-int", vidu(m, image_urls=[URL, 5]), "image_urls[1]", "type_string")
        # resolution, aspect_ratio
        add(f"{m}-resolution-4k", vidu(m, resolution="4k"), "resolution", "choice")
        add(f"{m}-resolution-360p", vidu(m, resolution="360p"), "resolution", "choice")
        add(f"{m}-resolution-int", vidu(m, resolution=720), "resolution", "choice")
        add(f"{m}-aspect_ratio-21:9", vidu(m, aspect_ratio="21:9"), "aspect_ratio", "choice")
        add(f"{m}-aspect_ratio-slash", vidu(m, aspect_ratio="16/9"), "aspect_ratio", "choice")
        add(f"{m}-duration-17", vidu(m, duration=17), "duration", "number_range")
    add("viduq3-duration-2", vidu("viduq3", duration=2), "duration", "number_range")
    add("viduq3-duration-1", vidu("viduq3", duration=1), "duration", "number_range")
    add("viduq3-mix-duration-0", vidu("viduq3-mix", duration=0), "duration", "number_range")
    add("viduq3-mix-duration-negative", vidu("viduq3-mix", duration=-1), "duration", "number_range")
    add("viduq3-mix-resolution-540p", vidu("viduq3-mix", resolution="540p"), "resolution", "choice")

    # pixverse-v6 scalar fields
    add(
        "pixverse-negative_prompt-2049", pix(negative_prompt="n" * 2049), "negative_prompt", "string_too_long"
    )
    add("pixverse-negative_prompt-int", pix(negative_prompt=1), "negative_prompt", "type_string")
    add("pixverse-negative_prompt-null", pix(negative_prompt=None), "negative_prompt", "type_string")
    add("pixverse-duration-0", pix(duration=0), "duration", "number_range")
    add("pixverse-duration-16", pix(duration=16), "duration", "number_range")
    add("pixverse-resolution-480p", pix(resolution="480p"), "resolution", "choice")
    add("pixverse-resolution-upper", pix(resolution="720P"), "resolution", "choice")
    add("pixverse-size-5:4", pix(size="5:4"), "size", "choice")
    add("pixverse-size-16:10", pix(size="16:10"), "size", "choice")
    for flag in ("audio", "watermark", "generate_multi_clip_switch"):
        add(f"pixverse-{flag}-1", pix(**{flag: 1}), flag, "type_boolean")
        add(f"pixverse-{flag}-0", pix(**{flag: 0}), flag, "type_boolean")
        add(f"pixverse-{flag}-string-true", pix(**{flag: "true"}), flag, "type_boolean")
        add(f"pixverse-{flag}-null", pix(**{flag: None}), flag, "type_boolean")
    add("pixverse-motion_mode-fast", pix(motion_mode="fast"), "motion_mode", "choice")
    add("pixverse-motion_mode-Normal", pix(motion_mode="Normal"), "motion_mode", "choice")
    # generate_multi_clip_switch only in text and image modes
    for name, body in {
        "transition": frames(),
        "fusion": pix(img_references=[URL]),
        "extend": pix(extend_from_task_id="task_01"),
    }.items():
        add(
            f"pixverse-multi-clip-{name}",
            {**body, "generate_multi_clip_switch": True},
            "generate_multi_clip_switch",
            "multi_clip_mode",
        )
    # transition: both frames, duration 5 or 8
    add("pixverse-first-only", pix(first_frame_image=URL), "last_frame_image", "transition_pair")
    add("pixverse-last-only", pix(last_frame_image=URL), "first_frame_image", "transition_pair")
    add(
        "pixverse-first-only-null-last",
        pix(first_frame_image=URL, last_frame_image=None),
        "last_frame_image",
        "transition_pair",
    )
    add(
        "pixverse-last-only-with-image_urls",
        pix(last_frame_image=URL, image_urls=[URL]),
        "first_frame_image",
        "transition_pair",
    )
    for d in (1, 4, 6, 7, 9, 15):
        add(f"pixverse-transition-duration-{d}", frames(duration=d), "duration", "transition_duration")
    add(
        "pixverse-first_frame-bad-url",
        frames(first_frame_image="ftp://x/a.png"),
        "first_frame_image",
        "url_invalid",
    )
    add("pixverse-last_frame-bad-url", frames(last_frame_image="a.png"), "last_frame_image", "url_invalid")
    add("pixverse-first_frame-list", frames(first_frame_image=[URL]), "first_frame_image", "type_string")
    # img_references, image_urls
    for field in ("img_references", "image_urls"):
        add(f"pixverse-{field}-0", pix(**{field: []}), field, "array_length")
        add(f"pixverse-{field}-8", pix(**{field: URLS[:8]}), field, "array_length")
        add(f"pixverse-{field}-string", pix(**{field: URL}), field, "type_array")
        add(
            f"pixverse-{field}-javascript",
            pix(**{field: [URL, "javascript:alert(1)"]}),
            f"{field}[1]",
            "url_invalid",
        )
        add(f"pixverse-{field}-relative", pix(**{field: ["a.png"]}), f"{field}[0]", "url_invalid")
        add(
            f"pixverse-{field}-ftp",
            pix(**{field: [*URLS[:6], "ftp://x/y.png"]}),
            f"{field}[6]",
            "url_invalid",
        )
    # extend_from_task_id
    add("pixverse-extend-empty", pix(extend_from_task_id=""), "extend_from_task_id", "string_empty")
    add("pixverse-extend-blank", pix(extend_from_task_id="   "), "extend_from_task_id", "string_empty")
    add("pixverse-extend-int", pix(extend_from_task_id=12), "extend_from_task_id", "type_string")
    return cases


@pytest.mark.parametrize(("body", "param", "key"), _invalid_cases())
def test_invalid_request(body: Any, param: str, key: str) -> None:
    expect_invalid(body, param, key)


@pytest.mark.parametrize("body", [[], [{"model": "viduq3"}], "viduq3", None, 5, b"{}"], ids=repr)
def test_non_object_body(body: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        catalog.parse(body)
    err = info.value
    assert (err.status, err.type, err.key, err.param) == (400, "invalid_request_error", "invalid_json", None)
    assert "JSON object" in err.message("en")
    assert err.message("zh") != err.message("en")


# --- messages -------------------------------------------------------------------------------------


def test_unknown_model_lists_supported_models() -> None:
    err = expect_invalid(vidu(model="sora-2"), "model", "model_unknown")
    for language in ("en", "zh"):
        text = err.message(language)
        assert "sora-2" in text
        for model in ALL_MODELS:
            assert model in text


def test_get_unknown_model() -> None:
    with pytest.raises(InvalidRequest) as info:
        catalog.get("nope")
    assert (info.value.param, info.value.key) == ("model", "model_unknown")


@pytest.mark.parametrize(
    ("body", "param", "needles"),
    [
        (vidu(duration=17), "duration", ("3", "16", "17")),
        (vidu("viduq3-mix", duration=0), "duration", ("1", "16", "0")),
        (pix(duration=16), "duration", ("1", "15", "16")),
        (pix(seed=-1), "seed", ("0", str(SEED_MAX), "-1")),
        (vidu(prompt="x" * 5001), "prompt", ("5000", "5001")),
        (pix(negative_prompt="n" * 2049), "negative_prompt", ("2048", "2049")),
        (vidu(image_urls=URLS[:8]), "image_urls", ("1", "7", "8")),
        (vidu("viduq3-mix", resolution="540p"), "resolution", ("720p", "1080p", "540p")),
        (vidu(aspect_ratio="21:9"), "aspect_ratio", ("16:9", "9:16", "4:3", "3:4", "1:1", "21:9")),
        (pix(size="5:4"), "size", ("16:9", "2:3", "3:2", "21:9", "5:4")),
        (vidu(image_urls=[URL, "ftp://x/a.png"]), "image_urls[1]", ("http", "ftp://x/a.png")),
        (frames(duration=6), "duration", ("5", "8", "6")),
        (pix(first_frame_image=URL), "last_frame_image", ("first_frame_image",)),
        (
            pix(img_references=[URL], generate_multi_clip_switch=True),
            "generate_multi_clip_switch",
            ("fusion",),
        ),
        (vidu(duraton=8), "duraton", ("viduq3",)),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_message_states_the_rule(body: dict[str, Any], param: str, needles: tuple[str, ...]) -> None:
    """Both languages name the field and carry the bounds/choices and the offending value."""
    with pytest.raises(InvalidRequest) as info:
        catalog.parse(body)
    assert info.value.param == param
    en, zh = info.value.message("en"), info.value.message("zh")
    assert en != zh
    for text in (en, zh):
        assert param in text
        for needle in needles:
            assert needle in text, (needle, text)


def test_chinese_message_differs_and_names_field() -> None:
    err = expect_invalid(vidu(image_urls=[URL, URL, "ftp://x"]), "image_urls[2]", "url_invalid")
    assert err.message("en") == "image_urls[2] must be an http(s) URL (got 'ftp://x')"
    assert err.message("zh") == "image_urls[2] 必须是 http(s) 链接（当前 'ftp://x'）"


# --- defaults and derived properties: vidu --------------------------------------------------------


@pytest.mark.parametrize("model", VIDU)
def test_vidu_defaults(model: str) -> None:
    req = catalog.parse(vidu(model))
    assert (req.duration, req.resolution, req.aspect_ratio, req.seed) == (5, "720p", "16:9", None)  # type: ignore[attr-defined]
    assert req.clip_seconds == 5


@pytest.mark.parametrize("model", VIDU)
def test_vidu_mode_and_inputs(model: str) -> None:
    req = catalog.parse(vidu(model, image_urls=URLS[:7], aspect_ratio="9:16"))
    assert req.mode == "reference"
    assert type(req).modes == ("reference",)
    assert req.image_inputs() == [(f"image_urls[{i}]", URLS[i]) for i in range(7)]
    assert req.has_audio is True
    assert req.output_ratio() == "9:16"
    assert req.source_task_id is None


@pytest.mark.parametrize("model", VIDU)
@pytest.mark.parametrize("ratio", ["16:9", "9:16", "4:3", "3:4", "1:1"])
def test_vidu_output_ratio_is_aspect_ratio(model: str, ratio: str) -> None:
    assert catalog.parse(vidu(model, aspect_ratio=ratio)).output_ratio() == ratio


def test_model_classes() -> None:
    assert dict(MODELS) == {"viduq3": ViduQ3, "viduq3-mix": ViduQ3Mix, "pixverse-v6": PixverseV6}


# --- pixverse-v6: defaults, modes -----------------------------------------------------------------


def test_pixverse_defaults() -> None:
    req = catalog.parse(pix())
    assert isinstance(req, PixverseV6)
    assert (req.duration, req.resolution, req.size, req.seed) == (5, "540p", "16:9", None)
    assert (req.audio, req.watermark, req.motion_mode, req.generate_multi_clip_switch) == (
        False,
        False,
        "normal",
        False,
    )
    assert req.negative_prompt == ""
    assert req.mode == "text"
    assert req.image_inputs() == []
    assert req.output_ratio() == "16:9"
    assert req.has_audio is False
    assert req.source_task_id is None


EXT = {"extend_from_task_id": "task_01"}
REFS = {"img_references": URLS[:3]}
FRAMES = {"first_frame_image": URLS[3], "last_frame_image": URLS[4]}
IMAGES = {"image_urls": URLS[5:8]}


@pytest.mark.parametrize(
    ("inputs", "mode", "images"),
    [
        pytest.param({}, "text", [], id="text"),
        pytest.param(IMAGES, "image", [("image_urls[0]", URLS[5])], id="image-first-image-only"),
        pytest.param(
            FRAMES,
            "transition",
            [("first_frame_image", URLS[3]), ("last_frame_image", URLS[4])],
            id="transition",
        ),
        pytest.param(
            {**FRAMES, **IMAGES},
            "transition",
            [("first_frame_image", URLS[3]), ("last_frame_image", URLS[4])],
            id="transition-beats-image",
        ),
        pytest.param(REFS, "fusion", [(f"img_references[{i}]", URLS[i]) for i in range(3)], id="fusion"),
        pytest.param(
            {**REFS, **FRAMES, **IMAGES},
            "fusion",
            [(f"img_references[{i}]", URLS[i]) for i in range(3)],
            id="fusion-beats-transition-and-image",
        ),
        pytest.param({**REFS, **IMAGES}, "fusion", [(f"img_references[{i}]", URLS[i]) for i in range(3)]),
        pytest.param(EXT, "extend", [], id="extend"),
        pytest.param({**EXT, **REFS, **FRAMES, **IMAGES}, "extend", [], id="extend-beats-everything"),
        pytest.param({**EXT, **IMAGES}, "extend", [], id="extend-beats-image"),
        pytest.param({**EXT, **FRAMES}, "extend", [], id="extend-beats-transition"),
    ],
)
def test_pixverse_mode_first_match_wins(inputs: dict[str, Any], mode: str, images: list[Any]) -> None:
    req = catalog.parse(pix(**inputs))
    assert req.mode == mode
    assert req.image_inputs() == images
    assert req.source_task_id == (inputs.get("extend_from_task_id"))


def test_pixverse_modes_order() -> None:
    assert PixverseV6.modes == ("extend", "fusion", "transition", "image", "text")


def test_pixverse_transition_duration_only_applies_to_transition() -> None:
    # 6 s is fine when another mode wins, even with both frames present
    assert catalog.parse(pix(**EXT, **FRAMES, duration=6)).mode == "extend"
    assert catalog.parse(pix(**REFS, **FRAMES, duration=6)).mode == "fusion"
    assert catalog.parse(pix(**IMAGES, duration=6)).duration == 6  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("inputs", "ratio"),
    [
        pytest.param({}, "9:16", id="text"),
        pytest.param(REFS, "9:16", id="fusion"),
        pytest.param(IMAGES, None, id="image"),
        pytest.param(FRAMES, None, id="transition"),
        pytest.param(EXT, None, id="extend"),
    ],
)
def test_pixverse_size_only_for_text_and_fusion(inputs: dict[str, Any], ratio: str | None) -> None:
    req = catalog.parse(pix(size="9:16", **inputs))
    assert req.output_ratio() == ratio
    assert req.size == "9:16"  # type: ignore[attr-defined]  # accepted, just not used


@pytest.mark.parametrize("size", ["16:9", "4:3", "1:1", "3:4", "9:16", "2:3", "3:2", "21:9"])
def test_pixverse_output_ratio_follows_size_in_text_mode(size: str) -> None:
    assert catalog.parse(pix(size=size)).output_ratio() == size
    assert catalog.parse(pix(size=size, **REFS)).output_ratio() == size


# --- estimated_time -------------------------------------------------------------------------------

RESOLUTIONS = {
    "viduq3": ("540p", "720p", "1080p"),
    "viduq3-mix": ("720p", "1080p"),
    "pixverse-v6": ("360p", "540p", "720p", "1080p"),
}
DURATIONS = {"viduq3": range(3, 17), "viduq3-mix": range(1, 17), "pixverse-v6": range(1, 16)}


@pytest.mark.parametrize("model", ALL_MODELS)
def test_estimated_time_grows_with_duration_and_resolution(model: str) -> None:
    table = {
        (d, r): catalog.parse(minimal(model, duration=d, resolution=r)).estimated_time()
        for d in DURATIONS[model]
        for r in RESOLUTIONS[model]
    }
    assert all(isinstance(t, int) and t > 0 for t in table.values())
    for r in RESOLUTIONS[model]:
        times = [table[d, r] for d in DURATIONS[model]]
        assert times == sorted(times) and len(set(times)) == len(times), (r, times)
    for d in DURATIONS[model]:
        times = [table[d, r] for r in RESOLUTIONS[model]]
        assert times == sorted(times) and len(set(times)) == len(times), (d, times)


# --- schema and documentation ---------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS)
def test_input_schema(model: str) -> None:
    schema = catalog.input_schema(model)
    assert schema["type"] == "object"
    assert set(schema["properties"]) == FIELDS[model]
    assert set(schema["properties"]) == set(MODELS[model].model_fields)
    required = set(schema["required"])
    assert {"model", "prompt"} <= required
    assert ("image_urls" in required) == (model in VIDU)
    assert required <= FIELDS[model]
    assert schema.get("additionalProperties") is False
    assert schema["properties"]["model"]["const"] == model
    assert schema["properties"]["prompt"]["maxLength"] == 5000


@pytest.mark.parametrize(
    ("model", "field", "values"),
    [
        ("viduq3", "resolution", ["540p", "720p", "1080p"]),
        ("viduq3-mix", "resolution", ["720p", "1080p"]),
        ("viduq3", "aspect_ratio", ["16:9", "9:16", "4:3", "3:4", "1:1"]),
        ("pixverse-v6", "resolution", ["360p", "540p", "720p", "1080p"]),
        ("pixverse-v6", "size", ["16:9", "4:3", "1:1", "3:4", "9:16", "2:3", "3:2", "21:9"]),
    ],
)
def test_input_schema_choices(model: str, field: str, values: list[str]) -> None:
    assert catalog.input_schema(model)["properties"][field]["enum"] == values


@pytest.mark.parametrize(
    ("model", "low", "high", "default"),
    [("viduq3", 3, 16, 5), ("viduq3-mix", 1, 16, 5), ("pixverse-v6", 1, 15, 5)],
)
def test_input_schema_duration(model: str, low: int, high: int, default: int) -> None:
    prop = catalog.input_schema(model)["properties"]["duration"]
    assert (prop["type"], prop["minimum"], prop["maximum"], prop["default"]) == (
        "integer",
        low,
        high,
        default,
    )


@pytest.mark.parametrize("model", ALL_MODELS)
def test_documentation_mentions_every_field(model: str) -> None:
    doc = catalog.documentation(model)
    assert doc.startswith(f"# {model}\n")
    for field in FIELDS[model]:
        assert f"`{field}`" in doc, field
    for mode in MODELS[model].modes:
        assert f"`{mode}`" in doc


def test_unknown_model_schema_and_docs() -> None:
    for fn in (catalog.input_schema, catalog.documentation):
        with pytest.raises(InvalidRequest) as info:
            fn("nope")
        assert info.value.key == "model_unknown"
