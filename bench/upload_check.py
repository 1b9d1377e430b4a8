"""Web-request time of the upload check on a phone-sized photo that carries its GPS position.

    python bench/upload_check.py [--repeat N]

A 12-megapixel (4032×3024) photo, as HEIC and as JPEG, with a phone's EXIF (camera, time, position),
goes through `check_image_upload` as the upload view calls it: format and size read, completeness, the
position removed by ExifTool. A HEIC is not decoded in the request. Then one upload of 20 PNGs of
7000×7000 (49 MP each) through `check_uploads`: past `AGEGENDER_MAX_UPLOAD_MEGAPIXELS` the photos are
refused before they are decoded. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agegender_site.settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image

    from predictions.uploads import check_image_upload, check_uploads

    exif = Image.Exif()
    exif.update({0x010F: "Phone maker", 0x0110: "Phone 15", 0x0112: 6})
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 30.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    with Image.open(ROOT / "static/agegender/sample-astronaut.jpg") as sample:
        photo = sample.convert("RGB").resize((4032, 3024))
    for fmt, extension in (("HEIF", "heic"), ("JPEG", "jpg")):
        buffer = io.BytesIO()
        photo.save(buffer, format=fmt, quality=85, exif=exif.tobytes())
        data = buffer.getvalue()
        check_image_upload(SimpleUploadedFile(f"warm.{extension}", data))  # ExifTool starts once a process
        started = time.perf_counter()
        for _ in range(args.repeat):
            checked = check_image_upload(SimpleUploadedFile(f"IMG.{extension}", data))
        per_photo = (time.perf_counter() - started) / args.repeat
        print(
            f"{fmt:4} 12 MP, {len(data) / 1e6:.1f} MB, with GPS: {per_photo * 1000:.0f} ms per photo "
            f"in the request; stored as .{checked.extension}"
        )

    buffer = io.BytesIO()
    Image.new("RGB", (7000, 7000), (120, 90, 60)).save(buffer, format="PNG")
    uploads = [SimpleUploadedFile(f"big{i}.png", buffer.getvalue()) for i in range(20)]
    started = time.perf_counter()
    results = check_uploads(uploads)
    accepted = sum(not isinstance(result, str) for _, result in results)
    print(
        f"20 PNGs of 7000×7000 in one upload: {time.perf_counter() - started:.1f} s in the request, "
        f"{accepted} accepted, {20 - accepted} refused unread"
    )


if __name__ == "__main__":
    main()
