"""What the bureau talks to outside its database: the ledger (reconciliation), the archive and
the bureau's drop folder and endpoint."""
