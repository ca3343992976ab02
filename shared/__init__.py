"""Arrears' common machinery: the event envelope, Kafka and outbox plumbing, the clock, settings,
database helpers, logging and metrics. No business rule lives here."""
