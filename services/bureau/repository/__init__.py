"""All of the bureau's SQL: accounts' reporting state, cycles, records and files."""
