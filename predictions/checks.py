"""System checks (`manage.py check`, and every start of the web server) for what the uploads need."""

from __future__ import annotations

from django.core import checks

from predictions import metadata


@checks.register()
def exiftool_installed(app_configs: object = None, **kwargs: object) -> list[checks.CheckMessage]:
    if metadata.available():
        return []
    return [
        checks.Warning(
            "ExifTool was not found: uploads are converted to JPEG to remove where they were taken "
            "(slow for HEIC).",
            hint="Install it (Debian/Ubuntu: apt-get install libimage-exiftool-perl; macOS: brew install "
            "exiftool) or set AGEGENDER_EXIFTOOL to its path.",
            id="predictions.W001",
        )
    ]
