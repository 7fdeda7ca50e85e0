"""Typed errors. Each carries its HTTP status and a stable code; one handler maps them to JSON."""
from __future__ import annotations


class ClassifierError(Exception):
    """Base of every error this project raises on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict:
        """The JSON error body: {"error": {"code": ..., "message": ...}}."""
        return {"error": {"code": self.code, "message": self.message}}


# --- input problems (4xx) -------------------------------------------------
class BadRequest(ClassifierError):
    status, code = 400, "bad_request"


class EmptyImage(BadRequest):
    code = "empty_body"


class CorruptImage(BadRequest):
    code = "corrupt_image"


class UnsupportedImage(ClassifierError):
    status, code = 415, "unsupported_media_type"


class PayloadTooLarge(ClassifierError):
    status, code = 413, "payload_too_large"


class TooManyPixels(ClassifierError):
    status, code = 413, "image_too_large"


class NotFound(ClassifierError):
    status, code = 404, "not_found"


class VersionConflict(ClassifierError):
    """A model version that cannot be used as asked: not loaded here, or a change the serving state refuses."""

    status, code = 409, "version_conflict"


class VersionNotLoaded(VersionConflict):
    """Asked for a version this service does not hold: refused, never answered by another version."""

    code = "version_not_loaded"


class Unauthorized(ClassifierError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.headers = headers or {}


class Forbidden(ClassifierError):
    status, code = 403, "forbidden"


# --- server-side states (5xx) ---------------------------------------------
class NotReady(ClassifierError):
    status, code = 503, "not_ready"
    retry_after = 1  # loading or draining: a retry soon, or on another replica, may find one ready


class Overloaded(ClassifierError):
    """Refused at once rather than queued past its deadline; the client should retry after `retry_after` s."""

    status, code = 503, "overloaded"
    IN_QUEUE = "deadline_in_queue"  # the code when it waited for a slot, or queued, and ran out of time
    CODES = (code, IN_QUEUE)  # what a 503 from a full service says (as against not ready or draining)

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class MembersUnavailable(ClassifierError):
    status, code = 503, "members_unavailable"


class DeadlineExceeded(ClassifierError):
    status, code = 504, "deadline_exceeded"


# --- offline problems (CLI / start-up) ------------------------------------
class WeightsMissing(ClassifierError):
    code = "weights_missing"


class WeightsRejected(ClassifierError):
    """A weight file is not the upstream file of its name (checksum mismatch): refused, nothing imported."""

    code = "weights_rejected"


class WeightsMismatch(ClassifierError):
    """The weights folder does not serve what the settings ask for (e.g. OCR_LANGS vs the recogniser)."""

    code = "weights_mismatch"


class WeightsDownloadFailed(ClassifierError):
    code = "weights_download_failed"


class ArtifactError(ClassifierError):
    """An artifact is missing, tampered with, or from an incompatible version."""

    code = "artifact_invalid"


class DatasetError(ClassifierError):
    status, code = 400, "dataset_invalid"


class SettingsError(ClassifierError, ValueError):
    """Settings that do not parse: the message names every bad variable, its value and what was expected."""

    code = "settings_invalid"


class JobMismatch(ClassifierError):
    """A bulk job's output folder holds another job (another model version or input): resuming would mix them."""

    status, code = 409, "job_mismatch"
