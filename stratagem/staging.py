"""Write a run directory into a temporary sibling and move it into place only when complete:
an interrupted or failed run leaves nothing half-written where the user looks."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stratagem.errors import StratagemError


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory next to `final`; on success it replaces `final`."""
    if final.exists() and not final.is_dir():
        raise StratagemError(f"--out {final} exists and is not a directory; choose another path")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
