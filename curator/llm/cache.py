"""A content-addressed response cache, stored in the corpus so it travels with the build.

Key: SHA-256 of (rendered chat messages, model, sampling parameters). The rendered
messages hold the triplet, the language and the prompt text, so a new prompt version
misses only where its rendered text differs. One JSON file per key under
``cache/llm/<ab>/<key>.json``, written atomically as each request finishes: a killed
run keeps every answer it paid for, and a re-run makes no call for them.

Entries hold no endpoint URL, header or key: only what the model was asked and said.
"""

from __future__ import annotations

import hashlib
import json
import logging

from curator.storage import Corpus

log = logging.getLogger(__name__)
CACHE_DIR = "cache/llm"
FORMAT = 1


def cache_key(messages: list[dict], model: str, params: dict) -> str:
    payload = json.dumps({"messages": messages, "model": model, "params": params}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class ResponseCache:
    def __init__(self, corpus: Corpus):
        self.corpus = corpus
        self._known: set[str] | None = None

    def _rel(self, key: str) -> str:
        return f"{CACHE_DIR}/{key[:2]}/{key}.json"

    def keys(self) -> set[str]:
        """Every key present, listed once (one listing beats a stat per key on object storage)."""
        if self._known is None:
            self._known = {
                p.rsplit("/", 1)[-1].removesuffix(".json")
                for p in self.corpus.find(CACHE_DIR)
                if p.endswith(".json") and not p.rsplit("/", 1)[-1].startswith(".tmp-")
            }
        return self._known

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def get(self, key: str) -> dict | None:
        if key not in self:
            return None
        try:
            entry = self.corpus.read_json(self._rel(key))
        except (OSError, ValueError) as exc:
            log.warning("cache entry %s unreadable (%s): asking again", key[:12], exc)
            return None
        return entry if entry.get("format") == FORMAT and entry.get("key") == key else None

    def put(self, key: str, entry: dict) -> None:
        self.corpus.write_json(self._rel(key), {**entry, "format": FORMAT, "key": key})
        self.keys().add(key)
