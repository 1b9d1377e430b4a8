"""Server-side checks on an uploaded photo, each failure with a message for the person who sent it.

Pillow is light enough for the web process; the engine (`ml`) checks the image again in the worker.
"""

from __future__ import annotations

import io
import warnings
import zlib
from dataclasses import dataclass

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

register_heif_opener()

#: Pillow format name for every extension we may allow, and the extension we store it under.
_FORMAT_FOR_EXTENSION = {
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "jfif": "JPEG",  # what Windows browsers often name a JPEG they save
    "png": "PNG",
    "webp": "WEBP",
    "bmp": "BMP",
    "heic": "HEIF",
    "heif": "HEIF",
    "avif": "AVIF",
}
_EXTENSION_FOR_FORMAT = {
    "JPEG": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "BMP": "bmp",
    "AVIF": "avif",
    "HEIF": "heic",
}
#: Pillow calls a JPEG that carries more pictures (a camera's large preview, a phone's depth map: CIPA's
#: Multi-Picture Format) "MPO"; it is a JPEG to browsers and to us.
_SAME_FORMAT = {"MPO": "JPEG"}
#: Formats browsers do not display (Chrome and Firefox show no HEIC). Such a photo is stored as sent and
#: only its header is read here: decoding a phone's 12-MP HEIC takes 0.5–1 s, too long to spend on every
#: photo of an upload in the web request. The worker decodes it anyway, and makes the JPEG the pages show.
BROWSERS_CANNOT_SHOW = {"HEIF"}
#: A HEIC, AVIF, PNG or WebP whose GPS position cannot be removed in place (an EXIF not found exactly once
#: in the file, or laid out otherwise than TIFF says) is converted to a JPEG without it instead.
CONVERTED_JPEG_QUALITY = 92


class UploadRejected(ValueError):
    """The file cannot be accepted; the message says why, in plain words."""


@dataclass(frozen=True)
class CheckedImage:
    extension: str  # the one we store the file under, from its real format
    width: int  # upright, after EXIF orientation
    height: int
    #: The photo to store instead of the upload: the upload itself without where it was taken
    #: (`without_location`, `_without_location_in_place`), or, where that cannot be done, the photo as a
    #: JPEG.
    converted: bytes | None = None


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def allowed_extensions_text() -> str:
    return ", ".join(ext.upper() for ext in settings.AGEGENDER_ALLOWED_EXTENSIONS)


def check_image_upload(upload: UploadedFile) -> CheckedImage:
    """Accept a photo or raise `UploadRejected`: allowed extension, not empty, within the size limit,
    a real image of an allowed format, not absurdly large in pixels, and complete (not truncated)."""
    name = upload.name or ""
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    allowed = [ext.lower() for ext in settings.AGEGENDER_ALLOWED_EXTENSIONS]
    if extension not in allowed:
        raise UploadRejected(f"Only {allowed_extensions_text()} photos are accepted.")
    if not upload.size:
        raise UploadRejected("The file is empty.")
    limit = settings.AGEGENDER_MAX_UPLOAD_BYTES
    if upload.size > limit:
        raise UploadRejected(f"The file is {_megabytes(upload.size)}; the limit is {_megabytes(limit)}.")

    allowed_formats = {_FORMAT_FOR_EXTENSION[ext] for ext in allowed if ext in _FORMAT_FOR_EXTENSION}
    upload.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(upload) as image:
                image_format = _SAME_FORMAT.get(image.format, image.format)
                if image_format not in allowed_formats:
                    raise UploadRejected(
                        f"The file is a {image.format or 'unknown'} image; "
                        f"only {allowed_extensions_text()} photos are accepted."
                    )
                width, height = image.size
                orientation = image.getexif().get(0x0112, 1)  # EXIF orientation
                if width * height > settings.AGEGENDER_MAX_IMAGE_PIXELS:
                    raise UploadRejected(
                        f"The image is {width}×{height} pixels; the limit is "
                        f"{settings.AGEGENDER_MAX_IMAGE_PIXELS // 1_000_000} megapixels."
                    )
                located = _GPS_IFD in image.getexif()
                converted = None
                if image_format in BROWSERS_CANNOT_SHOW:  # not decoded here: see BROWSERS_CANNOT_SHOW
                    upload.seek(0)
                    if not _heif_is_complete(upload.read()):  # what a cut-off upload looks like
                        raise UploadRejected("The image is incomplete (the file is truncated or damaged).")
                else:
                    if image_format == "JPEG":
                        image.draft("RGB", (max(1, width // 8), max(1, height // 8)))  # fast, reads all
                    image.load()
                if located and image_format != "JPEG":  # a JPEG's is removed below
                    upload.seek(0)
                    converted = _without_location_in_place(upload.read(), image_format)
                    if converted is None:
                        image.load()
                        converted = _as_jpeg(image)
    except UploadRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadRejected("The image has too many pixels to process.") from None
    except UnidentifiedImageError:
        if _looks_like_heif(upload):  # its index cut off: Pillow cannot even tell what it is
            raise UploadRejected("The image is incomplete (the file is truncated or damaged).") from None
        raise UploadRejected("This file is not an image (or not one we can read).") from None
    except (OSError, SyntaxError, ValueError) as exc:
        message = str(exc)
        if any(sign in message.lower() for sign in ("truncated", "broken data stream", "end of file")):
            raise UploadRejected("The image is incomplete (the file is truncated or damaged).") from None
        raise UploadRejected("The image is damaged and cannot be read.") from None
    finally:
        upload.seek(0)
    if converted is not None and image_format != "JPEG" and converted[:2] == b"\xff\xd8":
        return CheckedImage(extension="jpg", width=width, height=height, converted=converted)  # upright
    if orientation in (5, 6, 7, 8) and image_format not in BROWSERS_CANNOT_SHOW:  # libheif turns a HEIC
        width, height = height, width  # rotated a quarter turn: the upright photo is the other way round
    if located and image_format == "JPEG":
        upload.seek(0)
        converted = without_location(upload.read())
        upload.seek(0)
    return CheckedImage(
        extension=_EXTENSION_FOR_FORMAT[image_format], width=width, height=height, converted=converted
    )


#: The EXIF tag that points to where a photo was taken (GPS latitude, longitude, altitude, time).
_GPS_IFD = 0x8825


def without_location(jpeg: bytes) -> bytes:
    """The JPEG with its EXIF's GPS data (where the photo was taken) and EXIF thumbnail removed, and
    nothing else changed: the compressed picture, the colour profile and the other tags (orientation,
    camera, time) are kept byte for byte, so the photo reads exactly as uploaded. Phones record the place
    in every photo; the service has no use for it, and a stored photo should not carry it."""
    out, at = bytearray(jpeg[:2]), 2  # SOI
    while at + 4 <= len(jpeg) and jpeg[at] == 0xFF:
        marker, length = jpeg[at + 1], int.from_bytes(jpeg[at + 2 : at + 4], "big")
        if marker == 0xDA:  # start of scan: the picture itself, to the end of the file
            break
        segment = jpeg[at : at + 2 + length]
        payload = segment[4:]
        if marker == 0xE1 and payload.startswith(b"Exif\x00\x00"):
            exif = Image.Exif()
            try:
                exif.load(payload)
                exif.pop(_GPS_IFD, None)
                payload = exif.tobytes()  # IFD0 and the Exif IFD; the thumbnail's IFD1 is not written
            except Exception:  # an EXIF Pillow cannot rewrite: keep only the orientation
                orientation = exif.get(0x0112)
                exif = Image.Exif()
                if orientation:
                    exif[0x0112] = orientation
                payload = exif.tobytes()
            segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
        out += segment
        at += 2 + length
    return bytes(out + jpeg[at:])


#: ISO base media file type brands of HEIF stills and sequences (ISO/IEC 23008-12).
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}


def _looks_like_heif(upload: UploadedFile) -> bool:
    upload.seek(0)
    head = upload.read(12)
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _heif_is_complete(data: bytes) -> bool:
    """Whether the file's top-level boxes (ISO/IEC 14496-12: `ftyp`, `meta`, `mdat`, …) end where it ends:
    a file cut short ends inside its last box, which for a HEIC holds the compressed picture."""
    at = 0
    while at < len(data):
        if at + 8 > len(data):
            return False
        size = int.from_bytes(data[at : at + 4], "big")
        if size == 1:  # the size is in the 64 bits after the type
            size = int.from_bytes(data[at + 8 : at + 16], "big") if at + 16 <= len(data) else 0
        elif size == 0:  # the box runs to the end of the file
            return True
        if size < 8 or at + size > len(data):
            return False
        at += size
    return True


def _without_location_in_place(data: bytes, image_format: str) -> bytes | None:
    """The file with its EXIF's GPS entries removed in place: the GPS IFD's entries and values zeroed and
    its pointer taken out of IFD0, every length and offset in the file unchanged (a PNG's chunk checksum
    is computed again), the picture and the rest of the EXIF untouched. For HEIC and AVIF (EXIF in an
    item), PNG (an `eXIf` chunk) and WebP (an `EXIF` chunk). None where the EXIF is not found exactly
    once, or where the result does not read as the same EXIF less the position."""
    start = _exif_start(data, image_format)
    if start is None:
        return None
    cleaned = bytearray(data)
    try:
        removed = _tiff_without_location(memoryview(cleaned)[start:])
        if removed and image_format == "PNG":
            _png_checksums_renewed(cleaned)
    except ValueError:
        return None
    if not removed:
        return None
    try:
        with Image.open(io.BytesIO(data)) as sent, Image.open(io.BytesIO(bytes(cleaned))) as kept:
            before, after = sent.getexif(), kept.getexif()
            if after.get_ifd(_GPS_IFD) or dict(after) != {k: v for k, v in before.items() if k != _GPS_IFD}:
                return None
            if image_format == "PNG":
                kept.verify()  # every chunk's checksum
    except (OSError, SyntaxError, ValueError):
        return None
    return bytes(cleaned)


#: How a HEIF's or AVIF's EXIF item begins (ISO/IEC 23008-12 A.2.1: the offset of its TIFF header, 6).
_EXIF_MARK = b"\x00\x00\x00\x06Exif\x00\x00"
_TIFF_HEADERS = (b"MM\x00*", b"II*\x00")


def _exif_start(data: bytes, image_format: str) -> int | None:
    """Where the TIFF header of the file's one EXIF block is, or None."""
    if image_format in ("HEIF", "AVIF"):
        starts = [at + len(_EXIF_MARK) for tiff in _TIFF_HEADERS for at in _find_all(data, _EXIF_MARK + tiff)]
    elif image_format == "PNG":
        starts = [at for kind, at, _ in _png_chunks(data) if kind == b"eXIf"]
    elif image_format == "WEBP":
        starts = [at for kind, at, _ in _riff_chunks(data) if kind == b"EXIF"]
    else:
        return None
    if len(starts) != 1:
        return None
    start = starts[0] + (6 if data[starts[0] : starts[0] + 6] == b"Exif\x00\x00" else 0)
    return start if data[start : start + 4] in _TIFF_HEADERS else None


def _png_chunks(data: bytes | bytearray) -> list[tuple[bytes, int, int]]:
    """(type, where its data starts, its length) of each chunk of a PNG."""
    chunks, at = [], 8  # after the signature
    while at + 12 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        chunks.append((bytes(data[at + 4 : at + 8]), at + 8, length))
        at += 12 + length
    return chunks


def _png_checksums_renewed(data: bytearray) -> None:
    for kind, at, length in _png_chunks(data):
        if kind == b"eXIf":
            data[at + length : at + length + 4] = zlib.crc32(kind + data[at : at + length]).to_bytes(4, "big")


def _riff_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(FourCC, where its data starts, its length) of each chunk of a RIFF file such as WebP."""
    chunks, at = [], 12  # after "RIFF", the size and "WEBP"
    while at + 8 <= len(data):
        length = int.from_bytes(data[at + 4 : at + 8], "little")
        chunks.append((data[at : at + 4], at + 8, length))
        at += 8 + length + (length & 1)
    return chunks


def _find_all(data: bytes, pattern: bytes) -> list[int]:
    found, at = [], data.find(pattern)
    while at >= 0:
        found.append(at)
        at = data.find(pattern, at + 1)
    return found


#: Bytes per value of each TIFF field type (TIFF 6.0 section 2, and EXIF 2.3 for type 13, IFD).
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}


def _tiff_without_location(tiff: memoryview) -> bool:
    """Zero the GPS IFD of a TIFF/EXIF block (its entries and the values they point to) and remove its
    entry from IFD0, in place; True if there was one. Raises ValueError where the layout is not TIFF's."""
    order = {b"MM": "big", b"II": "little"}.get(bytes(tiff[:2]))
    if order is None:
        raise ValueError("not a TIFF header")

    def number(offset: int, size: int) -> int:
        if offset + size > len(tiff):
            raise ValueError("past the end of the EXIF")
        return int.from_bytes(tiff[offset : offset + size], order)

    ifd0 = number(4, 4)
    count = number(ifd0, 2)
    entries = [ifd0 + 2 + 12 * index for index in range(count)]
    gps_entry = next((entry for entry in entries if number(entry, 2) == _GPS_IFD), None)
    if gps_entry is None:
        return False
    gps = number(gps_entry + 8, 4)
    gps_count = number(gps, 2)
    for entry in (gps + 2 + 12 * index for index in range(gps_count)):
        kind, values = number(entry + 2, 2), number(entry + 4, 4)
        length = _TIFF_TYPE_SIZES.get(kind, 1) * values
        if length > 4:  # the values lie elsewhere, at the offset the entry gives
            offset = number(entry + 8, 4)
            number(offset + length - 1, 1)  # within the EXIF
            tiff[offset : offset + length] = bytes(length)
    end = gps + 2 + 12 * gps_count + 4
    number(end - 1, 1)
    tiff[gps:end] = bytes(end - gps)  # no entries, no next IFD
    # IFD0 without the GPS entry: the entries after it and the next-IFD offset move up by 12 bytes.
    tail_end = ifd0 + 2 + 12 * count + 4
    number(tail_end - 1, 1)
    tiff[gps_entry : tail_end - 12] = bytes(tiff[gps_entry + 12 : tail_end])
    tiff[tail_end - 12 : tail_end] = bytes(12)
    tiff[ifd0 : ifd0 + 2] = (count - 1).to_bytes(2, order)
    return True


def _as_jpeg(image: Image.Image) -> bytes:
    """The photo upright as a JPEG, with its colour profile and its EXIF (orientation reset). libheif has
    already applied a HEIC's own rotation and mirroring, which `exif_transpose` leaves alone."""
    upright = ImageOps.exif_transpose(image)
    rgb = upright if upright.mode == "RGB" else upright.convert("RGB")
    extra = {"icc_profile": image.info["icc_profile"]} if image.info.get("icc_profile") else {}
    exif = upright.getexif()
    exif.pop(_GPS_IFD, None)  # where the photo was taken: see `without_location`
    if exif:
        extra["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=CONVERTED_JPEG_QUALITY, **extra)
    return buffer.getvalue()
