"""All of the ledger's SQL: the book, the evaluation and the read models."""
