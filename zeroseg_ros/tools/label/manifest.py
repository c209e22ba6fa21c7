"""The output folder's manifest (``zeroseg_label.json``): which job wrote it and which bags are finished.

A bag is written to ``NAME.partial`` and renamed to ``NAME`` once complete; only then is it listed here, so a
re-run keeps exactly the finished bags (of the same job, from unchanged inputs) and redoes the others.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from zeroseg_ros.core.errors import ZerosegError
from zeroseg_ros.tools.label.labeller import LabelSettings

MANIFEST = "zeroseg_label.json"
PARTIAL_SUFFIX = ".partial"


def job_signature(settings: LabelSettings) -> dict[str, Any]:
    """The settings as JSON values (what a finished bag was labelled with)."""
    return json.loads(json.dumps(asdict(settings), default=str))


def input_fingerprint(path: Path) -> dict[str, Any]:
    """Size and modification time of the bag's files: a changed input is labelled again."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {
        "bytes": sum(p.stat().st_size for p in files),
        "mtime_ns": max((p.stat().st_mtime_ns for p in files), default=0),
    }


class Manifest:
    def __init__(self, out: Path, settings: LabelSettings, overwrite: bool) -> None:
        self.out = out
        self.path = out / MANIFEST
        self.job = job_signature(settings)
        self.bags: dict[str, dict[str, Any]] = {}
        out.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            stored = json.loads(self.path.read_text())
            if stored.get("job") != self.job and not overwrite:
                raise ZerosegError(
                    f"{out} holds bags of another labelling job (other queries or settings, {self.path}); "
                    "choose another --out, or pass --overwrite to replace them"
                )
            if stored.get("job") == self.job:
                self.bags = stored.get("bags", {})
        elif any(p.is_dir() and not p.name.endswith(PARTIAL_SUFFIX) for p in out.iterdir()) and not overwrite:
            raise ZerosegError(
                f"{out} holds folders that no labelling job of this kind wrote (no {MANIFEST}); "
                "choose another --out, or pass --overwrite to write beside them"
            )
        for partial in out.glob(f"*{PARTIAL_SUFFIX}"):  # an interrupted job's unfinished bags: redone
            shutil.rmtree(partial, ignore_errors=True)

    def finished(self, name: str, source: Path) -> bool:
        entry = self.bags.get(name)
        return (
            entry is not None
            and entry.get("input") == str(source.resolve())
            and entry.get("fingerprint") == input_fingerprint(source)
            and (self.out / name).is_dir()
        )

    def partial_path(self, name: str) -> Path:
        """Where bag ``name`` is written until finished: in ``NAME.partial/``, under its final name (the bag's
        files are named after its folder)."""
        return self.out / f"{name}{PARTIAL_SUFFIX}" / name

    def start(self, name: str) -> Path:
        """The folder to write bag ``name`` into; a finished copy from an earlier run goes."""
        self.bags.pop(name, None)
        self._save()
        shutil.rmtree(self.out / name, ignore_errors=True)
        shutil.rmtree(self.partial_path(name).parent, ignore_errors=True)
        self.partial_path(name).parent.mkdir()
        return self.partial_path(name)

    def abandon(self, name: str) -> None:
        """Removes the unfinished output of bag ``name``."""
        shutil.rmtree(self.partial_path(name).parent, ignore_errors=True)

    def finish(self, name: str, source: Path, details: dict[str, Any]) -> None:
        os.replace(self.partial_path(name), self.out / name)
        self.partial_path(name).parent.rmdir()
        self.bags[name] = {"input": str(source.resolve()), "fingerprint": input_fingerprint(source), **details}
        self._save()

    def _save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"job": self.job, "bags": self.bags}, indent=2) + "\n")
        os.replace(temporary, self.path)
