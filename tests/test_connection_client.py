"""The client against fake transports: retries, error mapping, paging, throttling, logs.

No test sleeps for real: the client gets a fake clock whose sleep only moves time forward.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.connection_client import WebexClient
from ledger.error_handling import (
    ConfigError,
    HTTPStatusError,
    ReasonCode,
    RequestTimeoutError,
    RetryableStatusError,
    RetryExhaustedError,
    TransportError,
    UnexpectedResponseError,
)
from ledger.logs import (
    LOGGER_NAME,
    RepeatSuppressor,
    bind_log_context,
    configure_logging,
    redact,
    shutdown_logging,
)
from ledger.pacing import AdaptiveRateLimiter, Throttle
from ledger.responses import parse_retry_after, require_fields, require_list, require_str
from tests.support.client import BASE, TOKEN, make_settings, mock_client
from tests.support.clock import WALL_START, FakeTime

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A transport that answers from a script and remembers every request."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            if isinstance(answer, httpx.RequestError):
                answer.request = request
            raise answer
        if callable(answer):
            return answer(request)
        return answer


def make_client(
    fake_time: FakeTime, recorder: Recorder, *, adaptive: bool = True, **overrides: Any
) -> WebexClient:
    return mock_client(
        make_settings(**overrides), fake_time, recorder, adaptive_rate_limit=adaptive
    )


def ok(body: Any = None, status: int = 200, **headers: str) -> httpx.Response:
    base = {"Trackingid": "ROUTER_OK"}
    base.update(headers)
    if body is None:
        return httpx.Response(status, headers=base)
    return httpx.Response(status, json=body, headers=base)


def error(status: int, body: Any = None, **headers: str) -> httpx.Response:
    base = {"Trackingid": f"ROUTER_{status}"}
    base.update({name.replace("_", "-"): value for name, value in headers.items()})
    if body is None:
        return httpx.Response(status, headers=base)
    return httpx.Response(status, json=body, headers=base)


# --- basics -----------------------------------------------------------------------------------


def test_sends_token_base_url_and_timeouts(fake_time: FakeTime) -> None:
    recorder = Recorder(ok({"id": "p1"}))
    with make_client(fake_time, recorder) as client:
        response = client.request("GET", "/people/p1", params={"callingData": True, "x": None})
    sent = recorder.requests[0]
    assert str(sent.url) == f"{BASE}/people/p1?callingData=true"
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.extensions["timeout"] == {"connect": 7.0, "read": 7.0, "write": 7.0, "pool": 7.0}
    assert response.body == {"id": "p1"}
    assert response.tracking_id == "ROUTER_OK"
    assert response.require_str("id") == "p1"
    assert response.path == "/v1/people/p1"


def test_missing_token_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="WEBEX_ACCESS_TOKEN"):
        WebexClient(make_settings(WEBEX_ACCESS_TOKEN=None))


def test_204_and_empty_bodies_are_none(fake_time: FakeTime) -> None:
    recorder = Recorder(ok(status=204))
    with make_client(fake_time, recorder) as client:
        response = client.request("PUT", "/locations/L1", json={"name": "x"}, ok=(204,))
    assert response.body is None
    assert response.status_code == 204


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (httpx.Response(200, content=b"<html>oops</html>"), "not JSON"),
        (httpx.Response(200, json=[1, 2]), "not an object"),
    ],
)
def test_success_without_a_json_object_is_unexpected(
    fake_time: FakeTime, answer: httpx.Response, problem: str
) -> None:
    with (
        make_client(fake_time, Recorder(answer)) as client,
        pytest.raises(UnexpectedResponseError, match=problem) as caught,
    ):
        client.request("GET", "/people")
    assert caught.value.http_status == 200
    assert caught.value.reason_code == ReasonCode.UNEXPECTED_RESPONSE


def test_status_outside_ok_is_unexpected(fake_time: FakeTime) -> None:
    recorder = Recorder(ok({"id": "x"}, status=200))
    with make_client(fake_time, recorder) as client, pytest.raises(UnexpectedResponseError):
        client.request("POST", "/locations", json={}, ok=(201,))
    assert len(recorder.requests) == 1


def test_require_helpers() -> None:
    body = {"id": "a", "items": [{"id": "b"}], "empty": "", "number": 3}
    require_fields(body, "id", "items")
    assert require_str(body, "id") == "a"
    assert require_list(body, "items") == [{"id": "b"}]
    for call in (
        lambda: require_fields(body, "missing"),
        lambda: require_fields(None, "id"),
        lambda: require_str(body, "empty"),
        lambda: require_str(body, "number"),
        lambda: require_list(body, "id"),
        lambda: require_list({"items": [1]}, "items"),
    ):
        with pytest.raises(UnexpectedResponseError):
            call()


# --- retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "expected_wait"),
    [
        ("12", 12.0),
        ("2.5", 2.5),
        ("rand(30),add(30)", 5.0),  # garbage: RETRY_AFTER_DEFAULT_S
        ("-4", 5.0),
        ("3600", 60.0),  # capped at RETRY_AFTER_CAP_S
    ],
)
def test_429_honours_retry_after(
    fake_time: FakeTime, retry_after: str, expected_wait: float
) -> None:
    recorder = Recorder(error(429, Retry_After=retry_after), ok({"items": []}))
    with make_client(fake_time, recorder) as client:
        client.request("GET", "/people")
        stats = client.stats()
    assert len(recorder.requests) == 2
    assert fake_time.sleeps == [expected_wait]
    assert stats.status_429 == 1
    assert stats.retries == 1
    assert stats.retry_wait_s == pytest.approx(expected_wait)


def test_429_retry_after_http_date(fake_time: FakeTime) -> None:
    when = datetime.fromtimestamp(WALL_START + 20, tz=UTC)
    recorder = Recorder(error(429, Retry_After=format_datetime(when, usegmt=True)), ok({}))
    with make_client(fake_time, recorder) as client:
        client.request("GET", "/people")
    assert fake_time.sleeps == [pytest.approx(20.0)]


def test_parse_retry_after() -> None:
    assert parse_retry_after(None, now=0, default=5) is None
    assert parse_retry_after(" 7 ", now=0, default=5) == 7
    assert parse_retry_after("nan", now=0, default=5) == 5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=WALL_START, default=5) == 0


def test_5xx_is_retried_with_backoff_then_succeeds(fake_time: FakeTime) -> None:
    recorder = Recorder(error(503), error(502), ok({"id": "x"}))
    with make_client(fake_time, recorder) as client:
        assert client.request("GET", "/people/x").body == {"id": "x"}
        stats = client.stats()
    first, second = fake_time.sleeps
    assert 0.25 <= first <= 0.5  # RETRY_BACKOFF_S with equal jitter
    assert 0.5 <= second <= 1.0
    assert stats.responses_5xx == 2
    assert stats.responses_2xx == 1


def test_backoff_is_capped(fake_time: FakeTime) -> None:
    with make_client(fake_time, Recorder(ok())) as client:
        waits = [client.compute_backoff(attempt) for attempt in range(1, 40)]
        assert max(waits) <= 60.0
        assert client.compute_backoff(3, retry_after=1000) == 60.0
        assert client.backoff_wait(1) == fake_time.sleeps[-1]


def test_exhaustion_raises_retry_exhausted(fake_time: FakeTime, tmp_path: Path) -> None:
    log_file = tmp_path / "ledger.log"
    configure_logging(log_file, console_level=None)
    recorder = Recorder(error(503, {"message": "busy"}))
    try:
        with (
            make_client(fake_time, recorder) as client,
            pytest.raises(RetryExhaustedError) as caught,
        ):
            client.request("GET", "/people")
    finally:
        shutdown_logging()
    exhausted = caught.value
    assert exhausted.attempts == 4  # MAX_RETRIES + 1
    assert len(recorder.requests) == 4
    assert isinstance(exhausted.last, RetryableStatusError)
    assert exhausted.__cause__ is exhausted.last
    assert exhausted.http_status == 503
    assert exhausted.tracking_id == "ROUTER_503"
    assert exhausted.reason_code == ReasonCode.RETRY_EXHAUSTED
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    retries = [e for e in events if e["event"] == "request_retry"]
    assert [e["attempt"] for e in retries] == [1, 2, 3]
    assert all(e["http_status"] == 503 and e["tracking_id"] == "ROUTER_503" for e in retries)
    assert all(e["wait_s"] > 0 for e in retries)
    (gave_up,) = [e for e in events if e["event"] == "retry_exhausted"]
    assert gave_up["attempt"] == 4
    assert gave_up["method"] == "GET"
    assert gave_up["path"] == "/v1/people"


def test_max_retries_zero_sends_once(fake_time: FakeTime) -> None:
    recorder = Recorder(error(500))
    with (
        make_client(fake_time, recorder, MAX_RETRIES=0) as client,
        pytest.raises(RetryExhaustedError) as caught,
    ):
        client.request("GET", "/people")
    assert caught.value.attempts == 1
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (400, ReasonCode.BAD_REQUEST),
        (401, ReasonCode.AUTH_INVALID),
        (403, ReasonCode.FORBIDDEN),
        (404, ReasonCode.NOT_FOUND),
        (409, ReasonCode.CONFLICT),
    ],
)
def test_4xx_is_not_retried(fake_time: FakeTime, status: int, reason: ReasonCode) -> None:
    recorder = Recorder(error(status, {"message": "no"}))
    with make_client(fake_time, recorder) as client, pytest.raises(HTTPStatusError) as caught:
        client.request("GET", "/people/x")
    assert len(recorder.requests) == 1
    assert fake_time.sleeps == []
    assert caught.value.http_status == status
    assert caught.value.reason_code == reason


def test_get_timeout_is_retried(fake_time: FakeTime) -> None:
    recorder = Recorder(httpx.ReadTimeout("timed out"), ok({"items": []}))
    with make_client(fake_time, recorder) as client:
        client.request("GET", "/people")
        assert client.stats().transport_errors == 1
    assert len(recorder.requests) == 2


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("timed out"),
        httpx.WriteTimeout("timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("connection reset"),
    ],
)
def test_post_with_unknown_outcome_is_raised_at_once(
    fake_time: FakeTime, failure: httpx.RequestError
) -> None:
    recorder = Recorder(failure, ok({"id": "never"}))
    with make_client(fake_time, recorder) as client, pytest.raises(TransportError) as caught:
        client.request("POST", "/people", json={"emails": ["a@example.com"]})
    assert len(recorder.requests) == 1  # exactly one create was sent
    assert caught.value.maybe_applied is True
    assert caught.value.__cause__ is failure
    assert caught.value.method == "POST"
    assert caught.value.path == "/v1/people"
    if isinstance(failure, httpx.TimeoutException):
        assert isinstance(caught.value, RequestTimeoutError)


def test_post_5xx_is_raised_at_once(fake_time: FakeTime) -> None:
    recorder = Recorder(error(502), ok({"id": "never"}))
    with make_client(fake_time, recorder) as client, pytest.raises(RetryableStatusError) as caught:
        client.request("POST", "/people", json={})
    assert len(recorder.requests) == 1
    assert caught.value.maybe_applied is True


def test_post_may_opt_in_to_resending(fake_time: FakeTime) -> None:
    recorder = Recorder(error(502), ok({"id": "x"}))
    with make_client(fake_time, recorder) as client:
        client.request("POST", "/search", json={}, safe_to_retry=True)
    assert len(recorder.requests) == 2


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("connection refused"),
        httpx.ConnectTimeout("timed out"),
        httpx.PoolTimeout("no connection"),
        error(429, Retry_After="1"),
        error(423, Retry_After="1"),
    ],
)
def test_post_not_applied_is_retried(
    fake_time: FakeTime, failure: httpx.Response | httpx.RequestError
) -> None:
    recorder = Recorder(failure, ok({"id": "p1"}))
    with make_client(fake_time, recorder) as client:
        response = client.request("POST", "/people", json={})
    assert response.require_str("id") == "p1"
    assert len(recorder.requests) == 2


def test_post_not_applied_then_unknown_stops(fake_time: FakeTime) -> None:
    recorder = Recorder(httpx.ConnectError("refused"), httpx.ReadTimeout("timed out"), ok({}))
    with make_client(fake_time, recorder) as client, pytest.raises(RequestTimeoutError) as caught:
        client.request("POST", "/people", json={})
    assert len(recorder.requests) == 2
    assert caught.value.maybe_applied


def test_connect_error_is_not_maybe_applied(fake_time: FakeTime) -> None:
    recorder = Recorder(httpx.ConnectError("refused"))
    with (
        make_client(fake_time, recorder, MAX_RETRIES=1) as client,
        pytest.raises(RetryExhaustedError) as caught,
    ):
        client.request("POST", "/people", json={})
    assert isinstance(caught.value.last, TransportError)
    assert caught.value.last.maybe_applied is False


# --- error bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "message", "code", "tracking"),
    [
        (
            {"message": "Person not found", "errors": [{"description": "x"}], "trackingId": "T1"},
            {},
            "Person not found",
            None,
            "ROUTER_404",
        ),
        (
            {
                "errorCode": 5620,
                "message": "[Error 5620] Group not found with this external ID",
                "errors": [{"errorCode": 5620, "description": "Group not found"}],
                "trackingId": "T2",
            },
            {"Cisco-Spark-Error-Codes": "5620"},
            "[Error 5620] Group not found with this external ID",
            5620,
            "ROUTER_404",
        ),
        (
            {"errors": [{"errorCode": 4202, "description": "The extension is not available"}]},
            {},
            "The extension is not available",
            4202,
            "ROUTER_404",
        ),
        (
            {
                "error": {
                    "key": "404",
                    "message": [{"description": "Location not found", "code": "25008"}],
                },
                "trackingId": "T3",
            },
            {},
            "Location not found",
            25008,
            "ROUTER_404",
        ),
        ({"errorMessage": "No static resource hydra/v1/x"}, {}, "No static resource", None, None),
        (None, {"Cisco-Spark-Error-Codes": "4202,1"}, "Not Found", 4202, None),
        ({"trackingId": "BODY_ONLY"}, {}, "Not Found", None, "BODY_ONLY"),
    ],
)
def test_error_body_shapes(
    fake_time: FakeTime,
    body: Any,
    headers: dict[str, str],
    message: str,
    code: int | None,
    tracking: str | None,
) -> None:
    all_headers = dict(headers)
    if tracking == "ROUTER_404":
        all_headers["Trackingid"] = tracking
    answer = (
        httpx.Response(404, headers=all_headers)
        if body is None
        else httpx.Response(404, json=body, headers=all_headers)
    )
    with (
        make_client(fake_time, Recorder(answer)) as client,
        pytest.raises(HTTPStatusError) as caught,
    ):
        client.request("GET", "/people/x", params={"email": "a@example.com"})
    raised = caught.value
    assert message in raised.message
    assert raised.error_code == code
    assert raised.tracking_id == tracking
    assert raised.http_status == 404
    assert raised.method == "GET"
    assert raised.path == "/v1/people/x"  # no query string


def test_extension_taken_maps_to_its_reason(fake_time: FakeTime) -> None:
    body = {"errorCode": 4202, "message": "The extension is not available"}
    with (
        make_client(fake_time, Recorder(error(400, body))) as client,
        pytest.raises(HTTPStatusError) as caught,
    ):
        client.request("POST", "/people", json={})
    assert caught.value.reason_code == ReasonCode.EXTENSION_IN_USE


def test_token_never_leaks(fake_time: FakeTime, tmp_path: Path) -> None:
    log_file = tmp_path / "ledger.log"
    configure_logging(log_file, console_level=None)
    raised: list[BaseException] = []
    answers: list[httpx.Response | Exception] = [
        error(401, {"message": "The request requires a valid access token"}),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("timed out"),
        error(503),
        error(429, Retry_After="garbage"),
        httpx.Response(200, content=b"not json"),
    ]
    try:
        for answer in answers:
            client = make_client(fake_time, Recorder(answer), MAX_RETRIES=1)
            try:
                client.request("POST", "/people", json={})
            except Exception as exc:
                raised.append(exc)
            assert TOKEN not in repr(client)
            assert TOKEN not in repr(client.stats())
            client.close()
        logging.getLogger("ledger.test").warning(
            "header was Authorization: Bearer %s", TOKEN, extra={"event": "leak_probe"}
        )
        logging.getLogger("ledger.test").warning("raw %s", TOKEN, extra={"event": "leak_probe"})
    finally:
        shutdown_logging()
    assert len(raised) == len(answers)
    for failure in raised:
        chain: BaseException | None = failure
        while chain is not None:
            assert TOKEN not in str(chain)
            assert TOKEN not in repr(chain)
            assert TOKEN not in repr(vars(chain))
            chain = chain.__cause__
    text = log_file.read_text()
    assert "leak_probe" in text
    assert TOKEN not in text
    assert "Bearer [REDACTED]" in text


def test_foreign_absolute_url_is_refused(fake_time: FakeTime) -> None:
    recorder = Recorder(ok({"items": []}))
    with make_client(fake_time, recorder) as client, pytest.raises(UnexpectedResponseError):
        client.request("GET", "https://elsewhere.test/v1/people")
    assert recorder.requests == []


# --- pagination -------------------------------------------------------------------------------


def linked(items: list[dict[str, Any]], next_url: str | None) -> httpx.Response:
    headers = {"Trackingid": "T"}
    if next_url is not None:
        headers["Link"] = f'<{next_url}>; rel="next"'
    return httpx.Response(200, json={"items": items}, headers=headers)


def test_paginate_follows_link_exactly(fake_time: FakeTime) -> None:
    second = f"{BASE}/people?cursor=Y3Vyc29y%3D%3D&max=2&callingData=true"
    recorder = Recorder(
        linked([{"id": "1"}, {"id": "2"}], second),
        linked([{"id": "3"}], None),
    )
    with make_client(fake_time, recorder) as client:
        ids = [p["id"] for p in client.paginate("/people", params={"max": 2}, items_key="items")]
    assert ids == ["1", "2", "3"]
    assert str(recorder.requests[0].url) == f"{BASE}/people?max=2"
    assert str(recorder.requests[1].url) == second


def test_paginate_stops_on_empty_page(fake_time: FakeTime) -> None:
    recorder = Recorder(linked([], f"{BASE}/people?page=2"))
    with make_client(fake_time, recorder) as client:
        assert list(client.paginate("/people", items_key="items")) == []
    assert len(recorder.requests) == 1


def test_paginate_is_bounded(fake_time: FakeTime) -> None:
    def endless(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "0")) + 1
        return linked([{"id": str(page)}], f"{BASE}/people?page={page}")

    recorder = Recorder(endless)
    with (
        make_client(fake_time, recorder) as client,
        pytest.raises(UnexpectedResponseError, match="more than 3 pages"),
    ):
        list(client.paginate("/people", items_key="items", max_pages=3))
    assert len(recorder.requests) == 3


def test_paginate_refuses_a_loop(fake_time: FakeTime) -> None:
    recorder = Recorder(linked([{"id": "1"}], f"{BASE}/people?page=1"))
    with make_client(fake_time, recorder) as client, pytest.raises(UnexpectedResponseError):
        list(client.paginate("/people", items_key="items"))
    assert len(recorder.requests) == 2


def test_paginate_offset(fake_time: FakeTime) -> None:
    def numbers(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params["start"])
        size = int(request.url.params["max"])
        rows = [{"phoneNumber": f"+1555000{n:04d}"} for n in range(start, min(start + size, 5))]
        return httpx.Response(200, json={"phoneNumbers": rows})

    recorder = Recorder(numbers)
    with make_client(fake_time, recorder) as client:
        found = list(
            client.paginate_offset(
                "/telephony/config/numbers",
                params={"locationId": "L1"},
                items_key="phoneNumbers",
                page_size=2,
            )
        )
    assert len(found) == 5
    assert [r.url.params["start"] for r in recorder.requests] == ["0", "2", "4"]
    assert all(r.url.params["locationId"] == "L1" for r in recorder.requests)


# --- throttling -------------------------------------------------------------------------------


def test_429_pauses_every_request(fake_time: FakeTime) -> None:
    recorder = Recorder(error(429, Retry_After="10"), ok({}))
    with make_client(fake_time, recorder, adaptive=False, MAX_RETRIES=0) as client:
        with pytest.raises(RetryExhaustedError):
            client.request("GET", "/people")  # as if on one thread
        assert fake_time.sleeps == []
        client.request("GET", "/locations")  # another thread's next request waits
        assert fake_time.sleeps == [10.0]
        assert client.stats().throttle_wait_s == 10.0
        client.request("GET", "/locations")  # the pause is over
        assert fake_time.sleeps == [10.0]


def test_shared_pause_is_not_doubled_for_the_retrying_thread(fake_time: FakeTime) -> None:
    recorder = Recorder(error(429, Retry_After="10"), ok({}))
    with make_client(fake_time, recorder, adaptive=False) as client:
        client.request("GET", "/people")
    assert fake_time.sleeps == [10.0]


def test_threads_wait_out_a_pause() -> None:
    clock = FakeTime()
    throttle = Throttle(clock=clock.monotonic, sleep=clock.sleep, limiter=None)
    throttle.pause_all(5.0)
    throttle.pause_all(2.0)  # never shortens
    workers = [threading.Thread(target=throttle.wait_turn) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert clock.now >= 5.0
    assert throttle.paused_for() == 0.0


def test_limiter_lowers_on_429_and_raises_after_successes() -> None:
    clock = FakeTime()
    limiter = AdaptiveRateLimiter(clock=clock.monotonic)
    assert limiter.rate is None
    for _ in range(100):  # 10 requests per second for 10 seconds, all accepted
        assert limiter.reserve() == 0.0
        clock.now += 0.1
        limiter.on_success()
    assert limiter.observed_rate() == pytest.approx(10.0, rel=0.05)
    lowered = limiter.on_throttled()
    assert lowered == pytest.approx(0.97 * 10.0, rel=0.05)  # just under the accepted rate
    assert limiter.on_throttled() is None  # a burst of 429s cuts once
    # Reserved slots are now 1/rate apart.
    waits = [limiter.reserve() for _ in range(3)]
    assert waits[1] - waits[0] == pytest.approx(1 / lowered)
    for _ in range(300):  # requests queue for their slots: the rate climbs back
        clock.now += limiter.reserve()
        limiter.on_success()
    raised = limiter.rate
    assert raised is not None and raised > lowered


def test_limiter_has_a_floor() -> None:
    clock = FakeTime()
    limiter = AdaptiveRateLimiter(clock=clock.monotonic, min_rate=1.0)
    assert limiter.on_throttled() == 1.0


def test_client_engages_limiter_on_429(fake_time: FakeTime) -> None:
    answers = [ok({}) for _ in range(20)] + [error(429, Retry_After="1"), ok({})]
    recorder = Recorder(*answers)
    with make_client(fake_time, recorder) as client:
        for _ in range(21):
            client.request("GET", "/people")
        stats = client.stats()
    assert stats.rate_limit_per_s is not None
    assert stats.status_429 == 1


def test_limiter_can_be_switched_off(fake_time: FakeTime) -> None:
    recorder = Recorder(error(429, Retry_After="1"), ok({}))
    with make_client(fake_time, recorder, adaptive=False) as client:
        client.request("GET", "/people")
        assert client.rate_limiter is None
        assert client.stats().rate_limit_per_s is None


def test_counters_are_thread_safe(fake_time: FakeTime) -> None:
    recorder = Recorder(ok({}))
    with make_client(fake_time, recorder) as client:

        def work() -> None:
            for _ in range(50):
                client.request("GET", "/people")

        workers = [threading.Thread(target=work) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        stats = client.stats()
    assert stats.requests_sent == 400
    assert stats.responses_2xx == 400
    assert stats.as_dict()["requests_sent"] == 400


# --- logs -------------------------------------------------------------------------------------


@pytest.fixture
def log_lines(tmp_path: Path) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    log_file = tmp_path / "logs" / "ledger.log"
    clock = FakeTime()
    configure_logging(log_file, run_id=7, console_level=None, repeat_limit=3, clock=clock.monotonic)

    def read() -> list[dict[str, Any]]:
        return [json.loads(line) for line in log_file.read_text().splitlines()]

    read.clock = clock  # type: ignore[attr-defined]
    yield read
    shutdown_logging()


def test_log_lines_are_json_with_fields(log_lines: Callable[[], list[dict[str, Any]]]) -> None:
    log = logging.getLogger(f"{LOGGER_NAME}.executor")
    with bind_log_context(batch_id=2, row_id=41, step="user"):
        log.warning("retrying", extra={"event": "request_retry", "http_status": 503, "custom": "x"})
    log.info("plain")
    first, second = log_lines()
    assert list(first)[:4] == ["ts", "level", "event", "message"]
    assert first["ts"].endswith("Z")
    assert datetime.fromisoformat(first["ts"]).tzinfo is not None
    assert first["level"] == "warning"
    assert first["event"] == "request_retry"
    assert (first["run"], first["batch_id"], first["row_id"], first["step"]) == (7, 2, 41, "user")
    assert first["http_status"] == 503
    assert first["custom"] == "x"
    assert second["event"] == "log"
    assert "row_id" not in second  # the context ended with the block


def test_exceptions_are_logged_with_traceback(
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    try:
        raise ValueError(f"Bearer {TOKEN}")
    except ValueError:
        logging.getLogger(LOGGER_NAME).exception("boom", extra={"event": "internal_error"})
    (line,) = log_lines()
    assert "ValueError" in line["exception"]
    assert TOKEN not in line["exception"]


def test_repeats_are_summarised(log_lines: Callable[[], list[dict[str, Any]]]) -> None:
    clock: FakeTime = log_lines.clock  # type: ignore[attr-defined]
    log = logging.getLogger(LOGGER_NAME)
    for _ in range(1000):
        log.error("token expired", extra={"event": "step_failed", "http_status": 401})
    log.error("another", extra={"event": "step_failed", "http_status": 401})
    clock.now += 61
    log.error("token expired", extra={"event": "step_failed", "http_status": 401})
    lines = log_lines()
    messages = [line["message"] for line in lines]
    assert messages[:4] == ["token expired"] * 3 + ["another"]
    summary = lines[4]
    assert summary["repeated"] == 997
    assert "repeated 997 times" in summary["message"]
    assert summary["event"] == "step_failed"
    assert messages[5] == "token expired"
    assert len(lines) == 6


def test_repeat_summary_written_at_shutdown(tmp_path: Path) -> None:
    log_file = tmp_path / "ledger.log"
    configure_logging(log_file, console_level=None, repeat_limit=2)
    for _ in range(5):
        logging.getLogger(LOGGER_NAME).warning("same", extra={"event": "x"})
    shutdown_logging()
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert len(lines) == 3
    assert lines[-1]["repeated"] == 3


def test_repeat_suppressor_bounds_its_keys() -> None:
    suppressor = RepeatSuppressor(limit=1, window_s=60, clock=lambda: 0.0, max_keys=2)
    for n in range(10):
        record = logging.makeLogRecord({"msg": f"m{n}", "event": "e", "levelno": logging.ERROR})
        assert suppressor.admit(record)[-1] is record
    # The same ten messages again, three times each: the first is written and opens a window
    # (the message's old one was let go), the other two are past the limit and only counted.
    written: list[logging.LogRecord] = []
    for n in range(10):
        for _ in range(3):
            record = logging.makeLogRecord({"msg": f"m{n}", "event": "e", "levelno": logging.ERROR})
            written += suppressor.admit(record)
    # Only two windows are ever open: a new message closes the oldest, whose summary comes out
    # then (the clock never moves, so no window closes for its age)...
    assert [line.getMessage() for line in written if "repeated" in line.__dict__] == [
        f"m{n} … repeated 2 times in 0 s" for n in range(8)
    ]
    # ...and only the two newest are still open at the end.
    assert [line.getMessage() for line in suppressor.drain()] == [
        "m8 … repeated 2 times in 0 s",
        "m9 … repeated 2 times in 0 s",
    ]


def test_redact() -> None:
    assert redact("Authorization: Bearer abc.DEF-123") == "Authorization: Bearer [REDACTED]"
    assert redact("bearer xyz") == "bearer [REDACTED]"
    assert redact("nothing here") == "nothing here"
