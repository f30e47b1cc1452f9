"""The pages' API key: a browser cannot send `Authorization: Bearer`, so the key is given once and kept.

    GET  /?key=K        a right key: a cookie is set and the browser sent on to / (the key leaves the address bar)
    POST /   key=K      the same from the page's form (a wrong or missing key gets the form again, 401)
    GET  /?logout       the cookie is dropped
    Authorization: Bearer K   also works (scripts, curl)

The cookie holds a digest of the key, not the key: a copied cookie opens the page, never the API. It is
HttpOnly and SameSite=Strict, named per port (cookies of one host are shared by all its ports).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from edge_sdk.apps.pages.html import Html, badge, document, paragraph, section

COOKIE_DAYS = 30
MAX_FORM_BYTES = 4096


def digest(key: str) -> str:
    return hashlib.sha256(b"edge-sdk page key\0" + key.encode()).hexdigest()


@dataclass(frozen=True)
class PageKeys:
    """Who may see a page: the `allowed` keys; `refused_why` says why another known key (a device's) may not."""

    kind: str  # "status", "fleet": part of the cookie's name
    allowed: Collection[str]
    refused_why: Callable[[str], str | None] = lambda _key: None
    unavailable: str | None = None  # why nobody can open the page (no key of the right kind configured)

    @property
    def public(self) -> bool:
        return not self.allowed and self.unavailable is None

    def cookie_name(self, request: Request) -> str:
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        return f"edge_sdk_{self.kind}_{port}"

    def _valid_digest(self, value: str) -> bool:
        return any(hmac.compare_digest(value, digest(k)) for k in self.allowed)

    def check(self, request: Request) -> bool:
        """Whether the request carries a right key (header or cookie)."""
        if self.public:
            return True
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer ") and header[7:].strip() in self.allowed:
            return True
        cookie = request.cookies.get(self.cookie_name(request), "")
        return bool(cookie) and self._valid_digest(cookie)

    async def login(self, request: Request, title: str) -> Response | None:
        """The answer for a request that gives, drops or lacks a key; None when the page should be shown."""
        if "logout" in request.query_params:
            response = self.form(title, "signed out", status=200)
            response.delete_cookie(self.cookie_name(request), path="/")
            return response
        given = request.query_params.get("key")
        if request.method == "POST":
            given = await _form_key(request)
        if given is not None:
            return self._accept(request, title, given.strip())
        if self.check(request):
            return None
        return self.form(title, None)

    def _accept(self, request: Request, title: str, key: str) -> Response:
        if self.unavailable is not None:
            return self.form(title, None)
        if self.public or key in self.allowed:
            response = RedirectResponse("/", status_code=303)
            if not self.public:
                response.set_cookie(
                    self.cookie_name(request),
                    digest(key),
                    max_age=COOKIE_DAYS * 86400,
                    path="/",
                    httponly=True,
                    samesite="strict",
                    secure=request.url.scheme == "https",
                )
            return response
        why = self.refused_why(key) if key else None
        return self.form(title, why or ("wrong key" if key else "no key given"), status=403 if why else 401)

    def form(self, title: str, problem: str | None, *, status: int = 401) -> HTMLResponse:
        """The page that asks for the key (or says why it cannot be opened)."""
        if self.unavailable is not None:
            body = [section("not available", paragraph(self.unavailable))]
            return HTMLResponse(document(title, body, subtitle="not available"), status_code=403)
        note = [badge(problem, "bad" if status >= 400 else "info"), " "] if problem else []
        ask = paragraph(
            *note,
            "This page shows what the API shows: give one of its API keys. It is kept in a cookie for ",
            f"{COOKIE_DAYS} days (the cookie holds a digest of the key, not the key).",
        )
        form = (
            '<form class="key" method="post" action="/"><input type="password" name="key" '
            'autocomplete="current-password" placeholder="API key" aria-label="API key" autofocus>'
            '<button type="submit">Open</button></form>'
        )
        return HTMLResponse(document(title, [section("API key", ask, Html(form))], subtitle="sign in"), status)


class RedactKeys(logging.Filter):
    """Hide the value of `key=` in logged request lines: uvicorn's access log writes the query string, and
    `/?key=K` would leave the API key in the daemon's log."""

    _KEY = re.compile(r"([?&]key=)[^&\s]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and "key=" in a for a in record.args):
            record.args = tuple(self._KEY.sub(r"\1<hidden>", a) if isinstance(a, str) else a for a in record.args)
        return True


def redact_keys_in_access_log() -> None:
    """Once per process: the filter on uvicorn's access logger."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactKeys) for f in access.filters):
        access.addFilter(RedactKeys())


async def _form_key(request: Request) -> str:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return ""
    return parse_qs(body.decode("utf-8", "replace")).get("key", [""])[0]
