"""python -m tools.partners: run the partner stand-in."""

from __future__ import annotations

import argparse

import uvicorn

from services.notifier.settings import DEV_PARTNER_KEY, DEV_PARTNER_SECRET
from tools.partners.app import Standin, create_app


def main() -> None:
    parser = argparse.ArgumentParser(description="Arrears partner stand-in")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--notifier", default="http://127.0.0.1:8003")
    parser.add_argument("--partner", default="standin")
    parser.add_argument("--secret", default=DEV_PARTNER_SECRET)
    parser.add_argument("--api-key", default=DEV_PARTNER_KEY)
    args = parser.parse_args()
    standin = Standin(args.partner, args.notifier, args.secret, args.api_key)
    uvicorn.run(create_app(standin), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
