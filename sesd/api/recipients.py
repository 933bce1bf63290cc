"""The routes a message's recipients reach (no API key): click redirects and unsubscribes.

Both take a signed token (sesd.tracking): a forged or altered one answers 404 before anything
is read or written, and a click redirects only to a URL stored at intake for that message, so
the route is no open redirect. GET of the unsubscribe page changes nothing (mail scanners and
link previews fetch every link); only its POST does.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from .. import tracking
from ..store import Click
from .base import (
    DB,
    HOOKS,
    TRACKING_KEY,
    ApiError,
    LogThrottle,
    add_hits,
    clip,
    every,
    read_capped,
)
from .clicks import ClickMemory, GroupCommit, location, user_agent
from .unsubscribe import PAGE_HEADERS, is_one_click, mask, unsubscribe_page, unsubscribed_page

log = structlog.get_logger()
CLICK_ROUTE = f"{tracking.CLICK_PATH}/{{token}}"
UNSUBSCRIBE_ROUTE = f"{tracking.UNSUBSCRIBE_PATH}/{{token}}"
# A one-click body is 26 bytes; a multipart one from a mail provider a few hundred.
UNSUBSCRIBE_BODY_LIMIT = 16 * 1024
CLICK_FLUSH_INTERVAL = 5.0  # seconds between writes of counted click replays
REDIRECT_HEADERS = {"Cache-Control": "no-store"}


@dataclass
class ClickState:
    """This process's click memory, its batched writer, and a throttle for failure lines."""

    memory: ClickMemory
    writer: GroupCommit[Click, str | None]
    failures: LogThrottle = field(default_factory=LogThrottle)


CLICKS = web.AppKey("clicks", ClickState)


# -- clicks -------------------------------------------------------------------------------------

async def click(request: web.Request) -> web.Response:
    """302 to the link the token names, recording the click; 404 for anything not genuine."""
    found = tracking.read_click_token(request.app[TRACKING_KEY], request.match_info["token"])
    if found is None:
        raise ApiError(404, "no such link")
    request_id, link = found
    state = request.app[CLICKS]
    url = state.memory.url(request_id, link)
    if request.method == "HEAD":
        # Link checkers and scanners ask with HEAD: answer where it goes, record no click.
        if url is None:
            db = request.app[DB]
            url = await db.run(db.store.click_url, request_id, link)
    elif url is not None:
        state.memory.count(request_id, url)
    else:
        url = await _record(request, state, Click(request_id, link,
                                                  user_agent(request.headers.get("User-Agent"))))
    if url is None:  # no such request, or no such link in its message
        raise ApiError(404, "no such link")
    return web.Response(status=302, headers={**REDIRECT_HEADERS, "Location": location(url)})


async def _record(request: web.Request, state: ClickState, item: Click) -> str | None:
    """The click's URL, its row written with others in one transaction. Should the write fail
    (a full disk, a lock held too long), the reader still goes where the link points: the URL
    is read alone, and only the record is lost."""
    try:
        url = await state.writer.submit(item)
    except Exception as exc:
        held_back = state.failures.admit()
        if held_back is not None:
            log.warning("could not record a click", error=clip(str(exc)),
                        similar_lines_held_back=held_back)
        db = request.app[DB]
        return await db.run(db.store.click_url, item.request_id, item.link)
    if url is not None:
        state.memory.remember(item.request_id, item.link, url)
    return url


async def _flush_clicks(app: web.Application) -> None:
    db = app[DB]
    await add_hits(db, db.store.add_click_hits, app[CLICKS].memory.drain(),
                   "could not add click hits", "links")


async def _click_resources(app: web.Application) -> AsyncIterator[None]:
    """After the app's own resources (the database) are up; torn down before they are."""
    db = app[DB]
    app[CLICKS] = ClickState(ClickMemory(),
                             GroupCommit(lambda batch: db.run(db.store.record_clicks, batch)))
    async with every(CLICK_FLUSH_INTERVAL, functools.partial(_flush_clicks, app)):
        try:
            yield
        finally:
            # Before the last flush: its counts add to the rows these writes create.
            await app[CLICKS].writer.close()


# -- unsubscribe --------------------------------------------------------------------------------

def _unsubscribe_id(request: web.Request) -> int:
    request_id = tracking.read_unsubscribe_token(request.app[TRACKING_KEY],
                                                 request.match_info["token"])
    if request_id is None:
        raise ApiError(404, "no such unsubscribe link")
    return request_id


def _page(html: str) -> web.Response:
    return web.Response(body=html.encode(), headers=dict(PAGE_HEADERS))


async def unsubscribe_form(request: web.Request) -> web.Response:
    """The page: list, masked address, one button. Reads only."""
    request_id = _unsubscribe_id(request)
    db = request.app[DB]
    target = await db.run(db.store.unsubscribe_target, request_id)
    if target is None:
        raise ApiError(404, "no such unsubscribe link")
    email, list_id, already = target
    if already:
        return _page(unsubscribed_page(list_id, mask(email)))
    return _page(unsubscribe_page(list_id, mask(email), request.match_info["token"]))


async def unsubscribe_post(request: web.Request) -> web.Response:
    """RFC 8058 one-click, or the page's button: suppress the address for the message's list."""
    request_id = _unsubscribe_id(request)
    body = await read_capped(request, UNSUBSCRIBE_BODY_LIMIT)
    if not is_one_click(body, request.headers.get("Content-Type", "")):
        raise ApiError(400, "the body must be List-Unsubscribe=One-Click (RFC 8058), "
                            "form-encoded or multipart/form-data")
    db = request.app[DB]
    done = await db.run(db.store.unsubscribe, request_id)
    if done is None:
        raise ApiError(404, "no such unsubscribe link")
    if done.stopped:
        request.app[HOOKS].stopped()  # the sender drops what it holds for the address
    if done.recorded:
        log.info("unsubscribed", request_id=request_id, list=done.list_id,
                 stopped=done.stopped)
    return _page(unsubscribed_page(done.list_id, mask(done.email)))


# Unauthenticated: the middleware caps their bodies at PUBLIC_BODY_LIMIT before reading.
RECIPIENT_ROUTES = frozenset({CLICK_ROUTE, UNSUBSCRIBE_ROUTE})


def add_recipient_routes(app: web.Application) -> None:
    app.router.add_get(CLICK_ROUTE, click)
    app.router.add_get(UNSUBSCRIBE_ROUTE, unsubscribe_form)
    app.router.add_post(UNSUBSCRIBE_ROUTE, unsubscribe_post)
    app.cleanup_ctx.append(_click_resources)
