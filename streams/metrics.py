"""Prometheus metrics of one worker. Labels are bounded: never a customer id."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class WorkerMetrics:
    registry: CollectorRegistry
    touchpoints: Counter
    interventions: Counter
    shadowed: Counter
    capped: Counter
    dead_letters: Counter
    latency: Histogram
    bundles: Counter
    ticks: Counter
    batch_duration: Histogram
    trimmed: Counter
    repeated: Counter
    expired: Counter
    suppressed: Counter
    verdicts: Counter
    consents: Counter
    lag: Gauge
    """Records not yet processed per assigned partition (what `kafka_consumergroup_lag`
    reports from outside, measured here from the fetcher's high watermark)."""
    predictions: Counter
    examples_written: Counter
    examples_learnt: Counter
    model_version: Gauge
    models_published: Counter
    model_records_refused: Counter
    score_drifts: Counter
    score_drifted: Gauge
    score_quality: Gauge

    @classmethod
    def create(cls) -> WorkerMetrics:
        registry = CollectorRegistry(auto_describe=True)
        return cls(
            registry=registry,
            touchpoints=Counter(
                "warroom_touchpoints",
                "Touchpoint events taken in, by outcome (processed, duplicate).",
                ["outcome"],
                registry=registry,
            ),
            interventions=Counter(
                "warroom_interventions",
                "Intervention commands emitted, by rule and kind.",
                ["rule_id", "kind"],
                registry=registry,
            ),
            shadowed=Counter(
                "warroom_shadow_decisions",
                "Interventions rules and journeys in shadow mode would have emitted, by rule "
                "(a journey step counts as journey.step).",
                ["rule_id"],
                registry=registry,
            ),
            capped=Counter(
                "warroom_capped_interventions",
                "Interventions held back by a customer's daily cap, by rule.",
                ["rule_id"],
                registry=registry,
            ),
            dead_letters=Counter(
                "warroom_dead_letters",
                "Records sent to the dead-letter topic, by reason code.",
                ["reason"],
                registry=registry,
            ),
            bundles=Counter(
                "warroom_rule_bundles",
                "Rule bundle versions offered to this worker, by outcome "
                "(activated, rejected, deleted).",
                ["outcome"],
                registry=registry,
            ),
            ticks=Counter(
                "warroom_timer_ticks",
                "Timer ticks that evaluated a customer's deadline.",
                registry=registry,
            ),
            latency=Histogram(
                "warroom_processing_latency_seconds",
                "From a record's append to the touchpoints topic until its batch is processed.",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            trimmed=Counter(
                "warroom_state_trimmed",
                "What was dropped to keep customer states within WARROOM_STATE_MAX_BYTES: "
                "window entries, or whole rule memories.",
                ["what"],
                registry=registry,
            ),
            repeated=Counter(
                "warroom_repeated_candidates",
                "Interventions read again on rep-candidates and not sent a second time.",
                registry=registry,
            ),
            expired=Counter(
                "warroom_customers_expired",
                "Customers removed after WARROOM_CUSTOMER_TTL_DAYS without a touchpoint.",
                registry=registry,
            ),
            suppressed=Counter(
                "warroom_suppressed_interventions",
                "Interventions not emitted because the customer had not granted a purpose "
                "they need, by rule.",
                ["rule_id"],
                registry=registry,
            ),
            verdicts=Counter(
                "warroom_compliance_verdicts",
                "Verdicts written to compliance-verdicts, by verdict and by who decided "
                "(gate, worker).",
                ["verdict", "decided_by"],
                registry=registry,
            ),
            consents=Counter(
                "warroom_consent_changes",
                "Consent changes processed, by purpose (a purpose outside the documented list "
                "counts as other; (stale) for a change older than the recorded one) and "
                "change.",
                ["purpose", "change"],
                registry=registry,
            ),
            lag=Gauge(
                "warroom_consumer_lag",
                "Records behind the end of each assigned input partition (high watermark "
                "minus the next offset to process), by topic and partition.",
                ["topic", "partition"],
                registry=registry,
            ),
            predictions=Counter(
                "warroom_score_predictions",
                "Scores predicted (a touchpoint whose features or model moved).",
                registry=registry,
            ),
            examples_written=Counter(
                "warroom_scoring_examples",
                "Labelled examples written to scoring-examples, by score.",
                ["score"],
                registry=registry,
            ),
            examples_learnt=Counter(
                "warroom_scoring_examples_learnt",
                "Examples the learner folded into a model (only on the worker that learns).",
                registry=registry,
            ),
            model_version=Gauge(
                "warroom_score_model_version",
                "The model version this worker predicts with, by score.",
                ["score"],
                registry=registry,
            ),
            models_published=Counter(
                "warroom_score_models_published",
                "Model versions the learner published to the models topic, by score.",
                ["score"],
                registry=registry,
            ),
            model_records_refused=Counter(
                "warroom_score_model_records_refused",
                "Records of the models topic that could not be used (the model in use was kept).",
                registry=registry,
            ),
            score_drifts=Counter(
                "warroom_score_drifts",
                "Drifts of a champion's error stream (ADWIN, error rising), by score.",
                ["score"],
                registry=registry,
            ),
            score_drifted=Gauge(
                "warroom_score_drifted",
                "1 when the examples learnt before the latest published model showed a drift "
                "(the champion got worse), 0 otherwise, by score.",
                ["score"],
                registry=registry,
            ),
            score_quality=Gauge(
                "warroom_score_quality",
                "Progressive validation at the latest published model, by score, model "
                "(champion, challenger) and measure (log_loss, auc).",
                ["score", "model", "measure"],
                registry=registry,
            ),
            batch_duration=Histogram(
                "warroom_batch_duration_seconds",
                "Time spent in the engine for one batch of records.",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
        )
