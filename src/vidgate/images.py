"""Turning user-supplied image URLs and bytes into checked RGB images.

The format comes from magic bytes only (never Content-Type or extension) and Pillow is limited to
that one decoder. Pixel counts are checked from the header before decoding, so a small file that
expands to gigabytes (a decompression bomb) is refused without being decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
from PIL import Image, ImageOps

from vidgate import netguard
from vidgate.errors import TaskFailure

_MB = 1024 * 1024
_ORDER = ("jpeg", "png", "webp", "gif")
_LABELS = {"jpeg": "JPEG", "png": "PNG", "webp": "WebP", "gif": "GIF"}
_PIL_NAMES = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF"}
_WHITE = (255, 255, 255, 255)

# Returns the bytes when the URL is one of vidgate's own signed upload URLs, else None.
OwnFileResolver = Callable[[str], bytes | None]


@dataclass(frozen=True)
class ImageRules:
    formats: frozenset[str] = frozenset({"jpeg", "png", "webp"})  # of: jpeg png webp gif
    min_side: int = 128
    min_aspect: float = 0.25  # width/height; 1:4
    max_aspect: float = 4.0  # 4:1
    max_bytes: int = 50 * _MB
    max_pixels: int = 40_000_000  # checked from the header, before decoding


def sniff_format(data: bytes) -> str | None:
    """ "jpeg" | "png" | "webp" | "gif" from the magic bytes, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def describe_unknown(data: bytes) -> str:
    """A name for bytes that are not an accepted format, for the error message only."""
    if not data:
        return "empty file"
    if data.startswith(b"BM"):
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
            return "HEIC"
        if brand in (b"avif", b"avis"):
            return "AVIF"
        return "video"
    if data.startswith(b"%PDF"):
        return "PDF"
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    if b"<svg" in head:
        return "SVG"
    return "unknown"


def _format_list(formats: frozenset[str]) -> str:
    return "/".join(_LABELS[name] for name in _ORDER if name in formats)


def _mb(n: int) -> int | float:
    mb = n / _MB
    return int(mb) if mb.is_integer() else round(mb, 2)


def _unreadable(param: str) -> TaskFailure:
    return TaskFailure("image_unreadable", type="invalid_request_error", param=param)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit grey: scale to 8 bits; a plain convert would clip everything above 255 to white.
        return img.convert("I").point(lambda v: v / 256).convert("L").convert("RGB")
    if img.has_transparency_data:
        # Transparent areas become white, the usual backdrop of product shots and logos.
        rgba = img.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, _WHITE)
        backdrop.alpha_composite(rgba)
        return backdrop.convert("RGB")
    return img.convert("RGB")


def check_image(data: bytes, *, param: str, rules: ImageRules) -> Image.Image:
    """Decode `data` under `rules` into a fully loaded RGB image (first frame if animated).

    Raises TaskFailure (image_too_large, image_format, image_unreadable, image_too_small,
    image_aspect) naming `param`. An EXIF orientation is applied before the size rules.
    """
    if len(data) > rules.max_bytes:
        raise TaskFailure(
            "image_too_large", type="invalid_request_error", param=param, limit_mb=_mb(rules.max_bytes)
        )
    fmt = sniff_format(data)
    if fmt is None or fmt not in rules.formats:
        raise TaskFailure(
            "image_format",
            type="invalid_request_error",
            param=param,
            formats=_format_list(rules.formats),
            detected=_LABELS[fmt] if fmt else describe_unknown(data),
        )
    try:
        # Only the sniffed decoder may run, so a crafted file cannot reach another plugin.
        img = Image.open(io.BytesIO(data), formats=[_PIL_NAMES[fmt]])
    except Exception as exc:  # any decoder failure (incl. DecompressionBombError) means unreadable
        raise _unreadable(param) from exc
    width, height = img.size
    if width * height > rules.max_pixels:
        raise TaskFailure(
            "image_too_many_pixels",
            type="invalid_request_error",
            param=param,
            width=width,
            height=height,
            max_pixels=rules.max_pixels,
        )
    try:
        img.load()  # the first frame of an animation
    except Exception as exc:  # truncated or corrupt data surfaces only while decoding
        raise _unreadable(param) from exc
    # A garbled EXIF block should not reject pixels that decoded fine.
    with contextlib.suppress(Exception):
        ImageOps.exif_transpose(img, in_place=True)
    try:
        rgb = _to_rgb(img)
    except Exception as exc:  # modes Pillow cannot map to RGB
        raise _unreadable(param) from exc
    width, height = rgb.size
    if min(width, height) < rules.min_side:
        raise TaskFailure(
            "image_too_small",
            type="invalid_request_error",
            param=param,
            min=rules.min_side,
            width=width,
            height=height,
        )
    if not rules.min_aspect <= width / height <= rules.max_aspect:
        raise TaskFailure(
            "image_aspect", type="invalid_request_error", param=param, width=width, height=height
        )
    return rgb


class _TotalExceeded(Exception):
    """The inputs together went over `max_total_bytes`."""


async def load_images(
    inputs: Sequence[tuple[str, str]],
    *,
    rules: ImageRules,
    max_total_bytes: int,
    timeout: float,
    allow_private: bool,
    own_files: OwnFileResolver | None = None,
    client: httpx.AsyncClient | None = None,
) -> list[Image.Image]:
    """Fetch and check every (param, url) input concurrently; one image per input, in order.

    Identical URLs are fetched once (and share one image object; errors name the first param
    using it). `own_files` is asked first, in a worker thread: bytes it returns are trusted and
    no request is made. Bytes count against the per-image cap `rules.max_bytes` and, as they
    arrive, against `max_total_bytes` across all inputs. The first failure, in input order
    among those that failed, is raised as a TaskFailure and the other fetches are cancelled.
    """
    first_param: dict[str, str] = {}
    for param, url in inputs:
        first_param.setdefault(url, param)
    total = 0

    def count(n: int) -> None:
        nonlocal total
        total += n
        if total > max_total_bytes:
            raise _TotalExceeded

    async def obtain(url: str, param: str) -> bytes:
        if own_files is not None:
            own = await asyncio.to_thread(own_files, url)
            if own is not None:
                count(len(own))
                return own
        try:
            fetched = await netguard.fetch(
                url,
                max_bytes=rules.max_bytes,
                timeout=timeout,
                allow_private=allow_private,
                client=client,
                on_chunk=count,
            )
        except netguard.UrlForbidden as exc:
            raise TaskFailure(
                "image_url_refused", type="invalid_request_error", param=param, detail=exc.detail
            ) from exc
        except netguard.ResponseTooLarge as exc:
            raise TaskFailure(
                "image_too_large", type="invalid_request_error", param=param, limit_mb=_mb(rules.max_bytes)
            ) from exc
        except netguard.FetchFailed as exc:
            raise TaskFailure(
                "image_fetch_failed", type="invalid_request_error", param=param, detail=exc.detail
            ) from exc
        return fetched.data

    async def one(url: str, param: str) -> Image.Image:
        try:
            data = await obtain(url, param)
        except _TotalExceeded:
            raise TaskFailure(
                "inputs_too_large", type="invalid_request_error", limit_mb=_mb(max_total_bytes)
            ) from None
        # Decoding is CPU-bound (up to max_pixels); keep the event loop free.
        return await asyncio.to_thread(check_image, data, param=param, rules=rules)

    urls = list(first_param)
    tasks = [asyncio.create_task(one(url, first_param[url])) for url in urls]
    try:
        if tasks:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    images: dict[str, Image.Image] = {}
    for url, task in zip(urls, tasks, strict=True):
        if task.cancelled():
            continue
        error = task.exception()
        if error is not None:
            raise error
        images[url] = task.result()
    return [images[url] for _param, url in inputs]
