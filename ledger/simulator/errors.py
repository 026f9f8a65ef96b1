"""Webex's error answers, in the several body shapes Webex really uses.

A client must read the message from whichever shape arrives, so the simulator uses all of them:

    MESSAGE  {"message", "errors": [{"description"}], "trackingId"}          People, auth, 404 path
    CODED    {"errorCode", "message": "[Error N] ...", "errors": [{"errorCode", "description"}],
              "trackingId"} plus the `Cisco-Spark-Error-Codes` header          Locations, Calling
    KEYED    {"error": {"key", "message": [{"description", "code"}]}, "trackingId"}  settings
    PLAIN    {"errorMessage"}                                                   gateway 5xx

Route code raises `ApiError`; the core turns it into a response once the tracking id is known.

Guesses. Where Webex documents nothing (not in the OpenAPI files, the derived catalog or its
published guides), the simulator still has to answer something. Each such answer is marked
`GUESS:` where it is made and listed here, so that nobody mistakes it for Webex's contract:

- POST /v1/access_token errors: bad or missing `grant_type` or `refresh_token` 400, wrong
  `client_id`/`client_secret` 401, in the MESSAGE shape (the OAuth error name leads the text).
- GET /people `max` above its documented cap (100 with callingData=true, 50 with locationId):
  the page is cut to the cap, not refused; the files say only that max "will not be more than".
- POST /telephony/config/locations/{id}/numbers: at most `NUMBERS_ADD_MAX` numbers per request
  (the files cap only mobile numbers, at 20, and DEACTIVATE of the same path at 500), 400 above;
  one bad number (not E.164, or in another location) refuses the whole request, adding none.
- POST /people "400 but created" may leave the person without the calling part (no location,
  number, extension or calling license): the identity is made before calling is provisioned.
"""

from __future__ import annotations

from enum import Enum

from ledger.simulator.messages import HeaderPairs


class ErrorShape(Enum):
    """Which of Webex's error body shapes an error is answered with."""

    MESSAGE = "message"
    CODED = "coded"
    KEYED = "keyed"
    PLAIN = "plain"


class ApiError(Exception):
    """An error answer raised from inside a route; state changes before it are kept."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        shape: ErrorShape = ErrorShape.MESSAGE,
        error_code: int | None = None,
        headers: HeaderPairs = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.shape = shape
        self.error_code = error_code
        self.headers = headers

    def body(self, tracking_id: str) -> dict[str, object]:
        """The JSON body for this error in its shape."""
        if self.shape is ErrorShape.CODED:
            code = self.error_code if self.error_code is not None else self.status
            text = f"[Error {code}] {self.message}"
            return {
                "errorCode": code,
                "message": text,
                "errors": [{"errorCode": code, "description": text}],
                "trackingId": tracking_id,
            }
        if self.shape is ErrorShape.KEYED:
            key_code = str(self.error_code if self.error_code is not None else self.status)
            return {
                "error": {
                    "key": str(self.status),
                    "message": [{"description": self.message, "code": key_code}],
                },
                "trackingId": tracking_id,
            }
        if self.shape is ErrorShape.PLAIN:
            return {"errorMessage": self.message}
        return {
            "message": self.message,
            "errors": [{"description": self.message}],
            "trackingId": tracking_id,
        }

    def response_headers(self) -> HeaderPairs:
        """Extra headers: the error-code header Webex adds to coded errors."""
        if self.shape is ErrorShape.CODED and self.error_code is not None:
            return (("Cisco-Spark-Error-Codes", str(self.error_code)), *self.headers)
        return self.headers


def bad_request(message: str) -> ApiError:
    """400 in the People shape."""
    return ApiError(400, message)


def not_found(message: str) -> ApiError:
    """404 in the People shape."""
    return ApiError(404, message)


def conflict(message: str) -> ApiError:
    """409: the request conflicts with an existing entity (same email, same location name)."""
    return ApiError(409, message)


def missing_fields(names: list[str]) -> ApiError:
    """400 errorCode 25008: required fields absent (Locations and Calling endpoints)."""
    return ApiError(
        400,
        "Missing required field(s): " + ", ".join(names) + ".",
        shape=ErrorShape.CODED,
        error_code=25008,
    )


def invalid_value(message: str) -> ApiError:
    """400 in the coded shape, for a field of the right name but a wrong value."""
    return ApiError(400, message, shape=ErrorShape.CODED, error_code=25008)


def group_not_found() -> ApiError:
    """404 errorCode 5620: the location is unknown or not enabled for Webex Calling."""
    return ApiError(
        404,
        "Group not found with this external ID.",
        shape=ErrorShape.CODED,
        error_code=5620,
    )


def extension_unavailable() -> ApiError:
    """400 errorCode 4202: the extension is already assigned in that location."""
    return ApiError(400, "The extension is not available.", shape=ErrorShape.CODED, error_code=4202)


def settings_invalid(message: str) -> ApiError:
    """400 in the keyed shape that the calling-settings endpoints answer with."""
    return ApiError(400, message, shape=ErrorShape.KEYED)


def unknown_path(path: str) -> ApiError:
    """404 for a path Webex does not serve, with its tell-tale message."""
    resource = "hydra/" + path.lstrip("/")
    return ApiError(404, f"No static resource {resource}.")


def method_not_allowed(method: str) -> ApiError:
    """405 for a known path with a method it does not serve."""
    return ApiError(405, f"Request method '{method}' is not supported.")


def unauthorized() -> ApiError:
    """401: token missing, invalid or expired."""
    return ApiError(
        401,
        "The request requires a valid access token set in the Authorization request header.",
    )


def forbidden() -> ApiError:
    """403: the token lacks the scope or role for this request."""
    return ApiError(
        403,
        "The server understood the request, but refused to fulfill it because the access "
        "token is missing required scopes or the user is missing required roles or licenses.",
    )


def too_many_requests(retry_after: str) -> ApiError:
    """429 with the Retry-After header (which may be deliberately unparseable)."""
    return ApiError(
        429,
        "Too Many Requests: the rate limit was exceeded, retry later.",
        headers=(("Retry-After", retry_after),),
    )


def server_error(status: int) -> ApiError:
    """A 5xx; gateway statuses use the bare `errorMessage` shape, as a proxy in front would."""
    if status in (502, 504):
        return ApiError(status, "Upstream service failed to respond.", shape=ErrorShape.PLAIN)
    if status == 503:
        return ApiError(
            503, "Service Unavailable: try again later.", headers=(("Retry-After", "1"),)
        )
    return ApiError(status, "An unexpected error occurred, please try again.")


# GUESS: the OAuth errors of POST /v1/access_token (see the module docstring).


def token_request_invalid(message: str) -> ApiError:
    """400 for a refresh request without the form fields it needs, or another grant type."""
    return ApiError(400, message)


def token_client_invalid() -> ApiError:
    """401 for a client id or secret the token endpoint does not know."""
    return ApiError(401, "invalid_client: The client_id or client_secret is not valid.")


def refresh_token_invalid() -> ApiError:
    """400 for a refresh token that is wrong, revoked or expired."""
    return ApiError(
        400,
        "invalid_grant: The refresh token provided is expired, revoked, malformed, or invalid.",
    )


def too_many_numbers(limit: int) -> ApiError:
    """GUESS: 400 when one request adds more numbers than `limit` (see the module docstring)."""
    return invalid_value(f"At most {limit} phone numbers can be added in one request.")
