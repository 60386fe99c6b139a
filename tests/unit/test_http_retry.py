"""The one HTTP retry loop: which answers are retried, how long it waits, what it returns."""

import httpx
import pytest

from core.http_retry import backoff_delay, post_with_retry


def client_answering(*answers):
    """A client whose successive POSTs get ``answers`` (a status, (status, headers), or an exception)."""
    queue = list(answers)
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return httpx.Response(status, headers=headers)

    return httpx.Client(transport=httpx.MockTransport(handle), base_url="http://pulse.test"), seen


def test_retryable_answers_and_connection_errors_are_retried_with_doubling_pauses():
    client, seen = client_answering(503, httpx.ConnectError("refused"), 429, 202)
    pauses: list[float] = []
    response = post_with_retry(
        client, "/v1/events", attempts=5, first_delay=0.2, max_delay=5, sleep=pauses.append
    )
    assert response is not None and response.status_code == 202
    assert len(seen) == 4
    assert pauses == [0.2, 0.4, 0.8]


@pytest.mark.parametrize("final", [200, 400, 401, 404, 413])
def test_a_final_answer_is_returned_at_once(final):
    client, seen = client_answering(final)
    response = post_with_retry(client, "/x", attempts=5, first_delay=1, max_delay=1, sleep=pytest.fail)
    assert response is not None and response.status_code == final and len(seen) == 1


def test_after_the_last_attempt_the_last_answer_or_none_is_returned_without_a_final_pause():
    client, _ = client_answering(500, 500, 503)
    pauses: list[float] = []
    response = post_with_retry(client, "/x", attempts=3, first_delay=1, max_delay=10, sleep=pauses.append)
    assert response is not None and response.status_code == 503
    assert pauses == [1, 2]
    client, _ = client_answering(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"))
    assert post_with_retry(client, "/x", attempts=2, first_delay=1, max_delay=1, sleep=lambda _: None) is None


def test_retry_after_is_honoured_up_to_the_cap():
    assert backoff_delay(0, first=0.2, cap=5, retry_after="2") == 2
    assert backoff_delay(0, first=0.2, cap=5, retry_after="60") == 5
    assert backoff_delay(3, first=0.2, cap=5, retry_after="1") == 1.6
    assert backoff_delay(0, first=0.2, cap=5, retry_after="Wed, 21 Oct 2026 07:28:00 GMT") == 0.2
    client, _ = client_answering((503, {"Retry-After": "3"}), 202)
    pauses: list[float] = []
    post_with_retry(client, "/x", attempts=2, first_delay=0.5, max_delay=10, sleep=pauses.append)
    assert pauses == [3]
