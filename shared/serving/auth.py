"""API keys, off by default: with API_KEYS or API_KEY_FILE set, every route but the open ones needs a key.

A key comes as `Authorization: Bearer <key>` or `X-API-Key: <key>`, compared in constant time against every key;
a missing or wrong one is a JSON 401 with `WWW-Authenticate: Bearer`. Open: health and readiness, the inference
protocol's server metadata and model readiness, the OpenAPI document and docs page, static files and the page
shells (their scripts ask for the key on a 401); /metrics unless METRICS_REQUIRE_KEY. No key is ever logged.

Flask-HTTPAuth reads the key: one `HTTPTokenAuth` per header, a `MultiAuth` picking the one the request uses
(Bearer first). Which routes are open stays here, checked before every request: the routes live in other modules.
A key with an `=` inside (not only trailing) can only come as X-API-Key: werkzeug reads such a Bearer value as
parameters, not a token.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path

from flask import Flask, Response, current_app, g, jsonify, request
from flask_httpauth import HTTPTokenAuth, MultiAuth

from shared.config import Settings
from shared.errors import Forbidden, Unauthorized
from shared.serving import api

log = logging.getLogger(__name__)

KEY_HEADER = "X-API-Key"
REALM = "classifier"
CHALLENGE = f'Bearer realm="{REALM}"'
_EXTENSION = "api_keys_on"  # app.extensions key; read through keys_on()
OPEN_RULES = frozenset({
    "/v2/health/live", "/v2/health/ready", "/v2", "/v2/", "/v2/models/<name>/ready",
    "/v2/models/<name>/versions/<version>/ready", "/openapi.json", "/docs", "/docs/static/<path:filename>",
    "/static/<path:filename>", "/ui/static/<path:filename>",
})
OPEN_PAGES = frozenset({"/", "/ui"})  # GET only: the page shells; their POSTs need a key
# Routes that check an admin key themselves (require_admin): a prediction key is neither needed nor enough.
ADMIN_RULES: set[str] = set()
LOOPBACK = ("127.0.0.1", "::1", "localhost")  # a bind address, and the caller's address, that stay on this host
HTML_PAGES = frozenset({"/history", "/review", "/quality"})  # server-rendered with data: a browser gets _KEY_PAGE, which asks for the key


def load_keys(settings: Settings) -> list[str]:
    """API_KEYS, then API_KEY_FILE's lines (blank lines and # comments skipped), in order, without duplicates."""
    keys = [k.strip() for k in settings.api_keys.split(",") if k.strip()]
    if settings.api_key_file:
        for line in Path(settings.api_key_file).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                keys.append(line)
    return list(dict.fromkeys(keys))


def member_key(settings: Settings) -> str | None:
    """The key the gateway sends to its members: GATEWAY_MEMBER_KEY, else its own first key, else none."""
    if settings.gateway_member_key:
        return settings.gateway_member_key
    keys = load_keys(settings)
    return keys[0] if keys else None


def outgoing_headers(settings: Settings) -> dict[str, str]:
    key = member_key(settings)
    return {"Authorization": f"Bearer {key}"} if key else {}


def init_app(app: Flask, settings: Settings) -> None:
    """Require a key on the closed routes when keys are configured; otherwise do nothing."""
    keys = [k.encode() for k in load_keys(settings)]
    app.extensions[_EXTENSION] = bool(keys)
    if not keys:
        return
    log.info("API keys required (%d key(s) configured)", len(keys))
    open_rules = OPEN_RULES if settings.metrics_require_key else OPEN_RULES | {"/metrics"}
    checked = _key_auth(keys).login_required(_granted)

    @app.before_request
    def _require_key() -> Response | None:
        rule = request.url_rule.rule if request.url_rule else None
        if rule is None or rule in open_rules or rule in ADMIN_RULES or (
                rule in OPEN_PAGES and request.method in ("GET", "HEAD")):
            return None  # unknown routes 404 as before
        return checked()  # None when granted (OPTIONS too), else the 401


def admin_rule(rule: str) -> str:
    """Mark a route as an admin route (the model repository's changes): it needs an admin key, not a prediction key."""
    ADMIN_RULES.add(rule)
    return rule


def require_admin() -> None:
    """Refuse the request unless it carries an admin key (ADMIN_KEYS); with no key configured at all, unless this
    service is bound to loopback only (`serve`) and the caller is on this host: 401 without a key, 403 with a wrong
    one or none configured."""
    settings: Settings = current_app.config["SETTINGS"]
    admins = [k.strip().encode() for k in settings.admin_keys.split(",") if k.strip()]
    if not admins:
        if not keys_on() and settings.bind_host in LOOPBACK and request.remote_addr in LOOPBACK:
            return
        raise Forbidden("The model repository's changes need an admin key: set ADMIN_KEYS on this service (and send "
                        "it as `Authorization: Bearer <key>` or `X-API-Key: <key>`). With no keys at all they are "
                        f"open only to a service bound to loopback; this one listens on {settings.bind_host}.",
                        code="admin_key_needed")
    given = _given_key()
    if not given:
        raise Unauthorized("This route needs an admin key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`.",
                           headers={"WWW-Authenticate": CHALLENGE})
    if not matches(given.encode(), admins):
        raise Forbidden("That key is not an admin key (ADMIN_KEYS).", code="not_an_admin_key")
    g.api_key_id = key_id(given)


def _given_key() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get(KEY_HEADER, "").strip()


def keys_on() -> bool:
    """Whether the current app requires API keys."""
    return current_app.extensions[_EXTENSION]


def _granted() -> None:
    return None  # the request goes on to its view


def _key_auth(keys: list[bytes]) -> MultiAuth:
    """Bearer, else X-API-Key; both check against `keys` and refuse with the same 401."""
    bearer = HTTPTokenAuth(scheme="Bearer", realm=REALM)
    api_key = HTTPTokenAuth(scheme="Bearer", realm=REALM, header=KEY_HEADER)
    for token_auth in (bearer, api_key):
        token_auth.verify_token(lambda token: _verify(token, keys))
        token_auth.error_handler(_refused)
    return MultiAuth(bearer, api_key)


def _verify(token: str, keys: list[bytes]) -> bool:
    given = token.strip()
    g.api_key_given = bool(given)  # the 401 says "missing" or "not valid"
    granted = bool(given) and matches(given.encode(), keys)
    if granted:
        g.api_key_id = key_id(given)
    return granted


def key_id(key: str) -> str:
    """'key:<first 12 hex of its sha256>': names a key in records and logs without revealing it."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def caller_id() -> str:
    """Who sent this request: its API key's key_id, or 'anonymous' when keys are off."""
    return g.get("api_key_id") or "anonymous"


def _refused(status: int) -> Response:
    """The 401: JSON (the protocol's flat shape on its routes), or the page that asks for the key on HTML pages."""
    if request.url_rule.rule in HTML_PAGES and request.accept_mimetypes.accept_html:
        response = Response(_KEY_PAGE, status=status, mimetype="text/html")
    else:
        message = "The API key is not valid." if g.get("api_key_given") else \
            "An API key is needed: send `Authorization: Bearer <key>` or `X-API-Key: <key>`."
        response = jsonify(api.error_body({"error": {"code": "unauthorized", "message": message}}))
        response.status_code = status
    response.headers["WWW-Authenticate"] = CHALLENGE
    return response


def matches(given: bytes, keys: list[bytes]) -> bool:
    """Constant-time against every key (no early exit on a match)."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key)
    return found


# A browser asking for a closed page gets this: it asks for the key once (kept in sessionStorage, shared with the
# classify page's auth.js), fetches the page with it and shows it, thumbnails fetched with the key too.
_KEY_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>API key needed</title></head>
<body><p id="msg">This page needs an API key.</p>
<script>
(async function () {
  const STORE = "classifier-api-key";
  let key = sessionStorage.getItem(STORE);
  for (let attempt = 0; attempt < 2; attempt++) {
    if (!key) {
      key = (window.prompt(attempt ? "That API key was refused. API key:" : "This page needs an API key:") || "").trim();
      if (!key) break;
      sessionStorage.setItem(STORE, key);
    }
    const auth = {Authorization: "Bearer " + key};
    const response = await fetch(location.href, {headers: Object.assign({Accept: "text/html"}, auth)});
    if (response.status === 401) { sessionStorage.removeItem(STORE); key = null; continue; }
    const html = await response.text();
    document.open(); document.write(html); document.close();
    document.querySelectorAll("img[src]").forEach(async (img) => {
      const res = await fetch(img.getAttribute("src"), {headers: auth});
      if (res.ok) img.src = URL.createObjectURL(await res.blob());
    });
    return;
  }
  document.getElementById("msg").textContent = "No valid API key was given; reload the page to try again.";
})();
</script></body></html>
"""
