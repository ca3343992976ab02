import sys

from services.notifier.bootstrap import build
from services.notifier.settings import NotifierSettings
from shared.main import main

sys.exit(main(NotifierSettings, build))
