"""Fitted propensity models: ``python -m services.scheduler.models fit`` learns one from the
event history (the topics from their beginning) and writes it as data in the format the
scheduler reads; ``--publish`` stores and publishes it through the scheduler's API, where it
runs as a strategy variant's model (a challenger until it wins)."""
