"""OpenAI-shaped API errors for mockai.

Every error mockai returns has the body OpenAI uses::

    {"error": {"message": "...", "type": "invalid_request_error", "param": null, "code": null}}
"""

from __future__ import annotations

from libs.common.errors import RagpocError

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class OpenAIError(RagpocError):
    """An error that is answered with an OpenAI-shaped JSON body and an HTTP status."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        error_type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code

    def payload(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def server_error(message: str) -> OpenAIError:
    return OpenAIError(500, message, error_type=SERVER_ERROR)
