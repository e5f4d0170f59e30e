"""images: format sniffing, image rules, and concurrent loading from real loopback servers."""

from __future__ import annotations

import asyncio
import io
import struct
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from tests.test_netguard import Server, body, listener, no_system_dns, redirect, send
from vidgate import i18n
from vidgate.errors import TaskFailure
from vidgate.images import ImageRules, OwnFileResolver, check_image, load_images, sniff_format

__all__ = ["no_system_dns"]  # autouse fixture: re-exported so it also guards this module

RULES = ImageRules()
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def encode(img: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def solid(color: tuple[int, int, int] = RED, size: tuple[int, int] = (256, 256), fmt: str = "PNG") -> bytes:
    return encode(Image.new("RGB", size, color), fmt)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (160, 160), color) for color in (RED, BLUE)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims width x height: a decompression bomb's shape."""
    data = bytearray(solid(size=(16, 16)))
    ihdr = 8  # the IHDR chunk follows the signature: length(4) type(4) data(13) crc(4)
    struct.pack_into(">II", data, ihdr + 8, width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 8 + 13]))
    struct.pack_into(">I", data, ihdr + 8 + 13, crc)
    return bytes(data)


def failure(data: bytes, rules: ImageRules = RULES) -> TaskFailure:
    with pytest.raises(TaskFailure) as info:
        check_image(data, param="image_urls[0]", rules=rules)
    assert info.value.type == "invalid_request_error"
    assert info.value.params["param"] == "image_urls[0]"
    rendered = i18n.message(info.value.code, "en", **info.value.params)
    assert "{" not in rendered, rendered  # every field the message needs was given
    return info.value


# --- sniff_format -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (solid(fmt="JPEG"), "jpeg"),
        (solid(fmt="PNG"), "png"),
        (solid(fmt="WEBP"), "webp"),
        (solid(fmt="GIF"), "gif"),
        (b"GIF87a" + b"\0" * 10, "gif"),
        (solid(fmt="BMP"), None),
        (b"RIFF\0\0\0\0WAVEfmt ", None),
        (b"<html><body>not an image</body></html>", None),
        (b"\xff\xd8", None),
        (b"", None),
    ],
)
def test_sniff_format(data: bytes, expected: str | None) -> None:
    assert sniff_format(data) == expected


# --- check_image --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_accepted_formats_decode_to_rgb(fmt: str) -> None:
    img = check_image(solid(GREEN, (300, 200), fmt), param="p", rules=RULES)
    assert (img.mode, img.size) == ("RGB", (300, 200))
    r, g, b = img.getpixel((10, 10))  # type: ignore[misc]
    assert g > 200 and r < 60 and b < 60


@pytest.mark.parametrize(
    ("data", "detected"),
    [
        (solid(fmt="GIF"), "GIF"),
        (solid(fmt="BMP"), "BMP"),
        (solid(fmt="TIFF"), "TIFF"),
        (b"<!DOCTYPE html><html>404</html>", "HTML"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"\0\0\0\x18ftypheic" + b"\0" * 20, "HEIC"),
        (b"", "empty file"),
        (b"random bytes", "unknown"),
    ],
)
def test_other_formats_are_refused(data: bytes, detected: str) -> None:
    error = failure(data)
    assert error.code == "image_format"
    assert error.params["detected"] == detected
    assert error.params["formats"] == "JPEG/PNG/WebP"


def test_gif_allowed_when_the_rules_say_so_uses_first_frame() -> None:
    rules = ImageRules(formats=frozenset({"gif"}))
    img = check_image(animated("GIF"), param="p", rules=rules)
    assert img.mode == "RGB" and img.getpixel((5, 5)) == RED
    assert failure(solid(fmt="PNG"), rules).params["formats"] == "GIF"


def test_animated_webp_uses_first_frame() -> None:
    img = check_image(animated("WEBP"), param="p", rules=RULES)
    r, _g, b = img.getpixel((5, 5))  # type: ignore[misc]
    assert r > 200 and b < 60


@pytest.mark.parametrize(
    "data",
    [
        solid(fmt="JPEG")[:300],
        solid(fmt="PNG")[:-40],
        b"\x89PNG\r\n\x1a\n" + b"junk" * 20,
        b"\xff\xd8\xff" + b"\0" * 100,
        b"RIFF\0\0\0\0WEBPVP8 garbage",
    ],
)
def test_corrupt_or_truncated_bytes_are_unreadable(data: bytes) -> None:
    assert failure(data).code == "image_unreadable"


def test_header_claiming_too_many_pixels_is_refused_before_decoding() -> None:
    bomb = png_claiming(7000, 7000)  # 49 MP over the 40 MP rule, a few hundred bytes on disk
    started = time.monotonic()
    error = failure(bomb)
    assert time.monotonic() - started < 0.5
    assert error.code == "image_too_many_pixels"
    assert (error.params["width"], error.params["height"]) == (7000, 7000)


def test_pillow_decompression_bomb_error_is_unreadable() -> None:
    assert failure(png_claiming(20000, 20000)).code == "image_unreadable"


def test_too_many_bytes() -> None:
    error = failure(solid(size=(300, 300), fmt="BMP"), ImageRules(max_bytes=1024 * 1024 // 4))
    assert error.code == "image_too_large"
    assert error.params["limit_mb"] == 0.25


@pytest.mark.parametrize("size", [(127, 500), (500, 127), (100, 100)])
def test_too_small(size: tuple[int, int]) -> None:
    error = failure(solid(size=size))
    assert error.code == "image_too_small"
    assert error.params == {"param": "image_urls[0]", "min": 128, "width": size[0], "height": size[1]}


@pytest.mark.parametrize("size", [(1000, 200), (200, 1000), (513, 128), (128, 513)])
def test_aspect_out_of_range(size: tuple[int, int]) -> None:
    error = failure(solid(size=size))
    assert error.code == "image_aspect"
    assert (error.params["width"], error.params["height"]) == size


@pytest.mark.parametrize("size", [(512, 128), (128, 512), (128, 128)])
def test_aspect_and_size_limits_are_inclusive(size: tuple[int, int]) -> None:
    assert check_image(solid(size=size), param="p", rules=RULES).size == size


def test_exif_orientation_is_applied_before_the_rules() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    data = encode(Image.new("RGB", (200, 400), RED), "JPEG", exif=exif)
    assert check_image(data, param="p", rules=RULES).size == (400, 200)


def test_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (0, 0, 100, 200))
    img = check_image(encode(rgba, "PNG"), param="p", rules=RULES)
    assert img.getpixel((150, 10)) == (255, 255, 255)
    assert img.getpixel((10, 10)) == RED

    palette = Image.new("P", (200, 200), 0)
    palette.putpalette([0, 0, 0, 0, 255, 0])
    palette.paste(1, (0, 0, 100, 200))
    img = check_image(encode(palette, "PNG", transparency=0), param="p", rules=RULES)
    assert img.getpixel((150, 10)) == (255, 255, 255)
    assert img.getpixel((10, 10)) == GREEN


def test_other_modes_convert_to_rgb() -> None:
    grey16 = Image.new("I;16", (200, 200), 32768)
    assert check_image(encode(grey16, "PNG"), param="p", rules=RULES).getpixel((5, 5)) == (128, 128, 128)
    cmyk = check_image(encode(Image.new("CMYK", (200, 200), (0, 0, 0, 0)), "JPEG"), param="p", rules=RULES)
    assert cmyk.mode == "RGB" and min(cmyk.getpixel((5, 5))) > 240  # type: ignore[arg-type]
    grey = check_image(encode(Image.new("L", (200, 200), 77), "PNG"), param="p", rules=RULES)
    assert grey.getpixel((5, 5)) == (77, 77, 77)


# --- load_images --------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def load(inputs: list[tuple[str, str]], **kwargs: Any) -> list[Image.Image]:
    kwargs.setdefault("rules", RULES)
    kwargs.setdefault("max_total_bytes", 10 * 1024 * 1024)
    kwargs.setdefault("timeout", 5.0)
    kwargs.setdefault("allow_private", True)
    return asyncio.run(load_images(inputs, **kwargs))


def load_failure(inputs: list[tuple[str, str]], **kwargs: Any) -> TaskFailure:
    with pytest.raises(TaskFailure) as info:
        load(inputs, **kwargs)
    assert info.value.type == "invalid_request_error"
    assert "{" not in i18n.message(info.value.code, "en", **info.value.params)
    return info.value


def test_loads_in_input_order_fetching_each_url_once(server: Server) -> None:
    server.routes["/red.png"] = body(solid(RED))
    # Content-Type and extension lie; the bytes decide.
    server.routes["/green.jpg"] = body(solid(GREEN, fmt="PNG"), ctype="text/html")
    server.routes["/blue"] = body(solid(BLUE, fmt="WEBP"), ctype="application/octet-stream")
    red, green, blue = server.url("/red.png"), server.url("/green.jpg"), server.url("/blue")
    images = load([("a", red), ("b", green), ("c", red), ("d", blue)])
    assert [img.getpixel((1, 1)) for img in images[:3]] == [RED, GREEN, RED]
    assert images[3].getpixel((1, 1))[2] > 200  # type: ignore[index]
    assert server.hits == {"/red.png": 1, "/green.jpg": 1, "/blue": 1}


def test_no_inputs() -> None:
    assert load([]) == []


def test_own_files_are_trusted_and_never_fetched(server: Server) -> None:
    server.routes["/other.png"] = body(solid(GREEN))
    with listener() as port:
        own_url = f"http://127.0.0.1:{port}/files/abc.png?sig=x"
        asked: list[str] = []

        def own_files(url: str) -> bytes | None:
            asked.append(url)
            return solid(BLUE) if url == own_url else None

        resolver: OwnFileResolver = own_files
        images = load(
            [("first_frame_image", own_url), ("last_frame_image", server.url("/other.png"))],
            own_files=resolver,
        )
    assert images[0].getpixel((1, 1)) == BLUE
    assert images[1].getpixel((1, 1)) == GREEN
    assert sorted(asked) == sorted([own_url, server.url("/other.png")])
    assert server.hits == {"/other.png": 1}


def test_own_files_bypass_the_private_address_rule() -> None:
    with listener() as port:
        url = f"http://127.0.0.1:{port}/files/abc.png"
        images = load([("p", url)], allow_private=False, own_files=lambda u: solid(RED))
    assert images[0].getpixel((1, 1)) == RED


def test_private_urls_are_refused_unless_allowed() -> None:
    with listener() as port:
        error = load_failure([("image_urls[0]", f"http://127.0.0.1:{port}/a.png")], allow_private=False)
    assert error.code == "image_url_refused"
    assert error.params["param"] == "image_urls[0]"
    assert "loopback address 127.0.0.1" in error.params["detail"]


def test_redirect_is_followed(server: Server) -> None:
    server.routes["/old"] = redirect("/new")
    server.routes["/new"] = body(solid(GREEN))
    assert load([("p", server.url("/old"))])[0].getpixel((1, 1)) == GREEN


def test_http_error_names_the_first_failing_input(server: Server) -> None:
    server.routes["/ok.png"] = body(solid())
    error = load_failure(
        [
            ("image_urls[0]", server.url("/ok.png")),
            ("image_urls[1]", server.url("/gone")),
            ("x", server.url("/x")),
        ]
    )
    assert error.code == "image_fetch_failed"
    assert error.params == {"param": "image_urls[1]", "detail": "HTTP 404"}


def test_rule_failures_name_their_input(server: Server) -> None:
    server.routes["/tiny.png"] = body(solid(size=(64, 64)))
    server.routes["/page"] = body(b"<html>login</html>", ctype="image/png")
    error = load_failure([("a", server.url("/tiny.png"))])
    assert (error.code, error.params["param"]) == ("image_too_small", "a")
    error = load_failure([("b", server.url("/page"))])
    assert (error.code, error.params["detected"]) == ("image_format", "HTML")


def test_per_image_cap(server: Server) -> None:
    server.routes["/big.png"] = body(solid(size=(256, 256), fmt="BMP"))  # ~196 KB
    error = load_failure([("p", server.url("/big.png"))], rules=ImageRules(max_bytes=100 * 1024))
    assert error.code == "image_too_large"
    assert error.params == {"param": "p", "limit_mb": round(100 / 1024, 2)}


def test_total_cap_across_inputs(server: Server) -> None:
    noise = [encode(Image.effect_noise((200, 200), 80 + i).convert("RGB"), "PNG") for i in range(3)]
    for i, data in enumerate(noise):
        server.routes[f"/n{i}.png"] = body(data)
    inputs = [(f"image_urls[{i}]", server.url(f"/n{i}.png")) for i in range(3)]
    total = sum(len(d) for d in noise)
    assert len(load(inputs, max_total_bytes=total)) == 3
    error = load_failure(inputs, max_total_bytes=total - 1)
    assert error.code == "inputs_too_large"
    # Own files count too.
    error = load_failure(inputs[:2], max_total_bytes=total - 1, own_files=lambda u: noise[2] + noise[2])
    assert error.code == "inputs_too_large"


def test_timeout(server: Server) -> None:
    def stall(h: Any) -> None:
        time.sleep(1.5)
        send(h, solid())

    server.routes["/slow.png"] = stall
    started = time.monotonic()
    error = load_failure([("p", server.url("/slow.png"))], timeout=0.3)
    assert error.code == "image_fetch_failed"
    assert "timed out" in error.params["detail"]
    assert time.monotonic() - started < 1.2
