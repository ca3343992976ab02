"""The bureau's HTTP API: cycles, their files, and each account's reports."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import text

from shared.auth import require
from shared.http import problem

READ = [Depends(require("bureau:read"))]


def _json(rows: Any) -> Any:
    return JSONResponse(json.loads(json.dumps(rows, default=str)))


def router() -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["bureau"])

    @api.get("/cycles", summary="Every reporting cycle and its status", dependencies=READ)
    async def cycles(request: Request) -> Any:
        async with request.app.state.runtime.uow() as uow:
            rows = await uow.session.execute(
                text("SELECT * FROM cycle ORDER BY started_at DESC, cycle_id DESC")
            )
            return _json([dict(r) for r in rows.mappings()])

    @api.get(
        "/cycles/{cycle_id}",
        summary="One cycle: counts submitted, corrected and blocked (by reason), and its files",
        responses={404: {"description": "No such cycle"}},
        dependencies=READ,
    )
    async def cycle(cycle_id: str, request: Request) -> Any:
        async with request.app.state.runtime.uow() as uow:
            found = (
                (
                    await uow.session.execute(
                        text("SELECT * FROM cycle WHERE cycle_id = :c"), {"c": cycle_id}
                    )
                )
                .mappings()
                .first()
            )
            if found is None:
                return problem(404, "Not Found", "no such cycle")
            kinds = await uow.session.execute(
                text("""
                    SELECT kind, country, count(*) AS n FROM report WHERE cycle_id = :c
                    GROUP BY kind, country ORDER BY kind, country
                """),
                {"c": cycle_id},
            )
            reasons = await uow.session.execute(
                text("""
                    SELECT reason, count(*) AS n
                    FROM report, unnest(reasons) AS reason
                    WHERE cycle_id = :c AND kind = 'blocked'
                    GROUP BY reason ORDER BY reason
                """),
                {"c": cycle_id},
            )
            files = await uow.session.execute(
                text("""
                    SELECT file_id, country, format, records, created_at, submitted_at, submission
                    FROM bureau_file WHERE cycle_id = :c ORDER BY country
                """),
                {"c": cycle_id},
            )
            return _json(
                dict(found)
                | {
                    "counts": [dict(r) for r in kinds.mappings()],
                    "blocked_by_reason": {r.reason: r.n for r in reasons},
                    "files": [dict(r) for r in files.mappings()],
                }
            )

    @api.get(
        "/cycles/{cycle_id}/file",
        summary="A cycle's archived file (country US: Metro 2; CN: JSON Lines)",
        responses={404: {"description": "No such file"}},
        dependencies=READ,
    )
    async def file(cycle_id: str, request: Request, country: str = "US") -> Any:
        async with request.app.state.runtime.uow() as uow:
            path = await uow.session.scalar(
                text("SELECT path FROM bureau_file WHERE cycle_id = :c AND country = :k"),
                {"c": cycle_id, "k": country},
            )
        if path is None or not await asyncio.to_thread(Path(path).exists):
            return problem(404, "Not Found", "no file for this cycle and country")
        return FileResponse(path, media_type="text/plain", filename=Path(path).name)

    @api.get(
        "/accounts/{account_id}/reports",
        summary="Each cycle's record for an account, with its gate results",
        dependencies=READ,
    )
    async def reports(account_id: str, request: Request) -> Any:
        async with request.app.state.runtime.uow() as uow:
            rows = await uow.session.execute(
                text("""
                    SELECT cycle_id, country, kind, status, compliance_code, reasons, file_id,
                           ack, line
                    FROM report WHERE account_id = :a ORDER BY cycle_id
                """),
                {"a": account_id},
            )
            return _json([dict(r) for r in rows.mappings()])

    return api
