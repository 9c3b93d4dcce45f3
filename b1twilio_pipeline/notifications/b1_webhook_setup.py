"""`b1twilio setup-b1-webhooks`: subscribes the receiver's `/b1/events` to B1's changes of the entity sets
the enabled rules watch (`b1.webhook_subscriptions`), with the Basic credentials the receiver checks.

It lives with the receiver because the URL it hands B1 is the receiver's (`public_urls`), and it reads the
rules file to know what to subscribe to. Run it again after adding a rule on another entity set or
changing B1_WEBHOOK_PASSWORD: the subscription is brought up to date.
"""

from __future__ import annotations

import argparse

from b1twilio_pipeline.alerts.rules import KIND_BY_NAME, RulesConfig, load_rules
from b1twilio_pipeline.b1.client import SapB1Session
from b1twilio_pipeline.b1.entities import ENTITY_BY_NAME
from b1twilio_pipeline.b1.webhook_subscriptions import subscribe, webhook_id
from b1twilio_pipeline.core.settings import ConfigurationError, current
from b1twilio_pipeline.notifications.public_urls import B1_EVENTS_PATH, join


def watched_entities(rules: RulesConfig) -> list[str]:
    """The B1 entity sets whose changes make an enabled rule alert at once (what the change sensor asks)."""
    return sorted({ENTITY_BY_NAME[name].entity for rule in rules.enabled_rules()
                   for name in KIND_BY_NAME[rule.kind].WATCHES})


def setup_b1_webhooks(session: SapB1Session, rules: RulesConfig, public_url: str, username: str,
                      password: str) -> str:
    """Subscribe; one line saying what B1 now sends where."""
    entities = watched_entities(rules)
    if not entities:
        raise ConfigurationError("no enabled rule watches a B1 entity set: there is nothing to subscribe to")
    url = join(public_url, B1_EVENTS_PATH)
    outcome = subscribe(session, url, entities, username, password)
    return f"B1 webhook subscription {webhook_id(url)} {outcome}: {', '.join(entities)} -> {url}"


def setup_b1_webhooks_command(args: argparse.Namespace) -> int:
    """Uses the pipeline's settings: the SapB1Resource's login, B1TWILIO_PUBLIC_URL, the webhook credentials."""
    from b1twilio_pipeline.b1.resource import SapB1Resource

    configured = current()
    public_url = configured.require("b1twilio_public_url", "the receiver B1 posts its webhooks to")
    username = configured.require("b1_webhook_username", "the user B1's webhooks authenticate with")
    password = configured.require("b1_webhook_password", "the password B1's webhooks authenticate with")
    rules = load_rules(configured.b1twilio_config)
    session = SapB1Resource().session()
    try:
        print(setup_b1_webhooks(session, rules, public_url, username, password))
    finally:
        session.logout()
    return 0
