"""The boto3 client for S3 sources, and the mapping of its errors: transient ones to
`Retryable`, the others to one-line errors naming the bucket and key."""

from __future__ import annotations

from typing import Any

from deepcvr import __version__
from deepcvr.errors import ConfigError, DataError
from deepcvr.extract.retry import Retryable, parse_retry_after
from deepcvr.extract.sources import Options
from deepcvr.secrets import register_secret

THROTTLE_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "RequestLimitExceeded",
    "TooManyRequests", "TooManyRequestsException", "BandwidthLimitExceeded",
}  # fmt: skip
TRANSIENT_CODES = {
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
}
CREDENTIAL_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "InvalidClientTokenId",
}  # fmt: skip
NO_CREDENTIALS = (
    "no AWS credentials found (environment, AWS_PROFILE or ~/.aws, SSO, instance role); "
    "configure them, or set anonymous: true for a public bucket"
)


class NotFound(DataError):
    """404: no such key."""


class Denied(DataError):
    """403: access denied (a missing key also looks like this without s3:ListBucket)."""


def make_client(options: Options, shown: str) -> Any:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    kw: dict[str, Any] = {
        "retries": {"total_max_attempts": 1, "mode": "standard"},
        "max_pool_connections": options.concurrency + 2,
        "connect_timeout": options.timeout,
        "read_timeout": options.timeout,
        "user_agent_extra": f"deepcvr/{__version__}",
    }
    try:
        session = boto3.session.Session(region_name=options.region)
        if options.anonymous:
            kw["signature_version"] = UNSIGNED
        else:
            creds = session.get_credentials()
            if creds is None:
                raise ConfigError(f"{shown}: {NO_CREDENTIALS}")
            frozen = creds.get_frozen_credentials()
            for secret in (frozen.access_key, frozen.secret_key, frozen.token):
                if secret:
                    register_secret(secret)  # never shown, even inside a library message
        # endpoint_url None: boto3 still honours AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL.
        return session.client("s3", endpoint_url=options.endpoint_url or None, config=Config(**kw))
    except BotoCoreError as e:
        raise ConfigError(f"{shown}: cannot set up the S3 client: {e}") from None
    except ValueError as e:  # a malformed endpoint URL
        raise ConfigError(f"{shown}: {e}") from None


def s3_error(e: Exception, what: str, bucket: str) -> Retryable:
    """Retryable for a transient failure; raise a one-line error for any other."""
    from botocore import exceptions as bx

    if isinstance(e, bx.ClientError):
        err, meta = e.response.get("Error", {}), e.response.get("ResponseMetadata", {})
        code, status = str(err.get("Code", "")), int(meta.get("HTTPStatusCode") or 0)
        label = f"{status} {code}" if code and code != str(status) else str(status or code)
        if code in THROTTLE_CODES or code in TRANSIENT_CODES or status == 429 or status >= 500:
            after = parse_retry_after(meta.get("HTTPHeaders", {}).get("retry-after"))
            return Retryable(f"{label} {err.get('Message', '')}".strip(), after)
        if code in CREDENTIAL_CODES:
            raise DataError(f"{what}: credentials rejected ({label}); check the AWS credentials")
        if status == 403 or code in ("AccessDenied", "AllAccessDisabled"):
            raise Denied(
                f"{what}: access denied ({label}); check the credentials and the bucket policy"
            )
        if code == "NoSuchBucket":
            raise DataError(f"s3://{bucket}: no such bucket ({label})")
        if status == 404 or code in ("NoSuchKey", "NotFound"):
            raise NotFound(f"{what}: no such key ({label})")
        if status == 412 or code == "PreconditionFailed":
            raise DataError(f"{what}: the object changed during the download; run again")
        if code == "InvalidObjectState":
            raise DataError(f"{what}: the object is archived (Glacier); restore it first")
        raise DataError(f"{what}: S3 error {label}: {err.get('Message', '')}".rstrip(": "))
    if isinstance(e, bx.NoCredentialsError | bx.PartialCredentialsError):
        raise ConfigError(f"{what}: {NO_CREDENTIALS}")
    transient = (bx.HTTPClientError, bx.ConnectionError, bx.IncompleteReadError)
    if isinstance(e, (*transient, bx.FlexibleChecksumError)):
        return Retryable(f"{type(e).__name__}: {' '.join(str(e).split())}")
    if isinstance(e, bx.BotoCoreError):
        raise DataError(f"{what}: {' '.join(str(e).split())}")
    if isinstance(e, OSError):  # a socket error that escaped botocore's wrapping
        return Retryable(f"{type(e).__name__}: {e}")
    raise e
