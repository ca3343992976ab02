import sys

from services.bureau.bootstrap import build
from services.bureau.settings import BureauSettings
from shared.main import main

sys.exit(main(BureauSettings, build))
