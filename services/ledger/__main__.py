import sys

from services.ledger.bootstrap import build
from services.ledger.settings import LedgerSettings
from shared.main import main

sys.exit(main(LedgerSettings, build))
