"""The notifier service.

Sends requested contacts through partner channels and turns partner webhooks into events.
"""
