"""The bureau's HTTP API: cycles, their files, and each account's reports."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, JSONResponse

from services.bureau.repository import cycles as store
from shared.auth import require
from shared.http import problem
from shared.service import Uow

READ = [Depends(require("bureau:read"))]


def _json(rows: Any) -> Any:
    return JSONResponse(json.loads(json.dumps(rows, default=str)))


def router() -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["bureau"])

    @api.get("/cycles", summary="Every reporting cycle and its status", dependencies=READ)
    async def cycles(uow: Uow) -> Any:
        return _json(await store.cycles(uow.session))

    @api.get(
        "/cycles/{cycle_id}",
        summary="One cycle: counts submitted, corrected and blocked (by reason), and its files",
        responses={404: {"description": "No such cycle"}},
        dependencies=READ,
    )
    async def cycle(cycle_id: str, uow: Uow) -> Any:
        found = await store.cycle_summary(uow.session, cycle_id)
        if found is None:
            return problem(404, "Not Found", "no such cycle")
        return _json(found)

    @api.get(
        "/cycles/{cycle_id}/file",
        summary="A cycle's archived file (country US: Metro 2; CN: JSON Lines)",
        responses={404: {"description": "No such file"}},
        dependencies=READ,
    )
    async def file(cycle_id: str, uow: Uow, country: str = "US") -> Any:
        path = await store.file_path(uow.session, cycle_id, country)
        if path is None or not await asyncio.to_thread(Path(path).exists):
            return problem(404, "Not Found", "no file for this cycle and country")
        return FileResponse(path, media_type="text/plain", filename=Path(path).name)

    @api.get(
        "/accounts/{account_id}/reports",
        summary="Each cycle's record for an account, with its gate results",
        dependencies=READ,
    )
    async def reports(account_id: str, uow: Uow) -> Any:
        return _json(await store.reports_of(uow.session, account_id))

    return api
