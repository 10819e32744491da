"""The page's HTTP gate, for a page open to many: a read-only page answers 403 to every route that
writes, a client over the question limit gets 429 with Retry-After from `/ask`, and a question that
finds the answer queue full (busy.py) gets 503 with Retry-After instead of joining it.

The gate gives the status codes; it is not the only guard. The page's own functions refuse too
(ui.py: `/add` on a read-only page never writes, a question over the limit is never answered),
so a route the gate does not know still cannot write or ask more. The page's login, one for
everyone (ASKDESK_AUTH), is read here too.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

from ..errors import BadInputError
from .busy import Busy
from .limits import QuestionLimit, retry_after, too_many

READ_ONLY = ("This page is read-only; editors add articles with `askdesk add FILE`, `askdesk watch DIR`, "
             "or a page started without --read-only on localhost.")
READ_ONLY_EMPTY = "No articles yet: this page is read-only, and its editors have not added any."

# gradio's routes that run a function: by the name in the path (/call), or by the body's fn_index
# when it gives one (/queue/join, /run, /api), as gradio's route_utils.get_fn chooses.
_BY_NAME = re.compile(r"/gradio_api/call/(?:v2/)?(?P<name>[^/]+)/?$")
_BY_INDEX = re.compile(r"/gradio_api/(?:queue/join|(?:run|api)/(?P<name>[^/]+))/?$")
_FILES = re.compile(r"/gradio_api/(?:upload|process_recording)/?$")  # these store files: a read-only page needs none
_MAX_BODY = 1 << 20  # a body this long is passed on unread: the functions themselves still refuse


def client_of(request: Any) -> str:
    """The address a request came from (`gr.Request` or an ASGI scope); "unknown" when it has none."""
    client = request.get("client") if isinstance(request, dict) else getattr(request, "client", None)
    host = client[0] if isinstance(client, (tuple, list)) else getattr(client, "host", None)
    return host or "unknown"


def gate_middleware(blocks: Any, *, read_only: bool, limit: QuestionLimit | None, busy: Busy | None = None) -> list:
    """`app_kwargs["middleware"]` for ``blocks.launch``: the gate, where the page is read-only, limited or capped."""
    if not (read_only or limit or busy):
        return []
    from starlette.middleware import Middleware

    names = {i: f.api_name for i, f in blocks.fns.items()}
    chat = {f.api_name for f in blocks.fns.values() if f.concurrency_id == "ask" and f.api_name != "ask"}
    return [Middleware(Gate, names=names, read_only=read_only, limit=limit, busy=busy, chat=chat)]


class Gate:
    """ASGI middleware in front of the gradio app (`launch` adds it through ``app_kwargs``).

    Args:
        app: the app behind the gate.
        names: fn_index -> the function's api name ("ask", "add", "respond", ...).
        read_only: refuse the routes that write with 403.
        limit: the question limit whose 429 `/ask` answers; None: no limit.
        busy: the answer queue's cap, whose 503 `/ask` answers; None: no cap.
        chat: the api names of the page's own events on the answer queue ("respond", "respond_1",
            ...): the page checks the cap before they join (ui.py), so the gate refuses them only
            past ``busy.hard_cap``.
    """

    def __init__(self, app: Any, *, names: dict[int, str | None], read_only: bool,
                 limit: QuestionLimit | None, busy: Busy | None = None, chat: set[str] = frozenset()):
        self.app, self.names, self.read_only, self.limit = app, names, read_only, limit
        self.busy, self.chat = busy, chat

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if self.read_only and _FILES.search(path):
            return await _answer(send, 403, READ_ONLY)
        by_name, by_index = _BY_NAME.search(path), _BY_INDEX.search(path)
        if not (by_name or by_index):
            return await self.app(scope, receive, send)
        name = by_name["name"] if by_name else by_index["name"]
        if by_index:  # the body may name the function by index, and then that is the one gradio runs
            messages, body = await _read(receive)
            receive = _replay(messages, receive)
            index = _fn_index(body)
            if index is not None:
                name = self.names.get(index)
        if name == "add" and self.read_only:
            return await _answer(send, 403, READ_ONLY)
        if name == "ask" and self.limit is not None:
            # Counted when answered (ui.py); here a client already over the limit gets its 429 at once.
            wait = self.limit.wait(client_of(scope))
            if wait:
                return await _answer(send, 429, too_many(wait), [(b"retry-after", str(retry_after(wait)).encode())])
        if self.busy is not None and (name == "ask" or name in self.chat):
            refused = self.busy.admit(None if name == "ask" else self.busy.hard_cap)
            if refused:
                return await _answer(send, 503, refused[0], [(b"retry-after", str(refused[1]).encode())])
            return await self._join(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _join(self, scope: dict, receive: Callable, send: Callable) -> None:
        """Pass a question the cap let in; it counts as waiting until gradio's reply to its join starts."""
        joining = True

        async def sent(message: dict) -> None:
            nonlocal joining
            if joining and message["type"] == "http.response.start":  # gradio queued it (or refused it)
                joining = False
                self.busy.joined()
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            if joining:
                self.busy.joined()


async def _read(receive: Callable) -> tuple[list[dict], bytes]:
    """The request's body messages, as received, and the body (empty past _MAX_BODY or on a disconnect)."""
    messages, size = [], 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, b""
        size += len(message.get("body", b""))
        if size > _MAX_BODY or not message.get("more_body", False):
            break
    if size > _MAX_BODY:
        return messages, b""
    return messages, b"".join(m.get("body", b"") for m in messages)


def _replay(messages: list[dict], receive: Callable) -> Callable:
    """A receive that hands the app the messages already read, then reads on."""
    pending = list(messages)

    async def again() -> dict:
        return pending.pop(0) if pending else await receive()

    return again


def _fn_index(body: bytes) -> int | None:
    """The body's fn_index, as gradio's pydantic model reads it (5, 5.0 or "5"), or None."""
    try:
        value = json.loads(body).get("fn_index") if body else None
        if isinstance(value, bool) or value is None:
            return None
        return int(value) if not isinstance(value, float) or value.is_integer() else None
    except (ValueError, TypeError, AttributeError):
        return None


async def _answer(send: Callable, status: int, message: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def auth_from_env(environ: dict[str, str] | None = None) -> tuple[str, str] | None:
    """ASKDESK_AUTH="user:password" -> (user, password); unset or empty -> None (no login)."""
    raw = (os.environ if environ is None else environ).get("ASKDESK_AUTH", "")
    if not raw:
        return None
    user, sep, password = raw.partition(":")
    if not (sep and user and password):  # the message never echoes the value: it holds a password
        raise BadInputError('ASKDESK_AUTH must look like "user:password" with both parts non-empty; '
                            "fix it, or unset it to serve without a login")
    return user, password
