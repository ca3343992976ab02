"""``python -m services.desk [serve|migrate]``, and the admin commands:

    python -m services.desk users add USERNAME --role collector --name "Wang Fang" \
        --languages zh-CN --countries CN --skills voice      (the password is asked for)
    python -m services.desk users demo                       (dev and test only)
"""

import sys

from services.desk.bootstrap import build
from services.desk.settings import DeskSettings
from shared.main import main

if len(sys.argv) > 1 and sys.argv[1] == "users":
    from services.desk.admin import users

    sys.exit(users(sys.argv[2:]))
sys.exit(main(DeskSettings, build))
