"""CSV → normalized, validated, de-duplicated rows or rejections (SPEC section 3).

Pure and streaming: `read_rows` yields one `ParsedRow` at a time and keeps only what
de-duplication needs (the keys seen so far and each location's values), never the file.
Normalization never invents data: a value that is not valid after trimming is rejected with a
reason code, not corrected. A cell that export guarded with a leading `'` (see `cells`) is read
without it, so that a file ledger wrote (retry_rows.csv) ingests as the rows it came from.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import weakref
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import IO, ClassVar

from pydantic import BaseModel, ConfigDict

from ledger.cells import restore
from ledger.error_handling import InputFileError, ReasonCode

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


@dataclass(frozen=True)
class ParsedRow:
    """A data row as read (`raw`, keyed by the file's own headers) and what became of it."""

    row_id: int
    raw: dict[str, str]
    user: UserRow | None = None
    location: LocationSpec | None = None
    rejection: Rejection | None = None

    def raw_minified(self) -> str:
        return minify(self.raw)


def minify(raw: dict[str, str]) -> str:
    return json.dumps(raw, ensure_ascii=False, separators=(",", ":"))


class _Invalid(Exception):
    def __init__(self, reason: ReasonCode, message: str, field: str | None) -> None:
        super().__init__(message)
        self.rejection = Rejection(reason, message, field)


def fold_header(name: str) -> str:
    """Header matching ignores case, spaces, `-` and `_` (and a stray BOM)."""
    return re.sub(r"[\s\-_/]", "", name.replace("\ufeff", "")).lower()


_FOLDED = {fold_header(column): column for column in COLUMNS} | HEADER_ALIASES


def map_headers(headers: list[str]) -> dict[str, int]:
    """Column name → index in the file. Raises InputFileError for unusable headers."""
    mapping: dict[str, int] = {}
    for index, header in enumerate(headers):
        column = _FOLDED.get(fold_header(header))
        if column is None:
            continue
        if column in mapping:
            raise InputFileError(
                f"columns {headers[mapping[column]]!r} and {header!r} both mean {column}"
            )
        mapping[column] = index
    missing = [c for c in ("email", "location_name") if c not in mapping]
    if not {"first_name", "last_name", "display_name"} & mapping.keys():
        missing.append("first_name, last_name or display_name")
    if not {"extension", "phone_number"} & mapping.keys():
        missing.append("extension or phone_number")
    if missing:
        raise InputFileError(f"the CSV lacks required column(s): {'; '.join(missing)}")
    return mapping


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


def _too_long(column: str) -> _Invalid:
    reason, limit = _TOO_LONG.get(column, (ReasonCode.INVALID_VALUE, MAX_CELL_CHARS))
    return _Invalid(reason, f"{column} is longer than {limit} characters", column)


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
        raise _Invalid(
            ReasonCode.INVALID_NAME, f"{column} is longer than {limit} characters", column
        )
    bad = sorted(set(value) & FORBIDDEN_NAME_CHARS)
    if bad:
        raise _Invalid(ReasonCode.INVALID_NAME, f"{column} contains {''.join(bad)!r}", column)
    return value


def _bool(value: str | None, column: str) -> bool | None:
    if value is None:
        return None
    word = value.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise _Invalid(ReasonCode.INVALID_VALUE, f"{column} must be true or false", column)


def normalize_phone(value: str) -> str | None:
    """The E.164 form of `value`, or None when it is not one (nothing is guessed)."""
    compact = PHONE_PUNCTUATION_RE.sub("", value)
    return compact if E164_RE.match(compact) else None


def _location(values: dict[str, str | None], name: str) -> LocationSpec:
    time_zone = values["location_time_zone"]
    if time_zone is not None and time_zone not in _time_zones():
        raise _Invalid(
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
                raise _Invalid(ReasonCode.INVALID_VALUE, f"{column} must look like en_us", column)
        languages[column] = language
    country = values["location_country"]
    if country is not None:
        country = country.upper()
        if not re.fullmatch("[A-Z]{2}", country):
            raise _Invalid(
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
def _given_values(location: LocationSpec) -> tuple[tuple[str, str], ...]:
    """The location values a row gives (those it leaves blank are not given)."""
    return tuple(location.model_dump(exclude={"name"}, exclude_none=True).items())


def validate_row(cells: dict[str, str | None]) -> tuple[UserRow, LocationSpec]:
    """Validate and normalize one row's mapped cells. Raises _Invalid."""
    values = _clean(cells)

    email = values["email"]
    if email is None:
        raise _Invalid(ReasonCode.MISSING_FIELD, "email is empty", "email")
    email = email.lower()
    if len(email) > EMAIL_MAX or not EMAIL_RE.match(email) or len(email.split("@")[0]) > 64:
        raise _Invalid(ReasonCode.INVALID_EMAIL, f"{email!r} is not a valid email", "email")

    first = _name(values["first_name"], "first_name", NAME_MAX)
    last = _name(values["last_name"], "last_name", NAME_MAX)
    display = _name(values["display_name"], "display_name", DISPLAY_NAME_MAX)
    if first is None and last is None and display is None:
        raise _Invalid(
            ReasonCode.MISSING_FIELD,
            "first_name, last_name and display_name are empty",
            "first_name",
        )
    display = display or " ".join(part for part in (first, last) if part)

    location_name = values["location_name"]
    if location_name is None:
        raise _Invalid(ReasonCode.MISSING_FIELD, "location_name is empty", "location_name")
    if len(location_name) > LOCATION_NAME_MAX:
        raise _Invalid(
            ReasonCode.INVALID_VALUE,
            f"location_name is longer than {LOCATION_NAME_MAX} characters",
            "location_name",
        )

    extension = values["extension"]
    if extension is not None and not EXTENSION_RE.match(extension):
        raise _Invalid(
            ReasonCode.INVALID_EXTENSION, f"extension {extension!r} is not 2-10 digits", "extension"
        )
    phone = values["phone_number"]
    if phone is not None:
        normalized = normalize_phone(phone)
        if normalized is None:
            raise _Invalid(
                ReasonCode.INVALID_PHONE,
                f"phone_number {phone!r} is not E.164 (+ and 8-15 digits)",
                "phone_number",
            )
        phone = normalized
    if extension is None and phone is None:
        raise _Invalid(
            ReasonCode.MISSING_FIELD, "extension and phone_number are both empty", "extension"
        )

    rings_text = values["voicemail_rings"]
    rings: int | None = None
    if rings_text is not None:
        # ASCII digits only: str.isdigit() also accepts "²", which int() then refuses.
        if not RINGS_RE.match(rings_text) or not 2 <= int(rings_text) <= 20:
            raise _Invalid(
                ReasonCode.INVALID_VALUE, "voicemail_rings must be 2 to 20", "voicemail_rings"
            )
        rings = int(rings_text)
    caller_id = values["caller_id"]
    if caller_id is not None:
        caller_id = caller_id.upper()
        if caller_id not in CALLER_ID_CHOICES:
            raise _Invalid(
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


@dataclass
class Deduplicator:
    """The keys seen so far and each location's agreed values: the only state kept per file."""

    emails: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)
    # Per location: a dict of sets costs less than a set of (location, extension) tuples.
    extensions: dict[str, set[str]] = field(default_factory=dict)
    locations: dict[str, dict[str, str]] = field(default_factory=dict)

    def check(self, user: UserRow, location: LocationSpec) -> Rejection | None:
        if user.email in self.emails:
            return Rejection(
                ReasonCode.DUPLICATE_IN_FILE, f"email {user.email} appears earlier", "email"
            )
        if user.phone_number is not None and user.phone_number in self.phones:
            return Rejection(
                ReasonCode.DUPLICATE_IN_FILE,
                f"phone_number {user.phone_number} appears earlier",
                "phone_number",
            )
        taken = self.extensions.get(user.location_name)
        if user.extension is not None and taken is not None and user.extension in taken:
            return Rejection(
                ReasonCode.DUPLICATE_IN_FILE,
                f"extension {user.extension} appears earlier in {user.location_name}",
                "extension",
            )
        known = self.locations.get(location.name, {})
        given = _given_values(location)
        for name, value in given:
            if name in known and known[name] != value:
                return Rejection(
                    ReasonCode.LOCATION_CONFLICT,
                    f"location {location.name!r}: {name} {value!r} disagrees with "
                    f"{known[name]!r} given earlier",
                    f"location_{name}",
                )
        self.emails.add(user.email)
        if user.phone_number is not None:
            self.phones.add(user.phone_number)
        if user.extension is not None:
            self.extensions.setdefault(user.location_name, set()).add(user.extension)
        self.locations.setdefault(location.name, {}).update(given)
        return None

    def location_specs(self) -> list[LocationSpec]:
        """Each location the accepted rows name, with the values they agreed on."""
        return [
            LocationSpec(name=name, **values) for name, values in sorted(self.locations.items())
        ]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror}") from None
    return digest.hexdigest()


def open_csv(path: Path) -> IO[str]:
    """Open the file for csv; a file that is not UTF-8 at its start is refused whole."""
    try:
        with path.open("rb") as probe:
            head = probe.read(4096)
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror}") from None
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head[:2]:
        raise InputFileError(f"{path} is not UTF-8 (it looks like UTF-16); save it as UTF-8 CSV")
    first_line = head.split(b"\n", 1)[0]
    try:
        first_line.decode("utf-8-sig")
    except UnicodeDecodeError:
        if len(first_line) < len(head) or len(head) < 4096:
            raise InputFileError(f"{path} is not UTF-8: its header cannot be decoded") from None
    # Undecodable bytes further on are kept as surrogates and reject only their own row.
    return path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="")


def _displayable(text: str) -> str:
    return SURROGATE_RE.sub("\ufffd", text)


def read_header(reader: Iterator[list[str]], path: Path) -> list[str]:
    for record in reader:
        if record and any(cell.strip() for cell in record):
            if any(SURROGATE_RE.search(cell) or "\x00" in cell for cell in record):
                raise InputFileError(f"{path} is not UTF-8: its header cannot be decoded")
            return [restore(cell).strip() for cell in record]
    raise InputFileError(f"{path} has no header row")


def read_rows(path: Path, *, max_rows: int) -> tuple[list[str], Iterator[ParsedRow], Deduplicator]:
    """Headers, a stream of parsed rows, and the de-duplication state the stream fills in.

    Raises InputFileError (before yielding anything) for a file without usable headers, and
    (while streaming) once the file proves to hold more than `max_rows` data rows.
    """
    csv.field_size_limit(CSV_FIELD_LIMIT)
    handle = open_csv(path)
    reader = csv.reader(handle, strict=False)
    try:
        try:
            headers = read_header(reader, path)
        except csv.Error as exc:
            raise _unreadable(path, "the header", reader.line_num, exc) from None
        mapping = map_headers(headers)
    except BaseException:
        handle.close()
        raise
    dedupe = Deduplicator()

    def stream() -> Iterator[ParsedRow]:
        with handle:
            row_id = 0
            try:
                for record in reader:
                    if not record or (len(record) == 1 and not record[0].strip()):
                        continue  # a blank line is not a row
                    row_id += 1
                    if row_id > max_rows:
                        raise InputFileError(
                            f"{path} has more than MAX_ROWS={max_rows} data rows; nothing ingested"
                        )
                    yield parse_record(row_id, record, headers, mapping, dedupe)
            except csv.Error as exc:
                # The reader cannot resume safely after this (a quoted cell may span the lines
                # that follow): the whole file is refused, and the run's one transaction with it.
                raise _unreadable(path, f"data row {row_id + 1}", reader.line_num, exc) from None

    rows = stream()
    # A stream dropped before its first row never enters its `with`: close the file anyway.
    weakref.finalize(rows, handle.close)
    return headers, rows, dedupe


def _unreadable(path: Path, where: str, line: int, error: csv.Error) -> InputFileError:
    if "field larger than field limit" in str(error):
        detail = f"a cell is longer than {CSV_FIELD_LIMIT:,} characters"
    else:
        detail = " ".join(str(error).split())
    return InputFileError(
        f"{path} is not a readable CSV: {where} (line {line}): {detail}; nothing ingested"
    )


def parse_record(
    row_id: int,
    record: list[str],
    headers: list[str],
    mapping: dict[str, int],
    dedupe: Deduplicator,
) -> ParsedRow:
    joined = "".join(record)
    if "'" in joined:
        # A file ledger wrote (retry_rows.csv) reads back as it was: without the `'` export
        # put before cells a spreadsheet would execute. Most rows hold no `'` at all.
        record = [restore(cell) for cell in record]
        joined = "".join(record)
    clean = "\x00" not in joined and SURROGATE_RE.search(joined) is None
    if clean and len(record) == len(headers):
        raw = dict(zip(headers, record, strict=True))  # the common case, in one step
    else:
        raw = _raw_row(record, headers)
    if len(record) != len(headers):
        return ParsedRow(
            row_id,
            raw,
            rejection=Rejection(
                ReasonCode.MALFORMED_ROW,
                f"{len(record)} fields where the header has {len(headers)}",
            ),
        )
    for index, cell in enumerate(() if clean else record):
        if "\x00" in cell or SURROGATE_RE.search(cell):
            what = "a NUL byte" if "\x00" in cell else "bytes that are not UTF-8"
            return ParsedRow(
                row_id,
                raw,
                rejection=Rejection(
                    ReasonCode.MALFORMED_ROW, f"{headers[index]} contains {what}", headers[index]
                ),
            )
    cells: dict[str, str | None] = {column: record[index] for column, index in mapping.items()}
    try:
        user, location = validate_row(cells)
    except _Invalid as invalid:
        return ParsedRow(row_id, raw, rejection=invalid.rejection)
    rejection = dedupe.check(user, location)
    if rejection is not None:
        return ParsedRow(row_id, raw, rejection=rejection)
    return ParsedRow(row_id, raw, user=user, location=location)


def _raw_row(record: list[str], headers: list[str]) -> dict[str, str]:
    """The row as read, keyed by the file's headers; extra cells get positional names."""
    raw: dict[str, str] = {}
    for index, cell in enumerate(record):
        key = headers[index] if index < len(headers) else f"_extra_{index + 1}"
        raw[key] = _displayable(cell.replace("\x00", "\ufffd"))
    return raw
