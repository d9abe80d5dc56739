"""The worker's web pages: open health and metrics, admin pages behind a bearer token.

``/metrics``, ``/healthz`` (liveness: the event loop answers; never depends on the
broker), ``/readyz`` (503 with the reasons while bundles or models are read, the group
rebalances or tables recover) and ``/startupz`` (503 until the worker was ready once,
for a startup probe that covers long recoveries) answer anyone who reaches the port.
``/customers/{id}`` (a customer's state, scores and why each rule did or did not fire),
``/scores/{score}/top`` (the best customers by a score across every worker's
partitions) and ``/rules`` (the running bundles) show customer data and configuration,
so they need ``Authorization: Bearer <WARROOM_ADMIN_TOKEN>``; without a configured
token they are off (403). Faust's own table and router views are switched off in ``create_app``.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr

from engine import EPOCH, CustomerState, benefits, explain, explain_journeys
from schemas.partitioning import customer_partition

from .scoring_leaders import Board, LeadersError

if TYPE_CHECKING:
    from .parts import Warroom

ADMIN_PAGES = (
    "/rules",
    "/customers/{customer_id}",
    "/customers/{customer_id}/profile",
    "/scores/{score}/top",
)


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


def register_pages(warroom: Warroom) -> None:
    """Add the worker's pages to its Faust app (before it starts)."""
    app = warroom.app
    rulebook = warroom.pipeline.rulebook
    registry = warroom.metrics.registry

    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    async def health_page(web: Any, request: Any) -> Any:
        # Liveness: answered by the event loop alone, never by asking the broker.
        return web.json({"status": "ok"})

    started = False

    async def ready_page(web: Any, request: Any) -> Any:
        nonlocal started
        problems = warroom.readiness_problems()
        if problems:
            return web.json({"status": "not ready", "reasons": problems}, status=503)
        started = True
        return web.json({"status": "ready", "partitions": sorted(warroom.assignment())})

    async def startup_page(web: Any, request: Any) -> Any:
        # Startup: done once the worker has been ready (rules read, tables recovered)
        # at least once; a long first recovery keeps it 503 without failing liveness.
        nonlocal started
        if not started and not warroom.readiness_problems():
            started = True
        if started:
            return web.json({"status": "started"})
        return web.json({"status": "starting", "reasons": warroom.readiness_problems()}, status=503)

    async def rules_page(web: Any, request: Any) -> Any:
        return web.json(
            {
                name: {
                    "version": bundle.version,
                    "source": bundle.source,
                    "rules": [rule.rule_id for rule in bundle.rules],
                }
                for name, bundle in sorted(rulebook.bundles.items())
            }
        )

    async def customer_page(web: Any, request: Any, customer_id: str) -> Any:
        return web.json(
            explain_customer(warroom, customer_id, warroom.assignment(), datetime.now(UTC))
        )

    async def profile_page(web: Any, request: Any, customer_id: str) -> Any:
        return web.json(customer_profile(warroom, customer_id, warroom.assignment()))

    async def top_page(web: Any, request: Any, score: str) -> Any:
        try:
            answer = top_answer(warroom.board, score, request.query)
        except LeadersError as exc:
            return web.json({"error": str(exc)}, status=400)
        return web.json(answer)

    token = warroom.settings.admin_token
    app.page("/metrics")(metrics_page)
    app.page("/healthz")(health_page)
    app.page("/readyz")(ready_page)
    app.page("/startupz")(startup_page)
    app.page("/rules")(admin_only(token, rules_page))
    app.page("/customers/{customer_id}")(admin_only(token, customer_page))
    app.page("/customers/{customer_id}/profile")(admin_only(token, profile_page))
    app.page("/scores/{score}/top")(admin_only(token, top_page))


def top_answer(board: Board, score: str, query: Mapping[str, str]) -> dict[str, Any]:
    """``/scores/{score}/top?k=5&rep=R&team=T``: the top customers across every worker's
    partitions, from the score-leaders topic."""
    raw_k = query.get("k", "5")
    try:
        k = int(raw_k)
    except ValueError:
        raise LeadersError(f"k: expected a whole number, found {raw_k!r}") from None
    rep, team = query.get("rep"), query.get("team")
    leaders = board.top(score, k, rep, team)
    return {
        "score": score,
        "k": k,
        "rep": rep,
        "team": team,
        "partitions": sorted({r.partition for r in board.records.values() if r.score == score}),
        "customers": [leader.to_json() for leader in leaders],
    }


def explain_customer(
    warroom: Warroom, customer_id: str, owned: frozenset[int], now: datetime
) -> dict[str, Any]:
    """A customer's state and, for every running rule, why it did or did not fire."""
    partition = customer_partition(customer_id, warroom.settings.partitions)
    state = warroom.stored_state(customer_id)
    rules = warroom.pipeline.rulebook.rules
    return {
        "customer_id": customer_id,
        "partition": partition,
        "owned_here": partition in owned,
        "known": state is not None,
        "state": None if state is None else _readable(state),
        "scores": {} if state is None else _scores(state),
        "rules": [
            {
                "rule_id": s.rule_id,
                "version": s.version,
                "mode": s.mode,
                "progress": s.progress,
                "last_fired_at": _iso(s.last_fired_at),
                "cooldown_until": _iso(s.cooldown_until),
                "deadline": _iso(s.deadline),
            }
            for s in explain(state, rules, now)
        ],
        "journeys": [
            {
                "journey_id": j.journey_id,
                "mode": j.mode,
                "variant": j.variant,
                "inside": j.inside,
                "progress": j.progress,
                "deadline": _iso(j.deadline),
            }
            for j in explain_journeys(state, warroom.pipeline.rulebook.journeys, now)
        ],
    }


def customer_profile(warroom: Warroom, customer_id: str, owned: frozenset[int]) -> dict[str, Any]:
    """What store staff see: recent purchases, totals, membership tier and its benefits."""
    partition = customer_partition(customer_id, warroom.settings.partitions)
    state = warroom.stored_state(customer_id)
    profile = None if state is None else state.profile
    tier = None if profile is None else profile.tier
    return {
        "customer_id": customer_id,
        "partition": partition,
        "owned_here": partition in owned,
        "known": state is not None,
        "tier": tier,
        "benefits": list(benefits(warroom.pipeline.rulebook.tiers, tier)),
        "purchases": 0 if profile is None else profile.purchases,
        "totals": {} if profile is None else dict(profile.totals),
        "last_purchase_at": (
            _iso(EPOCH + timedelta(microseconds=profile.recent[-1].at))
            if profile is not None and profile.recent
            else None
        ),
        "recent": []
        if profile is None
        else [
            {
                "at": _iso(EPOCH + timedelta(microseconds=p.at)),
                "kind": p.kind,
                "product": p.product,
                "quantity": p.quantity,
                "amount": p.amount,
                "currency": p.currency,
                "store": p.store,
            }
            for p in reversed(profile.recent)
        ],
    }


def _readable(state: CustomerState) -> dict[str, Any]:
    return {
        "owner_rep_id": state.owner_rep_id,
        "touchpoints": state.touchpoints,
        "first_seen_at": _iso(state.first_seen_at),
        "last_event_at": _iso(state.last_event_at),
        "last_inbound_at": _iso(state.last_inbound_at),
        "last_outbound_at": _iso(state.last_outbound_at),
        "kind_counts": dict(state.kind_counts),
    }


def _scores(state: CustomerState) -> dict[str, Any]:
    """Each score: its value, the model version that gave it, when, and the features that
    weighed most (value and contribution to the log-odds)."""
    return {
        name: {
            "value": score.value,
            "model_version": score.model_version,
            "at": _iso(EPOCH + timedelta(microseconds=score.at)),
            "top": [
                {"feature": feature, "value": value, "contribution": contribution}
                for feature, value, contribution in score.top
            ],
        }
        for name, score in state.scores.items()
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
