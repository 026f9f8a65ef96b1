"""The CSV pipeline on its own: header matching, normalization, validation, de-duplication,
and the stream `read_rows` gives (SPEC section 3). The same rules through the CLI are in
test_ingest_cli.py; here each rule is pinned down without a ledger."""

from __future__ import annotations

import gc
import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path

import pytest

from ledger.data_pipeline import (
    Deduplicator,
    ParsedRow,
    file_sha256,
    fold_header,
    map_headers,
    read_rows,
)
from ledger.error_handling import InputFileError, ReasonCode
from ledger.row_rules import (
    COLUMNS,
    EXTENSION_MAX,
    LOCATION_NAME_MAX,
    MAX_CELL_CHARS,
    NAME_MAX,
    InvalidRow,
    LocationSpec,
    UserRow,
    normalize_phone,
    validate_row,
)
from tests.support.csvfiles import write_csv

BASE = {
    "email": "ana.garcia@example.com",
    "first_name": "Ana",
    "last_name": "García",
    "location_name": "Madrid",
    "extension": "2001",
}


def cells(**overrides: str) -> dict[str, str | None]:
    return {**BASE, **overrides}


def rejection_of(**overrides: str) -> tuple[ReasonCode, str | None]:
    with pytest.raises(InvalidRow) as caught:
        validate_row(cells(**overrides))
    rejection = caught.value.rejection
    return rejection.reason, rejection.field


def parse_all(path: Path, *, max_rows: int = 1000) -> list[ParsedRow]:
    _, rows, _ = read_rows(path, max_rows=max_rows)
    return list(rows)


def outcomes(rows: Sequence[ParsedRow]) -> list[tuple[int, str | None, str | None]]:
    """(row_id, reason or None, field) per row: the shape most assertions want."""
    return [
        (
            row.row_id,
            None if row.rejection is None else str(row.rejection.reason),
            None if row.rejection is None else row.rejection.field,
        )
        for row in rows
    ]


# --- headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "column"),
    [
        ("email", "email"),
        ("EMAIL", "email"),
        (" E-Mail ", "email"),
        ("User ID/Email (Required)", "email"),
        ("First Name", "first_name"),
        ("first-name", "first_name"),
        ("Last Name", "last_name"),
        ("Display Name", "display_name"),
        ("Extension", "extension"),
        ("Phone Number", "phone_number"),
        ("PHONE_NUMBER", "phone_number"),
        ("Location", "location_name"),
        ("Location Name", "location_name"),
        ("Department", "department"),
        ("Title", "title"),
        ("Location Time Zone", "location_time_zone"),
        ("\ufeffemail", "email"),
    ],
)
def test_header_variants_map_to_their_column(header: str, column: str) -> None:
    others = [c for c in ("email", "first_name", "location_name", "extension") if c != column]
    assert map_headers([header, *others])[column] == 0


def test_fold_header_ignores_case_spaces_dashes_and_underscores() -> None:
    assert fold_header("Voice-Mail _Rings") == fold_header("voicemailrings") == "voicemailrings"


def test_unknown_headers_are_ignored_by_the_mapping() -> None:
    mapping = map_headers(["Notes", "email", "first_name", "location_name", "extension"])
    assert "Notes" not in mapping
    assert mapping == {"email": 1, "first_name": 2, "location_name": 3, "extension": 4}


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        (["first_name", "location_name", "extension"], "email"),
        (["email", "first_name", "extension"], "location_name"),
        (["email", "location_name", "extension"], "first_name, last_name or display_name"),
        (["email", "first_name", "location_name"], "extension or phone_number"),
    ],
)
def test_missing_required_header_is_refused(headers: list[str], named: str) -> None:
    with pytest.raises(InputFileError, match="required column") as caught:
        map_headers(headers)
    assert named in str(caught.value)


def test_two_headers_for_one_column_are_refused() -> None:
    with pytest.raises(InputFileError, match="both mean email"):
        map_headers(["email", "User ID/Email (Required)", "first_name", "location", "extension"])


def test_every_spec_column_has_a_header() -> None:
    assert set(map_headers(list(COLUMNS))) == set(COLUMNS)


# --- one row ---------------------------------------------------------------------------------


def test_a_valid_row_is_normalized_without_inventing_anything() -> None:
    user, location = validate_row(
        cells(
            email="  Ana.Garcia@Example.COM ",
            first_name=" Ana ",
            phone_number="+34 (91) 123-45.67",
            voicemail_enabled="Yes",
            call_waiting_enabled="0",
            voicemail_rings="4",
            caller_id="direct_line",
            department="",
            location_preferred_language="es-ES",
            location_country="es",
            location_time_zone="Europe/Madrid",
        )
    )
    assert user == UserRow(
        email="ana.garcia@example.com",
        first_name="Ana",
        last_name="García",
        display_name="Ana García",
        location_name="Madrid",
        extension="2001",
        phone_number="+34911234567",
        voicemail_enabled=True,
        call_waiting_enabled=False,
        voicemail_rings=4,
        caller_id="DIRECT_LINE",
    )
    assert user.names_settings()
    assert location == LocationSpec(
        name="Madrid", time_zone="Europe/Madrid", preferred_language="es_es", country="ES"
    )
    assert location.missing_to_create() == [
        "announcement_language",
        "address1",
        "city",
        "state",
        "postal_code",
    ]


def test_display_name_given_is_kept_and_names_alone_suffice() -> None:
    user, _ = validate_row(cells(first_name="", last_name="", display_name="Ana G."))
    assert (user.first_name, user.last_name, user.display_name) == (None, None, "Ana G.")
    user, _ = validate_row(cells(first_name="", last_name="Solo"))
    assert user.display_name == "Solo"
    assert not user.names_settings()


@pytest.mark.parametrize(
    ("overrides", "reason", "field"),
    [
        ({"email": ""}, "missing_field", "email"),
        ({"email": "   "}, "missing_field", "email"),
        ({"first_name": "", "last_name": " ", "display_name": ""}, "missing_field", "first_name"),
        ({"location_name": ""}, "missing_field", "location_name"),
        ({"extension": "", "phone_number": ""}, "missing_field", "extension"),
        ({"email": "ana.garcia"}, "invalid_email", "email"),
        ({"email": "ana@localhost"}, "invalid_email", "email"),
        ({"email": "ana garcia@example.com"}, "invalid_email", "email"),
        ({"email": "ana@exa mple.com"}, "invalid_email", "email"),
        ({"email": "a" * 65 + "@example.com"}, "invalid_email", "email"),
        ({"first_name": "A" * (NAME_MAX + 1)}, "invalid_name", "first_name"),
        ({"last_name": "O<Brien"}, "invalid_name", "last_name"),
        ({"last_name": 'say "hi"'}, "invalid_name", "last_name"),
        ({"display_name": "100% Ana"}, "invalid_name", "display_name"),
        ({"first_name": "a/b"}, "invalid_name", "first_name"),
        ({"phone_number": "4155550100"}, "invalid_phone", "phone_number"),
        ({"phone_number": "+1415555010x"}, "invalid_phone", "phone_number"),
        ({"phone_number": "+1234567"}, "invalid_phone", "phone_number"),
        ({"phone_number": "+1234567890123456"}, "invalid_phone", "phone_number"),
        ({"extension": "1"}, "invalid_extension", "extension"),
        ({"extension": "12a4"}, "invalid_extension", "extension"),
        ({"extension": "1" * (EXTENSION_MAX + 1)}, "invalid_extension", "extension"),
        ({"extension": "+2001"}, "invalid_extension", "extension"),
        ({"voicemail_rings": "1"}, "invalid_value", "voicemail_rings"),
        ({"voicemail_rings": "21"}, "invalid_value", "voicemail_rings"),
        ({"voicemail_rings": "four"}, "invalid_value", "voicemail_rings"),
        ({"voicemail_rings": "\u00b2"}, "invalid_value", "voicemail_rings"),
        ({"voicemail_rings": "\u0663"}, "invalid_value", "voicemail_rings"),
        ({"voicemail_enabled": "maybe"}, "invalid_value", "voicemail_enabled"),
        ({"call_waiting_enabled": "on"}, "invalid_value", "call_waiting_enabled"),
        ({"caller_id": "MOBILE"}, "invalid_value", "caller_id"),
        ({"location_time_zone": "Mars/Olympus"}, "invalid_value", "location_time_zone"),
        (
            {"location_preferred_language": "english"},
            "invalid_value",
            "location_preferred_language",
        ),
        (
            {"location_announcement_language": "e"},
            "invalid_value",
            "location_announcement_language",
        ),
        ({"location_country": "ESP"}, "invalid_value", "location_country"),
        ({"location_name": "L" * (LOCATION_NAME_MAX + 1)}, "invalid_value", "location_name"),
        ({"department": "x" * (MAX_CELL_CHARS + 1)}, "invalid_value", "department"),
    ],
)
def test_invalid_values_are_rejected_with_reason_and_field(
    overrides: dict[str, str], reason: str, field: str
) -> None:
    assert rejection_of(**overrides) == (reason, field)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+14155550100", "+14155550100"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("+44 20.7946.0000", "+442079460000"),
        ("+1\t415 555 0100", "+14155550100"),
        ("14155550100", None),
        ("+1-415-CALL-NOW", None),
        ("++14155550100", None),
    ],
)
def test_normalize_phone(raw: str, expected: str | None) -> None:
    assert normalize_phone(raw) == expected


# --- de-duplication --------------------------------------------------------------------------


def dedupe_reasons(rows: list[dict[str, str]]) -> list[tuple[str, str | None] | None]:
    dedupe = Deduplicator()
    results: list[tuple[str, str | None] | None] = []
    for row in rows:
        rejection = dedupe.check(*validate_row(cells(**row)))
        results.append(None if rejection is None else (str(rejection.reason), rejection.field))
    return results


def test_later_duplicates_are_rejected_and_do_not_poison_the_keys() -> None:
    assert dedupe_reasons(
        [
            {"email": "a@x.com", "extension": "10", "phone_number": "+14155550100"},
            {"email": "A@X.com", "extension": "11"},
            {"email": "b@x.com", "extension": "12", "phone_number": "+1 415 555 0100"},
            {"email": "c@x.com", "extension": "10"},
            {"email": "d@x.com", "extension": "10", "location_name": "Sevilla"},
            # The rejected rows above did not take their keys: these are fine.
            {"email": "e@x.com", "extension": "11"},
            {"email": "f@x.com", "extension": "12"},
        ]
    ) == [
        None,
        ("duplicate_in_file", "email"),
        ("duplicate_in_file", "phone_number"),
        ("duplicate_in_file", "extension"),
        None,
        None,
        None,
    ]


def test_location_values_must_agree_and_are_merged() -> None:
    dedupe = Deduplicator()
    rows = [
        {"email": "a@x.com", "extension": "10", "location_time_zone": "Europe/Madrid"},
        {"email": "b@x.com", "extension": "11", "location_city": "Madrid"},
        {"email": "c@x.com", "extension": "12", "location_time_zone": "Europe/Lisbon"},
        {"email": "d@x.com", "extension": "13", "location_time_zone": "Europe/Madrid"},
    ]
    results = [dedupe.check(*validate_row(cells(**row))) for row in rows]
    assert [r is None for r in results] == [True, True, False, True]
    conflict = results[2]
    assert conflict is not None
    assert (conflict.reason, conflict.field) == ("location_conflict", "location_time_zone")
    assert "Europe/Madrid" in conflict.message
    assert dedupe.location_specs() == [
        LocationSpec(name="Madrid", time_zone="Europe/Madrid", city="Madrid")
    ]
    assert "c@x.com" not in dedupe.emails


# --- the stream ------------------------------------------------------------------------------

HEADER = ["email", "first_name", "location_name", "extension", "notes"]


def test_rows_keep_their_file_position_and_raw_cells(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "u.csv",
        HEADER,
        [
            ["a@x.com", "Ana", "HQ", "10", "line one\nline two"],
            [],
            ["b@x.com", "Bo", "HQ", "11", ""],
            ["bad", "Cy", "HQ", "12", ""],
        ],
    )
    rows = parse_all(path)
    assert outcomes(rows) == [(1, None, None), (2, None, None), (3, "invalid_email", "email")]
    assert rows[0].raw == {
        "email": "a@x.com",
        "first_name": "Ana",
        "location_name": "HQ",
        "extension": "10",
        "notes": "line one\nline two",
    }
    assert rows[2].raw_minified() == (
        '{"email":"bad","first_name":"Cy","location_name":"HQ","extension":"12","notes":""}'
    )


def test_ragged_rows_are_malformed_and_keep_every_cell(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_text(
        "email,first_name,location_name,extension\n"
        "a@x.com,Ana,HQ\n"
        "b@x.com,Bo,HQ,11,surplus\n"
        "c@x.com,Cy,HQ,12\n",
        encoding="utf-8",
    )
    rows = parse_all(path)
    assert outcomes(rows) == [
        (1, "malformed_row", None),
        (2, "malformed_row", None),
        (3, None, None),
    ]
    assert rows[1].raw["_extra_5"] == "surplus"
    assert rows[0].rejection is not None
    assert "3 fields where the header has 4" in rows[0].rejection.message


def test_undecodable_bytes_and_nul_reject_only_their_row(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_bytes(
        b"email,first_name,location_name,extension\n"
        b"a@x.com,Jos\xe9,HQ,10\n"
        b"b@x.com,B\x00o,HQ,11\n"
        b"c@x.com,Cy,HQ,12\n"
    )
    rows = parse_all(path)
    assert outcomes(rows) == [
        (1, "malformed_row", "first_name"),
        (2, "malformed_row", "first_name"),
        (3, None, None),
    ]
    # The raw row stays printable JSON: the bad byte and the NUL are shown as U+FFFD.
    assert rows[0].raw["first_name"] == "Jos\ufffd"
    assert rows[1].raw["first_name"] == "B\ufffdo"
    rows[0].raw_minified().encode("utf-8")


def test_max_rows_is_enforced_while_streaming(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "u.csv", HEADER, [[f"u{i}@x.com", "U", "HQ", str(10 + i), ""] for i in range(4)]
    )
    assert len(parse_all(path, max_rows=4)) == 4
    _, rows, _ = read_rows(path, max_rows=3)
    assert [next(rows).row_id for _ in range(3)] == [1, 2, 3]
    with pytest.raises(InputFileError, match="MAX_ROWS=3"):
        next(rows)


def test_stream_is_lazy_and_closes_its_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "u.csv", HEADER, [["a@x.com", "Ana", "HQ", "10", ""]] * 3)
    _, rows, dedupe = read_rows(path, max_rows=10)
    assert dedupe.emails == set()  # nothing read until asked
    first = next(rows)
    assert first.rejection is None
    assert dedupe.emails == {"a@x.com"}
    rows.close()  # must not leak the handle (the suite runs with warnings as errors)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no header row"),
        (b"\n\n  \n", "no header row"),
        ("email,first_name,location_name,extension\n".encode("utf-16"), "UTF-16"),
        ("email,first_name,location_name,extension\n".encode("utf-16-le"), "UTF-16"),
        (b"em\xe1il,first_name,location_name,extension\na@x.com,A,HQ,10\n", "not UTF-8"),
        (b"email,first_name,location_name\na@x.com,A,HQ\n", "extension or phone_number"),
    ],
)
def test_unreadable_files_are_refused_before_any_row(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "u.csv"
    path.write_bytes(content)
    with pytest.raises(InputFileError, match=message):
        read_rows(path, max_rows=10)


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="cannot read"):
        read_rows(tmp_path / "absent.csv", max_rows=10)


def test_a_stream_dropped_unread_still_closes_its_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "u.csv", HEADER, [["a@x.com", "Ana", "HQ", "10", ""]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, rows, _ = read_rows(path, max_rows=10)
        del rows
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_file_sha256_of_an_unreadable_path_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="cannot read"):
        file_sha256(tmp_path)
    path = tmp_path / "u.csv"
    path.write_bytes(b"abc")
    assert file_sha256(path) == hashlib.sha256(b"abc").hexdigest()
