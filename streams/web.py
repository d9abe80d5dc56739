"""The worker's web pages: open health and metrics, admin pages behind a bearer token.

``/metrics`` and ``/healthz`` answer anyone who reaches the port. ``/customers/{id}``
(a customer's state and why each rule did or did not fire) and ``/rules`` (the running
bundles) show customer data and configuration, so they need
``Authorization: Bearer <WARROOM_ADMIN_TOKEN>``; without a configured token they are
off (403). Faust's own table and router views are switched off in ``create_app``.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import SecretStr

ADMIN_PAGES = ("/rules", "/customers/{customer_id}")


def authorization_problem(header: str | None, token: SecretStr | None) -> tuple[int, str] | None:
    """(status, reason) when a request with this ``Authorization`` header may not see an
    admin page; None when it may."""
    if token is None:
        return 403, "admin pages are off: set WARROOM_ADMIN_TOKEN on the worker to use them"
    expected = f"Bearer {token.get_secret_value()}".encode()
    if header is None:
        return 401, "expected an Authorization: Bearer <token> header, found none"
    if not hmac.compare_digest(header.encode(), expected):
        return 401, "the bearer token does not match WARROOM_ADMIN_TOKEN"
    return None


Page = Callable[..., Awaitable[Any]]


def admin_only(token: SecretStr | None, page: Page) -> Page:
    """Wrap a Faust page handler ``(web, request, **params)`` with the token check."""

    @functools.wraps(page)
    async def guarded(web: Any, request: Any, **params: Any) -> Any:
        problem = authorization_problem(request.headers.get("Authorization"), token)
        if problem is not None:
            status, reason = problem
            return web.json({"error": reason}, status=status)
        return await page(web, request, **params)

    return guarded


def bearer(token: SecretStr | None) -> dict[str, str]:
    """Request headers that carry ``token`` (none when there is no token)."""
    return {} if token is None else {"Authorization": f"Bearer {token.get_secret_value()}"}
