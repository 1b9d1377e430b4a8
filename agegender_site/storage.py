"""Private S3 storage whose signed URLs may name a different endpoint than the servers use.

Inside Docker the web and worker reach MinIO as http://minio:9000, which a browser cannot resolve; the
signature covers the host, so URLs for the browser are signed for `public_endpoint_url` instead.
"""

from __future__ import annotations

from typing import Any

import boto3
from storages.backends.s3 import S3Storage
from storages.utils import clean_name


class PrivateS3Storage(S3Storage):
    def __init__(self, *, public_endpoint_url: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.public_endpoint_url = public_endpoint_url
        self._public_client = None

    def url(
        self,
        name: str,
        parameters: dict | None = None,
        expire: int | None = None,
        http_method: str | None = None,
    ) -> str:
        if not self.public_endpoint_url:
            return super().url(name, parameters, expire, http_method)
        if self._public_client is None:
            access_key, secret_key = self.access_key, self.secret_key
            self._public_client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.public_endpoint_url,
                region_name=self.region_name,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                aws_session_token=self.security_token,
                config=self.client_config,
            )
        params = {
            **(parameters or {}),
            "Bucket": self.bucket_name,
            "Key": self._normalize_name(clean_name(name)),
        }
        return self._public_client.generate_presigned_url(
            "get_object",
            Params=params,
            ExpiresIn=self.querystring_expire if expire is None else expire,
            HttpMethod=http_method,
        )
