"""Service fixtures shared across integration modules (a test may need two services at once)."""

from tests.integration.test_ledger import ledger  # noqa: F401 - a fixture, re-exported
from tests.integration.test_notifier import world  # noqa: F401 - a fixture, re-exported
