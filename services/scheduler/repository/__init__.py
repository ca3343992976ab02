"""All of the scheduler's SQL: accounts and what decisions read, timers and decisions,
strategy versions."""
