"""The unlink log: every `pulse identity unlink`, kept beside the archive (I/O).

Redis holds the suppressed pairs (``<id>:unlinked``), but a Redis lost and rebuilt from the
archive would merge the pairs again. The log keeps them: ``pulse reconcile`` reads it with the
pairs in Redis, and a rebuild (``pulse rebuild``) must call ``reapply_unlinks`` before it
replays the archive.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from core.time_format import iso_from_ms
from streaming.profiles.store import RedisProfileStore

logger = logging.getLogger(__name__)


def unlinks_file(archive_root: Path) -> Path:
    """``<archive>/identity/unlinks.jsonl``: one JSON object per unlink."""
    return archive_root / "identity" / "unlinks.jsonl"


def record_unlink(archive_root: Path, id_a: str, id_b: str, unlinked_at_ms: int) -> None:
    """Append an unlink to the log (flushed and synced: the command reports only after)."""
    path = unlinks_file(archive_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "ids": sorted((id_a, id_b)),
        "unlinked_at_ms": unlinked_at_ms,
        "unlinked_at": iso_from_ms(unlinked_at_ms),
    }
    with path.open("a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")
        log.flush()
        os.fsync(log.fileno())


def recorded_unlinks(archive_root: Path) -> dict[frozenset[str], int]:
    """Every logged pair -> its latest unlink time (ms); empty without a log."""
    path = unlinks_file(archive_root)
    if not path.exists():
        return {}
    pairs: dict[frozenset[str], int] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            pair = frozenset(entry["ids"])
            pairs[pair] = max(pairs.get(pair, 0), int(entry["unlinked_at_ms"]))
    return pairs


def reapply_unlinks(store: RedisProfileStore, archive_root: Path) -> int:
    """Write every logged unlink into Redis again (idempotent); the seam for ``pulse rebuild``.

    Run it before replaying the archive into a rebuilt Redis, so no unlinked pair merges again.
    """
    pairs = recorded_unlinks(archive_root)
    for pair, at_ms in pairs.items():
        id_a, id_b = sorted(pair)
        store.suppress_link(id_a, id_b, at_ms)
    logger.info("re-applied %d unlinks from %s", len(pairs), unlinks_file(archive_root))
    return len(pairs)
