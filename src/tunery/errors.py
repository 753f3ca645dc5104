"""Domain errors. Services raise them; the API maps each once to OpenAI's error envelope
`{"error": {"message", "type", "param", "code"}}` with the status code the SDK expects."""

from __future__ import annotations


class TuneryError(Exception):
    status_code = 500
    error_type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def envelope(self) -> dict:
        return {"error": {"message": self.message, "type": self.error_type,
                          "param": self.param, "code": self.code}}


class InvalidRequest(TuneryError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(TuneryError):
    status_code = 401
    error_type = "invalid_request_error"

    def __init__(self, message: str = "Incorrect or missing API key. Pass it as 'Authorization: Bearer KEY'."):
        super().__init__(message, code="invalid_api_key")


class NotFound(TuneryError):
    status_code = 404
    error_type = "invalid_request_error"


class Conflict(TuneryError):
    status_code = 409
    error_type = "invalid_request_error"


class TooLarge(TuneryError):
    status_code = 413
    error_type = "invalid_request_error"


class PermissionDenied(TuneryError):
    status_code = 403
    error_type = "invalid_request_error"


class RateLimited(TuneryError):
    status_code = 429
    error_type = "rate_limit_error"


def unknown_cursor(kind: str, after: str) -> InvalidRequest:
    """A list's `after` that names no object of that list (another organization's objects
    included): refused as OpenAI refuses it, never read as the start of the list."""
    return InvalidRequest(f"No such {kind} object: {after} (the 'after' cursor names no object of this list).",
                          param="after")
