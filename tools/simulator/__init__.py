"""The December campaign simulator: plays the upstream core-banking system and the customers
against a running Arrears system, through its public contract only (Kafka topics, HTTP APIs, the
partner stand-in's webhooks), on the controlled clock.

    python -m tools.simulator run --customers 10000 --days 45 --seed 7 --out .stack/campaign
    python -m tools.simulator report --out .stack/campaign
    python -m tools.simulator reconcile --out .stack/campaign
"""
