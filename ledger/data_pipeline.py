"""CSV → normalized, validated, de-duplicated rows or rejections (SPEC section 3).

Pure and streaming: `read_rows` yields one `ParsedRow` at a time and keeps only what
de-duplication needs (the keys seen so far and each location's values), never the file.
What makes one row valid is `row_rules`. A cell that export guarded with a leading `'` (see
`cells`) is read without it, so that a file ledger wrote (retry_rows.csv) ingests as the rows
it came from.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ledger.cells import restore
from ledger.error_handling import InputFileError, ReasonCode
from ledger.row_rules import (
    COLUMNS,
    CSV_FIELD_LIMIT,
    HEADER_ALIASES,
    SURROGATE_RE,
    InvalidRow,
    LocationSpec,
    Rejection,
    UserRow,
    given_values,
    validate_row,
)


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
        given = given_values(location)
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
    except InvalidRow as invalid:
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
