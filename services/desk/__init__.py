"""The desk service.

The bank's own collectors and field agents: work queues of calls and visits (the in-house
partner of the notifier), the agent desk, approvals, managers' live figures, and collector
training on simulated customers.
"""
