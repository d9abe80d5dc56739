"""The rules every worker runs when no bundle has been pushed."""

from __future__ import annotations

from .bundle import RuleBundle, load_bundle

BUILTIN_NAME = "builtin"

BUILTIN_BUNDLE_YAML = """\
bundle: builtin
version: 1
rules:
  - id: builtin.unanswered-outbound
    description: >
      Three outbound messages in a row with no inbound reply: the rep should stop
      sending more of the same and change approach.
    when:
      streak:
        of: {direction: outbound, kind: [message_sent, email_sent]}
        reset_by: {direction: inbound}
        length: 3
    then:
      kind: task
      assignee: owner
      priority: normal
      due_in: 24h
      title: "Change approach: {observed} messages to {customer_id} without a reply"
      body: >-
        The last {observed} outbound messages to customer {customer_id} got no reply.
        Stop sending more of the same; call, or try a different channel or content.
"""

BUILTIN_BUNDLE: RuleBundle = load_bundle(BUILTIN_BUNDLE_YAML, "builtin.yaml")
BUILTIN_RULES = BUILTIN_BUNDLE.rules
