"""`make run`'s sample files: each, read by its own connector, makes its example pack
fire (through the engine, no broker), so the README's "one event in, one intervention
out" stays true."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors.demo import write_sample_files
from connectors.email import EmailSettings
from connectors.email_service import EmailPublisher, publish_files
from connectors.meetings import DEFAULT_KEYWORDS, KeywordGroups, publish_transcripts
from connectors.pos import PosDefaults
from connectors.pos import read_files as read_pos
from connectors.publisher import MemoryTouchpointSink
from connectors.rejects import MemoryDeadLetterSink
from connectors.sentiment import LexiconSentiment
from connectors.usage import read_files as read_usage
from engine.bundle import load_bundle
from engine.conditions import EPOCH
from engine.reducer import apply, apply_timer, next_deadline
from engine.state import CustomerState
from schemas.models import TouchpointEvent

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC).replace(microsecond=0)
PACKS = {
    "usage": ("saas-trial-health.yaml", "trial.api-video-then-sandbox-error"),
    "pos": ("refill-due.yaml", "refill.30-day-supply"),
    "email": ("email-follow-up.yaml", "email.quote-unanswered-3d"),
    "meetings": ("meeting-coaching.yaml", "meeting.rep-talked-through"),
}


def fired(events: list[TouchpointEvent], pack: str) -> set[str]:
    rules = load_bundle((ROOT / "rules/examples" / pack).read_text(encoding="utf-8")).rules
    states: dict[str, CustomerState | None] = {}
    found: set[str] = set()
    for event in sorted(events, key=lambda e: e.occurred_at):
        state, decisions = apply(states.get(event.customer_id), event, NOW, rules)
        states[event.customer_id] = state
        found |= {d.intervention.rule_id for d in decisions if d.emitted}
    for state in states.values():
        assert state is not None
        deadline = next_deadline(state, rules)
        if deadline is not None and EPOCH + timedelta(microseconds=deadline) <= NOW:
            _, decisions = apply_timer(state, EPOCH + timedelta(microseconds=deadline), NOW, rules)
            found |= {d.intervention.rule_id for d in decisions if d.emitted}
    return found


async def test_each_sample_file_raises_its_packs_intervention(tmp_path: Path) -> None:
    files = write_sample_files(tmp_path, NOW, "a1b2c3")
    letters = MemoryDeadLetterSink()
    sinks = {source: MemoryTouchpointSink() for source in files}
    await read_usage([files["usage"]], sinks["usage"], letters, LexiconSentiment())
    await read_pos([files["pos"]], sinks["pos"], letters, PosDefaults())
    await publish_files(
        [files["email"]], EmailPublisher(EmailSettings(), sinks["email"], letters, lambda: NOW)
    )
    await publish_transcripts(
        [files["meetings"]], sinks["meetings"], letters, KeywordGroups(DEFAULT_KEYWORDS), NOW
    )
    assert letters.letters == []
    for source, (pack, rule_id) in PACKS.items():
        events = [e for batch in sinks[source].published for e in batch]
        assert events, source
        assert fired(events, pack) == {rule_id}, source
