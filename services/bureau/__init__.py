"""The bureau service.

Reports delinquent accounts to the credit bureau behind compliance gates, and corrects them.
"""
