"""Secrets never leave in what we write: Hugging Face tokens, and credentials inside URLs.

- `scrub_url(url)`: the URL without its credentials: `https://user:pass@host` -> `https://***@host`, and the value
  of every query or fragment parameter whose name says it is a secret (`api-key=`, `apikey=`, `key=`, `token=`,
  `access_token=`, `sig=`, `password=`, ...) replaced by `***`. The rest is kept as written, so the URL still
  says which server was used.
- `scrub(text)`: every URL inside the text scrubbed, and every Hugging Face token we know of (HF_TOKEN, the login
  cache) or anything shaped like one replaced. Applied to every card, every Hub error and every error the CLI
  prints.
- `scrub_config(value)`: the same over every string of a config (nested dicts and lists), for the
  `config.resolved.yaml` of every stage and the settings a stage records beside its output.
"""

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

HF_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{8,}")
# A URL inside text: a scheme, then anything up to white space, a quote, a bracket or a backtick (cards put URLs in
# backticks and tables). Linear: one character class.
URL_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]+")
# Parameter names that carry a secret: api-key, apikey, api_key, key, token, access_token, hf_token, secret,
# password, auth, sig/signature (signed URLs), credential, session.
SECRET_PARAM_RE = re.compile(r"key|token|secret|passw|pwd|auth|sig|credential|session", re.IGNORECASE)
MASK = "***"


def scrub_url(url: str) -> str:
    """The URL with its user info and secret-named parameters masked; anything that is not a URL as it is."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a malformed IPv6 host: mask what looks like user info anyway
        return re.sub(r"//[^/@\s]*@", f"//{MASK}@", url)
    netloc = parts.netloc
    if "@" in netloc:  # the user name alone may be a token (https://<token>@host), so both go
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query, fragment = _scrub_params(parts.query), _scrub_params(parts.fragment)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url  # nothing secret: the URL exactly as written
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _scrub_params(params: str) -> str:
    """`a=1&api-key=s3cret` -> `a=1&api-key=***`, kept as written otherwise (no re-encoding)."""
    if "=" not in params:
        return params
    out = []
    for pair in re.split(r"([&;])", params):
        name, equals, value = pair.partition("=")
        out.append(f"{name}={MASK}" if equals and value and SECRET_PARAM_RE.search(name) else pair)
    return "".join(out)


def scrub_urls(text: str) -> str:
    """Every URL inside the text scrubbed (punctuation that ends a sentence or a bracket is not part of it)."""
    if "://" not in text:
        return text

    def one(match: re.Match) -> str:
        url = match.group()
        core = url.rstrip(".,;:!?)]}")
        return scrub_url(core) + url[len(core) :]

    return URL_RE.sub(one, text)


def scrub(text: str) -> str:
    """The text with credentials in URLs and every Hugging Face token we know of (or shaped like one) masked."""
    text = scrub_urls(text)
    for secret in sorted(known_tokens(), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return HF_TOKEN_RE.sub("hf_***", text)


def scrub_config(value):
    """A config (dicts, lists, scalars) with every URL's credentials masked in every string."""
    if isinstance(value, str):
        return scrub_urls(value)
    if isinstance(value, dict):
        return {key: scrub_config(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_config(item) for item in value)
    return value


def known_tokens() -> set[str]:
    """Tokens from the environment and the login cache, read without huggingface_hub's refresh (no network)."""
    tokens = {os.environ.get(name, "") for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    try:
        from huggingface_hub import constants  # only when the hub is used

        for path in (constants.HF_TOKEN_PATH,):
            if Path(path).is_file():
                tokens.add(Path(path).read_text(encoding="utf-8").strip())
    except (ImportError, OSError, UnicodeDecodeError):
        pass
    return {t for t in tokens if len(t) >= 8}  # a short value would scrub ordinary words
