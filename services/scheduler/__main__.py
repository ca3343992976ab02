import sys

from services.scheduler.bootstrap import build
from services.scheduler.settings import SchedulerSettings
from shared.main import main

sys.exit(main(SchedulerSettings, build))
