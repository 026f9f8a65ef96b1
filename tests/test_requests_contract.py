"""Every request `ledger work` sends, checked against the official Webex OpenAPI files.

The simulator must never be the only thing the client was checked against (SPEC section 7). A
realistic job runs against it in-process: new calling users with numbers, extensions and all
three settings; a location to create, one to update, one to enable for calling; a user to update;
a row whose settings fail, with safe compensation on, so the DELETE is sent too. Then every
request the client sent (method, path, query, body) goes through tests/support/openapi.py:
bodies against the official schemas for /people, /locations and /licenses, and method + path +
query keys + body keys against the derived catalog for /telephony and /people/{id}/features.
Any path or field the files do not know fails the test, naming it.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from ledger.simulator import FaultConfig
from tests.support.openapi import load_contract
from tests.support.people import person, phone
from tests.support.scripted import Scripted, SentRequest, error
from tests.support.work import Jobs

# Every operation the product uses; the job below must exercise each, or the check proves little.
EXPECTED_OPERATIONS = {
    ("GET", "/licenses"),
    ("GET", "/locations"),
    ("POST", "/locations"),
    ("PUT", "/locations/{locationId}"),
    ("GET", "/telephony/config/locations/{locationId}"),
    ("POST", "/telephony/config/locations"),
    ("GET", "/telephony/config/numbers"),
    ("POST", "/telephony/config/locations/{locationId}/numbers"),
    ("GET", "/people"),
    ("POST", "/people"),
    ("PUT", "/people/{personId}"),
    ("DELETE", "/people/{personId}"),
    ("GET", "/people/{personId}/features/voicemail"),
    ("PUT", "/people/{personId}/features/voicemail"),
    ("GET", "/people/{personId}/features/callWaiting"),
    ("PUT", "/people/{personId}/features/callWaiting"),
    ("GET", "/people/{personId}/features/callerId"),
    ("PUT", "/people/{personId}/features/callerId"),
}


def realistic_job(jobs: Jobs) -> tuple[Scripted, list[dict[str, str]]]:
    sim = jobs.simulator(FaultConfig(people_create_400_rate=0.2, seed=5))
    sim.add_location("Branch", calling=True, time_zone="America/Denver")  # to update
    annex = sim.add_location("Annex", calling=False)  # to enable for calling
    sim.add_numbers(annex, (phone(40),))
    sim.add_person("user20@example.com", first_name="Old")  # not yet a calling user
    scripted = Scripted(sim)
    # The first voicemail write fails: compensation deletes the user it created.
    scripted.on("PUT", r"/features/voicemail$", error(400, "Invalid greeting"))
    rows = [
        *(
            person(n, phone_number=phone(n), voicemail_enabled="false", voicemail_rings="6",
                   call_waiting_enabled="false", caller_id="LOCATION_NUMBER", title="Agent",
                   department="Sales")
            for n in range(1, 6)
        ),
        *(person(n, extension=str(2000 + n)) for n in range(6, 10)),
        person(10, phone_number=phone(10), extension="", caller_id="DIRECT_LINE"),
        # An existing user: its settings are read before they are written (the users this job
        # creates get call waiting and caller ID written without a read).
        person(20, location="Branch", location_city="Golden", location_time_zone="America/Denver",
               title="Manager", call_waiting_enabled="false", caller_id="LOCATION_NUMBER"),
        person(21, location="Branch", values=False, phone_number=phone(21)),
        person(40, location="Annex", values=False, phone_number=phone(40), voicemail_rings="4"),
    ]  # fmt: skip
    return scripted, rows


def test_every_request_of_a_realistic_job_is_one_webex_documents(jobs: Jobs) -> None:
    contract = load_contract()  # skips, saying why, when the OpenAPI files are absent
    scripted, rows = realistic_job(jobs)
    job = jobs.start(rows, sim=scripted.sim, ENABLE_SAFE_COMPENSATION=True)

    report = job.work(scripted.transport())

    assert (report.success, report.pending) == (len(rows) - 1, 1)
    refused = [row for row in job.rows().values() if row.status == "pending"]
    assert [row.reason_code for row in refused] == ["half_applied"]  # the voicemail write
    assert job.step_statuses(11)["user"] == "updated"  # user20, now a calling user
    assert job.step_statuses(11)["location"] == "updated"  # Branch's city and time zone
    assert job.step_statuses(13)["calling"] == "created"  # Annex
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for sent in scripted.log:
        try:
            contract.validate_request(sent.method, _url(sent), None, sent.body)
            seen.add((sent.method, contract.find(sent.method, _relative(sent)).template))
        except AssertionError as exc:
            problems.append(str(exc))
    problems += [problem for sent in scripted.log for problem in _voicemail_read_only(sent)]
    assert problems == [], "\n".join(dict.fromkeys(problems))
    assert seen >= EXPECTED_OPERATIONS, EXPECTED_OPERATIONS - seen
    assert len(scripted.log) > 50
    # The batch's listings and its bulk number add were among the requests checked.
    queries = [(sent.path, dict(sent.query)) for sent in scripted.log if sent.method == "GET"]
    assert ("/v1/people", {"callingData": "true", "max": "100"}) in queries
    assert any(
        path == "/v1/telephony/config/numbers" and set(query) == {"locationId", "start", "max"}
        for path, query in queries
    )
    added = [sent.body for sent in scripted.log if sent.path.endswith("/numbers")]
    assert max(len(body["phoneNumbers"]) for body in added if body) > 1


def test_the_contract_check_names_an_unknown_path_or_field() -> None:
    contract = load_contract()
    with pytest.raises(AssertionError, match="no such operation"):
        contract.validate_request("GET", "/v1/telephony/config/people/abc/voicemail", None, None)
    with pytest.raises(AssertionError, match="callWaitingEnabled"):
        contract.validate_request(
            "PUT", "/v1/people/abc/features/callWaiting", None, {"callWaitingEnabled": True}
        )
    with pytest.raises(AssertionError, match="nickname"):
        contract.validate_request(
            "POST", "/v1/people?callingData=true", None, {"emails": ["a@b.co"], "nickname": "x"}
        )


# The catalog lists a voicemail PUT's top-level keys only; inside its sections, these are what
# Webex lets an update set (the rest, such as greetingUploaded, only Webex reports).
VOICEMAIL_WRITABLE = {
    "sendAllCalls": {"enabled"},
    "sendBusyCalls": {"enabled", "greeting"},
    "sendUnansweredCalls": {"enabled", "greeting", "numberOfRings"},
    "notifications": {"enabled", "destination"},
    "transferToNumber": {"enabled", "destination"},
    "emailCopyOfMessage": {"enabled", "emailId"},
    "messageStorage": {"mwiEnabled", "storageType", "externalEmail"},
    "faxMessage": {"enabled", "phoneNumber", "extension"},
}


def _voicemail_read_only(sent: SentRequest) -> list[str]:
    if sent.method != "PUT" or not sent.path.endswith("/features/voicemail"):
        return []
    assert isinstance(sent.body, dict)
    return [
        f"PUT voicemail: {section}.{key} is not writable"
        for section, writable in VOICEMAIL_WRITABLE.items()
        for key in sent.body.get(section) or {}
        if key not in writable
    ]


def _url(sent: SentRequest) -> str:
    return sent.path + ("?" + urlencode(sent.query) if sent.query else "")


def _relative(sent: SentRequest) -> str:
    return sent.path.removeprefix("/v1")
