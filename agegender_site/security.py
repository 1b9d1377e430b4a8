"""Response headers that keep the pages safe to show: a Content-Security-Policy (scripts only from this
site, so injected markup cannot run script) and a Permissions-Policy (the camera for this site's own
upload page, "Take a photo"; no microphone or location). Django's SecurityMiddleware and
XFrameOptionsMiddleware add nosniff, the referrer policy and frame denial."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse


def image_sources() -> list[str]:
    """Where the pages' photos come from: this site, upload previews (blob:), and on S3 the store that
    the signed URLs point at."""
    sources = ["'self'", "data:", "blob:"]
    if settings.AGEGENDER_S3_BUCKET:
        options = settings.STORAGES["default"].get("OPTIONS", {})
        endpoint = options.get("public_endpoint_url") or options.get("endpoint_url")
        if endpoint:
            parts = urlsplit(endpoint)
            sources.append(f"{parts.scheme}://{parts.netloc}")
        else:  # AWS itself: bucket.s3.amazonaws.com or s3.region.amazonaws.com
            sources.append("https://*.amazonaws.com")
    return sources


def content_security_policy() -> str:
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        # The photo's boxes are placed by style attributes (so that they show without JavaScript too).
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": image_sources(),
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.policy = content_security_policy()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.policy)
        response.headers.setdefault("Permissions-Policy", "camera=(self), microphone=(), geolocation=()")
        return response
