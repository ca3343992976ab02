"""The ledger service.

System of record for what each customer owes: accounts, instalments, payments, delinquency, plans
and promises.
"""
