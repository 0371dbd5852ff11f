"""`Problem`: one bad input (a file, a row, a zip member), named with what is wrong.

Bad input never stops a run: ttrv_core.inputs.dataset (the dataset) and ttrv_core.inputs.uploads
(files and zips copied in) each return a Problem for it, and the good items still
run; a file that fails only when the run reads it is left out then, named by a
Problem too (ttrv_core.sampling.prompt_cache; events.RunEnd.problems). It lives here, apart
from all of them, so that each can import it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"
