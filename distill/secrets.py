"""Secrets never leave in what we write: Hugging Face tokens, and credentials inside URLs.

`scrub(text)` is applied to every card, every Hub error and every URL-bearing text we print or write; it replaces
the tokens we know of (HF_TOKEN, the login cache) and anything shaped like one.
"""

import os
import re
from pathlib import Path

HF_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{8,}")


def scrub(text: str) -> str:
    """The text with every Hugging Face token we know of (and anything shaped like one) replaced by ***."""
    for secret in sorted(known_tokens(), key=len, reverse=True):
        text = text.replace(secret, "***")
    return HF_TOKEN_RE.sub("hf_***", text)


def known_tokens() -> set[str]:
    """Tokens from the environment and the login cache, read without huggingface_hub's refresh (no network)."""
    tokens = {os.environ.get(name, "") for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    try:
        from huggingface_hub import constants

        for path in (constants.HF_TOKEN_PATH,):
            if Path(path).is_file():
                tokens.add(Path(path).read_text(encoding="utf-8").strip())
    except (ImportError, OSError, UnicodeDecodeError):
        pass
    return {t for t in tokens if len(t) >= 8}  # a short value would scrub ordinary words
