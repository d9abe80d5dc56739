"""Top customers by score across partitions: per-partition leaders, merged exactly."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from engine.state import CustomerState, Score
from streams.scoring_leaders import (
    PER_REP,
    Board,
    Dirty,
    Leaders,
    LeadersError,
    format_top,
    partition_leaders,
    top,
)
from streams.web import top_answer

AT = datetime(2026, 12, 1, tzinfo=UTC)
MANAGERS = {"rep-a": "mgr-1", "rep-b": "mgr-1", "rep-c": "mgr-2"}


def population(n: int, seed: int = 3) -> list[tuple[str, int, CustomerState]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        rep = rng.choice(["rep-a", "rep-b", "rep-c", "rep-d", None])
        scores = {"churn": Score(round(rng.random(), 2), 4, 0)}  # rounding makes ties
        if rng.random() < 0.5:
            scores["win"] = Score(rng.random(), 2, 0)
        state = CustomerState(customer_id=f"c{i:04d}", owner_rep_id=rep, scores=scores)
        out.append((state.customer_id, rng.randrange(4), state))
    return out


def brute(
    people: list[tuple[str, int, CustomerState]],
    score: str,
    k: int,
    rep: str | None = None,
    team: str | None = None,
) -> list[tuple[str, float]]:
    chosen = [
        (s.customer_id, s.scores[score].value)
        for _, _, s in people
        if score in s.scores
        and (rep is None or s.owner_rep_id == rep)
        and (team is None or MANAGERS.get(s.owner_rep_id or "") == team)
    ]
    return sorted(chosen, key=lambda c: (-c[1], c[0]))[:k]


def board_of(people: list[tuple[str, int, CustomerState]], per_rep: int = PER_REP) -> Board:
    board = Board()
    by_partition: dict[int, list[tuple[str, int, CustomerState]]] = {}
    for item in people:
        by_partition.setdefault(item[1], []).append(item)
    for items in by_partition.values():  # as each partition's owner publishes them
        for record in partition_leaders(items, ["churn", "win"], MANAGERS, AT, per_rep=per_rep):
            board.take(record.key, record.to_bytes())
    return board


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_merged_partition_leaders_equal_a_brute_force_top_k(seed: int) -> None:
    people = population(600, seed)
    board = board_of(people, per_rep=10)
    for score in ("churn", "win"):
        for k in (1, 5, 10):
            for rep, team in ((None, None), ("rep-a", None), ("rep-d", None), (None, "mgr-1")):
                found = [(e.customer_id, e.value) for e in board.top(score, k, rep, team)]
                assert found == brute(people, score, k, rep, team), (score, k, rep, team)


def test_a_record_names_rep_manager_version_and_partition() -> None:
    people = population(50)
    [churn, _] = partition_leaders(people[:1], ["churn", "win"], MANAGERS, AT)
    leader = churn.entries[0]
    state = people[0][2]
    assert (leader.customer_id, leader.rep, leader.model_version) == (
        "c0000",
        state.owner_rep_id,
        4,
    )
    assert leader.manager == MANAGERS.get(state.owner_rep_id or "")
    assert Leaders.from_bytes(churn.to_bytes()) == churn


def test_a_partition_left_without_customers_publishes_an_empty_record() -> None:
    records = partition_leaders([], ["churn"], {}, AT, partitions=[3])
    assert [(r.score, r.partition, r.entries) for r in records] == [("churn", 3, ())]


def test_k_beyond_what_is_kept_is_refused_naming_it() -> None:
    with pytest.raises(LeadersError, match=f"k: expected 1 to {PER_REP}, found 51"):
        top([], "churn", PER_REP + 1)
    with pytest.raises(LeadersError, match="k: expected a whole number, found 'five'"):
        top_answer(Board(), "churn", {"k": "five"})


def test_a_broken_record_is_ignored_and_the_rest_answer() -> None:
    board = board_of(population(40))
    board.take(b"churn/9", b"{not json")
    board.take(b"churn/8", b'{"format": "other"}')
    assert len(board.top("churn", 5)) == 5
    assert all(r.partition != 9 for r in board.records.values())


def test_the_http_answer_and_the_cli_text() -> None:
    people = population(100)
    board = board_of(people)
    answer = top_answer(board, "churn", {"k": "3", "team": "mgr-2"})
    assert [c["customer_id"] for c in answer["customers"]] == [
        c for c, _ in brute(people, "churn", 3, team="mgr-2")
    ]
    assert answer["partitions"] == [0, 1, 2, 3]
    text = format_top("churn", board.top("churn", 2, rep="rep-c"), "rep-c", None)
    assert text.splitlines()[0] == "top 2 by churn of rep rep-c"
    assert "model v4" in text


def test_dirty_partitions_are_published_once_and_all_after_a_rebalance() -> None:
    dirty = Dirty()
    assert dirty.take(frozenset({0, 1}), 1) == {0, 1}  # first time: all owned
    dirty.note([1, 2])
    assert dirty.take(frozenset({0, 1}), 1) == {1}  # 2 is not owned here
    assert dirty.take(frozenset({0, 1}), 1) == frozenset()
    assert dirty.take(frozenset({0, 1, 3}), 2) == {0, 1, 3}


def test_board_standings_match_a_brute_force_count() -> None:
    from engine.bundle import RANK_TOP_MAX

    assert RANK_TOP_MAX == PER_REP  # every rank a bundle may ask for is answerable
    people = population(400, seed=5)
    board = board_of(people)
    rng = random.Random(9)
    for _ in range(200):
        rep = rng.choice(["rep-a", "rep-b", "rep-c", "rep-d", None])
        value = round(rng.random(), 2)
        customer = rng.choice([f"c{rng.randrange(400):04d}", "new-one"])
        others = [
            s
            for _, _, s in people
            if s.owner_rep_id == rep and s.customer_id != customer and "churn" in s.scores
        ]
        expected = sum(
            1 for s in others if (-s.scores["churn"].value, s.customer_id) < (-value, customer)
        )
        above = board.above("churn", rep, customer, value)
        if expected < PER_REP:  # beyond what is kept, only "not in the top" matters
            assert above == expected, (rep, value, customer)
        else:
            assert above is not None and above >= PER_REP - 1
    assert board.above("lead", "rep-a", "c0001", 0.9) is None  # never published
