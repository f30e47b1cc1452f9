"""The pages' API key outside the browser: never written to the access log."""

from __future__ import annotations

import logging

from edge_sdk.apps.pages.keys import RedactKeys


def test_a_key_in_a_page_address_never_reaches_the_access_log():
    line = '%s - "%s %s HTTP/%s" %d'  # uvicorn's access log line
    record = logging.LogRecord(
        "uvicorn.access", 20, "", 0, line, ("1.2.3.4:5", "GET", "/?key=s3cret&x=1", "1.1", 303), None
    )
    assert RedactKeys().filter(record)
    assert record.getMessage() == '1.2.3.4:5 - "GET /?key=<hidden>&x=1 HTTP/1.1" 303'
