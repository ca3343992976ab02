"""Files: a cycle's file streamed into the archive under its SHA-256 and made read-only, copied
once into the bureau's drop folder, or posted to its endpoint under an idempotency key."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import httpx


class Archive:
    """A file being written: lines go to ``<folder>/<name>.partial``, hashed on the way (a
    cycle's file may not fit in memory); :meth:`seal` names it by its checksum and makes it
    read-only, :meth:`discard` drops an empty one."""

    def __init__(self, folder: Path, name: str) -> None:
        self._folder = folder
        self._partial = folder / f"{name}.partial"
        self._digest = hashlib.sha256()
        self._out: BinaryIO | None = None

    async def __aenter__(self) -> Archive:
        await asyncio.to_thread(self._folder.mkdir, parents=True, exist_ok=True)
        self._out = self._partial.open("wb")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._out is not None:
            self._out.close()

    def write(self, lines: Iterable[str]) -> None:
        assert self._out is not None
        for line in lines:
            data = (line + "\n").encode()
            self._digest.update(data)
            self._out.write(data)

    @property
    def checksum(self) -> str:
        return self._digest.hexdigest()

    async def seal(self, name: str) -> Path:
        path = self._folder / name
        await asyncio.to_thread(os.chmod, self._partial, 0o444)  # archived immutably
        await asyncio.to_thread(self._partial.replace, path)
        return path

    async def discard(self) -> None:
        await asyncio.to_thread(self._partial.unlink)


def _drop(source: str, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(source).name
    if not target.exists():
        partial = target.with_suffix(".partial")
        shutil.copyfile(source, partial)
        partial.replace(target)
    return target.name


async def drop(source: str, folder: Path) -> str:
    """Copy a file into the drop folder once: the name carries the checksum, so the same name
    is the same content and a retried submission adds nothing. Returns the name."""
    return await asyncio.to_thread(_drop, source, folder)


async def post(
    http: httpx.AsyncClient, endpoint: str, path: str, file_id: str, fmt: str
) -> dict[str, str]:
    """Submit a file with ``Idempotency-Key: <checksum>``; returns the bureau's answer per
    record (account id -> accepted or rejected). Raises on any failure (retried next time)."""
    response = await http.post(
        endpoint,
        content=await asyncio.to_thread(Path(path).read_bytes),
        headers={
            "Idempotency-Key": file_id,
            "Content-Type": "application/octet-stream",
            "X-Arrears-Format": fmt,
        },
        timeout=30,
    )
    response.raise_for_status()
    return {
        str(item["account_id"]): str(item.get("status", "accepted"))
        for item in (response.json() or {}).get("records", [])
    }
