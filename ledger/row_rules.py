"""What a valid row is: the columns, their limits, and the rules that turn one row's cells into
a `UserRow` and its `LocationSpec`, or a `Rejection` with a reason code (SPEC section 3).

Pure: no file, no state. `validate_row` raises `InvalidRow` for the first rule a row breaks.
Normalization never invents data: a value that is not valid after trimming is rejected, not
corrected.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from ledger.error_handling import ReasonCode

# Far above any real cell, so the csv module never stops mid-file; our own limits below apply.
CSV_FIELD_LIMIT = 16 * 1024 * 1024
MAX_CELL_CHARS = 1000
NAME_MAX = 30
DISPLAY_NAME_MAX = 128
LOCATION_NAME_MAX = 80
EMAIL_MAX = 254
EXTENSION_MAX = 10
FORBIDDEN_NAME_CHARS = frozenset('%#<>\\/"')

LOCATION_FIELDS = (
    "location_time_zone",
    "location_preferred_language",
    "location_announcement_language",
    "location_address1",
    "location_address2",
    "location_city",
    "location_state",
    "location_postal_code",
    "location_country",
)
COLUMNS = (
    "email",
    "first_name",
    "last_name",
    "display_name",
    "location_name",
    *LOCATION_FIELDS,
    "extension",
    "phone_number",
    "department",
    "title",
    "voicemail_enabled",
    "call_waiting_enabled",
    "voicemail_rings",
    "caller_id",
)
# Control Hub's user-export headers whose folded form differs from ours.
HEADER_ALIASES = {"useridemail(required)": "email", "location": "location_name"}
CALLER_ID_CHOICES = ("DIRECT_LINE", "LOCATION_NUMBER")
TRUE_WORDS = frozenset({"true", "yes", "1"})
FALSE_WORDS = frozenset({"false", "no", "0"})

EMAIL_RE = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]+@[a-z0-9-]+(\.[a-z0-9-]+)+$")
LANGUAGE_RE = re.compile(r"^[a-z]{2}_[a-z]{2}$")
PHONE_PUNCTUATION_RE = re.compile(r"[\s.\-()]")
E164_RE = re.compile(r"^\+[0-9]{8,15}$")
EXTENSION_RE = re.compile(r"^[0-9]{2,10}$")
RINGS_RE = re.compile(r"^[0-9]{1,2}$")
SURROGATE_RE = re.compile("[\udc80-\udcff]")


class LocationSpec(BaseModel):
    """What the file says a location should look like. Every field is optional per row."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    time_zone: str | None = None
    preferred_language: str | None = None
    announcement_language: str | None = None
    address1: str | None = None
    address2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None

    REQUIRED_TO_CREATE: ClassVar[tuple[str, ...]] = (
        "time_zone",
        "preferred_language",
        "announcement_language",
        "address1",
        "city",
        "state",
        "postal_code",
        "country",
    )

    def missing_to_create(self) -> list[str]:
        return [name for name in self.REQUIRED_TO_CREATE if getattr(self, name) is None]


class UserRow(BaseModel):
    """One valid, normalized input row: everything the steps need about one user."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    email: str
    first_name: str | None = None
    last_name: str | None = None
    display_name: str
    location_name: str
    extension: str | None = None
    phone_number: str | None = None
    department: str | None = None
    title: str | None = None
    voicemail_enabled: bool | None = None
    call_waiting_enabled: bool | None = None
    voicemail_rings: int | None = None
    caller_id: str | None = None

    def names_settings(self) -> bool:
        return any(
            value is not None
            for value in (
                self.voicemail_enabled,
                self.call_waiting_enabled,
                self.voicemail_rings,
                self.caller_id,
            )
        )


@dataclass(frozen=True)
class Rejection:
    reason: ReasonCode
    message: str
    field: str | None = None


class InvalidRow(Exception):
    """A row that breaks a rule; carries its Rejection."""

    def __init__(self, reason: ReasonCode, message: str, field: str | None) -> None:
        super().__init__(message)
        self.rejection = Rejection(reason, message, field)


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


# A cell past MAX_CELL_CHARS is refused before any rule reads it (a regex over megabytes, a
# message quoting them), with the reason and the limit its column's own rule gives.
_TOO_LONG = {
    "email": (ReasonCode.INVALID_EMAIL, EMAIL_MAX),
    "first_name": (ReasonCode.INVALID_NAME, NAME_MAX),
    "last_name": (ReasonCode.INVALID_NAME, NAME_MAX),
    "display_name": (ReasonCode.INVALID_NAME, DISPLAY_NAME_MAX),
    "location_name": (ReasonCode.INVALID_VALUE, LOCATION_NAME_MAX),
    "extension": (ReasonCode.INVALID_EXTENSION, EXTENSION_MAX),
    "phone_number": (ReasonCode.INVALID_PHONE, MAX_CELL_CHARS),
}


def _too_long(column: str) -> InvalidRow:
    reason, limit = _TOO_LONG.get(column, (ReasonCode.INVALID_VALUE, MAX_CELL_CHARS))
    return InvalidRow(reason, f"{column} is longer than {limit} characters", column)


def _clean(cells: dict[str, str | None]) -> dict[str, str | None]:
    """Every column, trimmed; blank is None. The hottest loop of ingest: kept inline."""
    values: dict[str, str | None] = {}
    for column in COLUMNS:
        value = cells.get(column)
        if value is not None:
            value = value.strip() or None
            if value is not None and len(value) > MAX_CELL_CHARS:
                raise _too_long(column)
        values[column] = value
    return values


def _name(value: str | None, column: str, limit: int) -> str | None:
    if value is None:
        return None
    if len(value) > limit:
        raise InvalidRow(
            ReasonCode.INVALID_NAME, f"{column} is longer than {limit} characters", column
        )
    bad = sorted(set(value) & FORBIDDEN_NAME_CHARS)
    if bad:
        raise InvalidRow(ReasonCode.INVALID_NAME, f"{column} contains {''.join(bad)!r}", column)
    return value


def _bool(value: str | None, column: str) -> bool | None:
    if value is None:
        return None
    word = value.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise InvalidRow(ReasonCode.INVALID_VALUE, f"{column} must be true or false", column)


def normalize_phone(value: str) -> str | None:
    """The E.164 form of `value`, or None when it is not one (nothing is guessed)."""
    compact = PHONE_PUNCTUATION_RE.sub("", value)
    return compact if E164_RE.match(compact) else None


def _location(values: dict[str, str | None], name: str) -> LocationSpec:
    time_zone = values["location_time_zone"]
    if time_zone is not None and time_zone not in _time_zones():
        raise InvalidRow(
            ReasonCode.INVALID_VALUE,
            f"location_time_zone {time_zone!r} is not an IANA time zone",
            "location_time_zone",
        )
    languages = {}
    for column in ("location_preferred_language", "location_announcement_language"):
        language = values[column]
        if language is not None:
            language = language.lower().replace("-", "_")
            if not LANGUAGE_RE.match(language):
                raise InvalidRow(ReasonCode.INVALID_VALUE, f"{column} must look like en_us", column)
        languages[column] = language
    country = values["location_country"]
    if country is not None:
        country = country.upper()
        if not re.fullmatch("[A-Z]{2}", country):
            raise InvalidRow(
                ReasonCode.INVALID_VALUE,
                "location_country must be a two-letter ISO 3166 code",
                "location_country",
            )
    return LocationSpec(
        name=name,
        time_zone=time_zone,
        preferred_language=languages["location_preferred_language"],
        announcement_language=languages["location_announcement_language"],
        address1=values["location_address1"],
        address2=values["location_address2"],
        city=values["location_city"],
        state=values["location_state"],
        postal_code=values["location_postal_code"],
        country=country,
    )


# Rows of one location nearly always repeat its values: build and check each spec once.
@lru_cache(maxsize=1024)
def _location_of(name: str, location_values: tuple[str | None, ...]) -> LocationSpec:
    return _location(dict(zip(LOCATION_FIELDS, location_values, strict=True)), name)


@lru_cache(maxsize=1024)
def given_values(location: LocationSpec) -> tuple[tuple[str, str], ...]:
    """The location values a row gives (those it leaves blank are not given)."""
    return tuple(location.model_dump(exclude={"name"}, exclude_none=True).items())


def validate_row(cells: dict[str, str | None]) -> tuple[UserRow, LocationSpec]:
    """Validate and normalize one row's mapped cells. Raises InvalidRow."""
    values = _clean(cells)

    email = values["email"]
    if email is None:
        raise InvalidRow(ReasonCode.MISSING_FIELD, "email is empty", "email")
    email = email.lower()
    if len(email) > EMAIL_MAX or not EMAIL_RE.match(email) or len(email.split("@")[0]) > 64:
        raise InvalidRow(ReasonCode.INVALID_EMAIL, f"{email!r} is not a valid email", "email")

    first = _name(values["first_name"], "first_name", NAME_MAX)
    last = _name(values["last_name"], "last_name", NAME_MAX)
    display = _name(values["display_name"], "display_name", DISPLAY_NAME_MAX)
    if first is None and last is None and display is None:
        raise InvalidRow(
            ReasonCode.MISSING_FIELD,
            "first_name, last_name and display_name are empty",
            "first_name",
        )
    display = display or " ".join(part for part in (first, last) if part)

    location_name = values["location_name"]
    if location_name is None:
        raise InvalidRow(ReasonCode.MISSING_FIELD, "location_name is empty", "location_name")
    if len(location_name) > LOCATION_NAME_MAX:
        raise InvalidRow(
            ReasonCode.INVALID_VALUE,
            f"location_name is longer than {LOCATION_NAME_MAX} characters",
            "location_name",
        )

    extension = values["extension"]
    if extension is not None and not EXTENSION_RE.match(extension):
        raise InvalidRow(
            ReasonCode.INVALID_EXTENSION, f"extension {extension!r} is not 2-10 digits", "extension"
        )
    phone = values["phone_number"]
    if phone is not None:
        normalized = normalize_phone(phone)
        if normalized is None:
            raise InvalidRow(
                ReasonCode.INVALID_PHONE,
                f"phone_number {phone!r} is not E.164 (+ and 8-15 digits)",
                "phone_number",
            )
        phone = normalized
    if extension is None and phone is None:
        raise InvalidRow(
            ReasonCode.MISSING_FIELD, "extension and phone_number are both empty", "extension"
        )

    rings_text = values["voicemail_rings"]
    rings: int | None = None
    if rings_text is not None:
        # ASCII digits only: str.isdigit() also accepts "²", which int() then refuses.
        if not RINGS_RE.match(rings_text) or not 2 <= int(rings_text) <= 20:
            raise InvalidRow(
                ReasonCode.INVALID_VALUE, "voicemail_rings must be 2 to 20", "voicemail_rings"
            )
        rings = int(rings_text)
    caller_id = values["caller_id"]
    if caller_id is not None:
        caller_id = caller_id.upper()
        if caller_id not in CALLER_ID_CHOICES:
            raise InvalidRow(
                ReasonCode.INVALID_VALUE,
                f"caller_id must be one of {', '.join(CALLER_ID_CHOICES)}",
                "caller_id",
            )

    user = UserRow(
        email=email,
        first_name=first,
        last_name=last,
        display_name=display,
        location_name=location_name,
        extension=extension,
        phone_number=phone,
        department=values["department"],
        title=values["title"],
        voicemail_enabled=_bool(values["voicemail_enabled"], "voicemail_enabled"),
        call_waiting_enabled=_bool(values["call_waiting_enabled"], "call_waiting_enabled"),
        voicemail_rings=rings,
        caller_id=caller_id,
    )
    return user, _location_of(location_name, tuple(values[c] for c in LOCATION_FIELDS))
