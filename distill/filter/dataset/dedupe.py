"""Prompt dedupe: exact (normalized text hash) and near-duplicate (MinHash LSH over word shingles).

Dedupe is by PROMPT, not by row: every sample of a duplicate prompt goes, and the first prompt seen in input
order is the one kept. Each prompt is compared with the prompts kept so far only, so the kept set never holds
two prompts judged duplicates of each other, and the answer for a prompt does not depend on later input.

Exact: the text is NFKC-normalized, case-folded and its whitespace collapsed, then hashed (64-bit blake2b).
Punctuation is kept on purpose: in math, "What is 2+3?" and "What is 2-3?" differ only by a symbol.

Near: a prompt's tokens are words (`\\w+`) and single symbols (so `x^2+1` keeps its operators), from the same
normalized text. Its shingles are runs of `shingle` consecutive tokens (a text with fewer tokens is one
shingle), hashed to 32 bits. `num_perm` min-hashes (multiply-add-shift hashes, vectorized in numpy over a
batch) estimate the Jaccard similarity of two shingle sets: the fraction of equal min-hashes.

- Default shingle size 2, not the 5 of web-document dedupe: prompts are short. A one-word change in a
  40-word prompt touches `shingle` shingles, leaving a Jaccard similarity of about 0.90 with bigrams, 0.85 with
  trigrams and 0.76 with 5-grams, so 5-grams would miss exactly the near-duplicates meant here.
- LSH finds candidates, then the candidate is verified: a prompt is a near duplicate when its estimated
  similarity to a kept prompt is at least `threshold`, which makes the threshold mean what it says (LSH alone
  is a soft S-curve: with datasketch's 9 bands x 13 rows for 0.8, a pair at similarity 0.7 is still dropped
  8% of the time and one at 0.9 is missed 7% of the time).
- Bands x rows: the most rows per band (so band keys are specific and chance candidates rare) such that the
  bands a pair at the threshold needs to share at least one band with probability >= 0.95 fit in num_perm.
  For 0.8 and 128: 13 bands of 7 rows (a pair at 0.8 becomes a candidate with p = 0.953, at 0.9 with
  p = 0.9998, at 0.5 with p = 0.10 and then fails the verification).
- The LSH index maps a band key (a 64-bit hash of the band's rows, salted by band number) to the first kept
  prompt with that key: an open-addressing hash table in numpy (`BandIndex`), probed a batch at a time. A
  dict did the same at twice the memory, and both slow down alike as they outgrow the CPU caches. The
  verification keeps 16 bits of each min-hash of every kept prompt (two different values agree by chance 1 time
  in 65536), in fixed-size numpy blocks.

Memory grows with the number of distinct prompts only: a decision per prompt id, and the exact hash, band keys
and signature of each kept prompt, about 1 KB per kept prompt in all (measured: 100k prompts of 30 words in
2.3 s of one core and ~200 MB, 1M in 26 s and ~0.9 GB). The hash constants come from a fixed seed, so the
same input always gives the same decisions.

Templated synthetic sources (reasoning-gym) often differ by one number in a long fixed text: those are near
duplicates by this definition; use `exact_only=True` for them.
"""

import hashlib
import math
import re
import unicodedata
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from distill.errors import DistillError

EXACT = "duplicate_exact"
NEAR = "duplicate_near"
TOKEN_RE = re.compile(r"\w+|\S")  # a word, or any single non-space character that is not part of one
SEED = 20250101  # fixed: the hash functions, hence the decisions, are the same on every run
BAND_RECALL = 0.95  # probability that a pair at the threshold shares a band (becomes a candidate)
# Min-hashing a batch builds a (num_perm x shingles) uint64 matrix; this many shingles per step keeps each
# temporary near 32 MiB whatever the batch size.
SHINGLES_PER_STEP = 32768
BLOCK_ROWS = 65536  # kept signatures are stored in blocks of this many rows: no reallocation as they grow


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Why a prompt is dropped, and the earlier (kept) prompt it duplicates."""

    reason: str  # EXACT or NEAR
    of_prompt_id: str
    similarity: float  # 1.0 for exact, the estimated Jaccard similarity for near


def normalize(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: the text exact dedupe hashes and near dedupe tokenizes."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def choose_bands(threshold: float, num_perm: int, recall: float = BAND_RECALL) -> tuple[int, int]:
    """(bands, rows): the most rows per band whose needed bands still fit in num_perm (see the module doc)."""
    for rows in range(num_perm, 0, -1):
        share = threshold**rows  # probability that a pair at the threshold agrees on a whole band
        if share >= 1.0:
            return 1, rows
        bands = math.ceil(math.log1p(-recall) / math.log1p(-share)) if share > 0 else num_perm + 1
        if bands * rows <= num_perm:
            return bands, rows
    raise DistillError(f"num_perm {num_perm} is too small for threshold {threshold}: use num_perm of 64 or more")


class PromptDeduper:
    """Decides, prompt by prompt in input order, whether a prompt duplicates one kept before it."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, shingle: int = 2, exact_only: bool = False):
        if not 0 < threshold <= 1:
            raise DistillError(f"dedupe threshold must be in (0, 1], got {threshold}: pass a Jaccard similarity")
        if num_perm < 2:
            raise DistillError(f"num_perm must be at least 2, got {num_perm}: the default is 128")
        if shingle < 1:
            raise DistillError(f"shingle size must be at least 1 word, got {shingle}: the default is 2")
        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle = shingle
        self.exact_only = exact_only
        # A near duplicate needs at least this many of num_perm equal min-hashes.
        self.min_agree = math.ceil(threshold * num_perm - 1e-9)
        self.bands, self.rows = choose_bands(threshold, num_perm)

        rng = np.random.default_rng(SEED)
        draw = lambda *shape: rng.integers(0, 2**64, size=shape, dtype=np.uint64)  # noqa: E731
        self._perm_mul = draw(num_perm) | np.uint64(1)  # odd multipliers: h(x) = (a*x + b) mod 2^64 >> 32
        self._perm_add = draw(num_perm)
        self._shingle_mul = draw(shingle) | np.uint64(1)  # combines token hashes into a shingle hash
        self._row_mul = draw(self.rows) | np.uint64(1)  # combines a band's rows into its key
        self._band_salt = draw(self.bands)  # so equal rows in two different bands give different keys

        self._decisions: dict[str, Duplicate | None] = {}  # every prompt id seen: the answer given the first time
        self._kept_ids: list[str] = []  # kept prompt ids, by kept index
        self._exact: dict[int, int] = {}  # exact hash -> kept index
        self._lsh = BandIndex()  # band key -> kept index of the first kept prompt with it
        self._blocks: list[np.ndarray] = []  # 16-bit signatures of kept prompts, BLOCK_ROWS rows per block
        self.counts = {"unique": 0, EXACT: 0, NEAR: 0}  # per prompt, not per row

    def check(self, prompt_id: str, text: str) -> Duplicate | None:
        """None for a new prompt (now kept), else why it is a duplicate. Same prompt id, same answer.

        One prompt at a time costs ~4x the time of `check_batch` (numpy's per-call overhead): batch when you can.
        """
        if prompt_id in self._decisions:  # another sample of a prompt already decided
            return self._decisions[prompt_id]
        return self.check_batch([(prompt_id, text)])[0]

    def check_batch(self, items: Iterable[tuple[str, str]]) -> list[Duplicate | None]:
        """`check` for many (prompt_id, text) pairs at once, min-hashing them together (much faster).

        The answers are exactly those of calling `check` on each pair in order.
        """
        items = list(items)
        # The first occurrence of each prompt id not decided before: only those need hashing.
        new: dict[str, str] = {}
        for prompt_id, text in items:
            if prompt_id not in self._decisions and prompt_id not in new:
                new[prompt_id] = text
        if new:
            self._decide(list(new), [normalize(t) for t in new.values()])
        return [self._decisions[prompt_id] for prompt_id, _ in items]

    def hash_batch(self, texts: list[str]) -> "PromptHashes":
        """The hashes of raw prompt texts that decisions need: pure and parallel (no state is read or written).

        Workers of a cluster compute these; `check_hashed` then decides in input order on one machine.
        """
        normalized = [normalize(t) for t in texts]
        exact = np.asarray(
            [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest()) for t in normalized], dtype=np.uint64
        )
        if self.exact_only or not texts:
            return PromptHashes(exact, None, None)
        signatures = self._signatures(normalized)
        # 16 bits of each min-hash suffice to compare (see the module doc).
        return PromptHashes(exact, self._band_keys(signatures), signatures.astype(np.uint16))

    def check_hashed(self, prompt_ids: list[str], hashes: "PromptHashes") -> list[Duplicate | None]:
        """`check_batch` for prompts hashed by `hash_batch` (here or elsewhere): the same answers, in order."""
        first: dict[str, int] = {}
        for i, prompt_id in enumerate(prompt_ids):
            if prompt_id not in self._decisions and prompt_id not in first:
                first[prompt_id] = i
        if first:
            rows = list(first.values())
            exact = hashes.exact[rows].tolist()
            bands = None
            if hashes.keys is not None and not self.exact_only:
                bands = self._bands_from(hashes.keys[rows], hashes.signatures[rows])
            self._decide_hashed(list(first), exact, bands, {i: i for i in range(len(rows))})
        return [self._decisions[prompt_id] for prompt_id in prompt_ids]

    def _decide(self, prompt_ids: list[str], texts: list[str]) -> None:
        exact_keys = [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest()) for t in texts]
        # Min-hash only the prompts that are not exact duplicates of an earlier batch (the common case is cheap
        # to over-include: an exact duplicate within this batch is hashed and then caught by the exact check).
        need = [i for i, key in enumerate(exact_keys) if key not in self._exact]
        row_of = {i: row for row, i in enumerate(need)}
        bands = self._bands_of([texts[i] for i in need]) if not self.exact_only and need else None
        self._decide_hashed(prompt_ids, exact_keys, bands, row_of)

    def _decide_hashed(
        self, prompt_ids: list[str], exact_keys: list[int], bands: "_BatchBands | None", row_of: dict[int, int]
    ) -> None:
        # Sequential on purpose: a prompt may duplicate one kept earlier in this same batch.
        batch_keys: dict[int, int] = {}  # band keys met more than once in this batch -> first kept prompt
        kept_rows: list[int] = []
        for i, prompt_id in enumerate(prompt_ids):
            kept = self._exact.get(exact_keys[i])
            if kept is not None:
                self._drop(prompt_id, Duplicate(EXACT, self._kept_ids[kept], 1.0))
                continue
            if bands is None:
                self._keep(prompt_id, exact_keys[i], None)
                continue
            row = row_of[i]
            # Most prompts share no band key with anything: nothing to verify, nothing to remember per key.
            may_match = bands.may_match[row]
            if may_match:
                keys, owners = bands.keys[row].tolist(), bands.owners[row].tolist()
                duplicate = self._near(bands.signatures[row], keys, owners, batch_keys)
                if duplicate is not None:
                    self._drop(prompt_id, duplicate)
                    continue
            kept = self._keep(prompt_id, exact_keys[i], bands.signatures[row])
            kept_rows.append(row)
            if may_match:
                for key, owner in zip(keys, owners, strict=True):
                    if owner < 0:
                        batch_keys.setdefault(key, kept)  # the first prompt with a band key keeps it
        if kept_rows:
            self._register(bands, kept_rows)

    def _bands_of(self, texts: list[str]) -> "_BatchBands":
        """Signatures and band keys of a batch, and what each key is owned by or shared with."""
        signatures = self._signatures(texts)
        # 16 bits of each min-hash suffice to compare (see the module doc).
        return self._bands_from(self._band_keys(signatures), signatures.astype(np.uint16))

    def _bands_from(self, keys: np.ndarray, signatures: np.ndarray) -> "_BatchBands":
        """What each band key of a batch is owned by (in the index) or shared with (in the batch)."""
        owners = self._lsh.lookup(keys.ravel()).reshape(keys.shape)
        _, inverse, counts = np.unique(keys.ravel(), return_inverse=True, return_counts=True)
        repeated = (counts[inverse] > 1).reshape(keys.shape)  # the key of another prompt of this batch too
        may_match = (owners >= 0).any(axis=1) | repeated.any(axis=1)
        return _BatchBands(signatures, keys, owners, may_match.tolist())

    def _near(
        self, signature: np.ndarray, keys: list[int], owners: list[int], batch_keys: dict[int, int]
    ) -> Duplicate | None:
        """The first kept prompt sharing a band whose estimated similarity reaches the threshold."""
        tried: set[int] = set()
        for key, owner in zip(keys, owners, strict=True):
            kept = owner if owner >= 0 else batch_keys.get(key)
            if kept is None or kept in tried:
                continue
            tried.add(kept)
            stored = self._blocks[kept // BLOCK_ROWS][kept % BLOCK_ROWS]
            agree = int(np.count_nonzero(stored == signature))
            if agree >= self.min_agree:
                return Duplicate(NEAR, self._kept_ids[kept], agree / self.num_perm)
        return None

    def _register(self, bands: "_BatchBands", kept_rows: list[int]) -> None:
        """Add the new band keys of this batch's kept prompts to the index, each owned by its first one."""
        first_kept = len(self._kept_ids) - len(kept_rows)  # kept indices of this batch are consecutive
        keys = bands.keys[kept_rows]
        owners = np.broadcast_to(np.arange(first_kept, first_kept + len(kept_rows))[:, None], keys.shape)
        new = bands.owners[kept_rows] < 0
        keys, owners = keys[new], owners[new]  # row-major: earlier prompts first
        keys, first = np.unique(keys, return_index=True)
        self._lsh.insert(keys, owners[first])

    def _keep(self, prompt_id: str, exact_key: int, signature: np.ndarray | None) -> int:
        kept = len(self._kept_ids)
        self._kept_ids.append(prompt_id)
        self._exact[exact_key] = kept
        if signature is not None:
            if kept % BLOCK_ROWS == 0:
                self._blocks.append(np.empty((BLOCK_ROWS, self.num_perm), dtype=np.uint16))
            self._blocks[-1][kept % BLOCK_ROWS] = signature
        self._decisions[prompt_id] = None
        self.counts["unique"] += 1
        return kept

    def _drop(self, prompt_id: str, duplicate: Duplicate) -> None:
        self._decisions[prompt_id] = duplicate
        self.counts[duplicate.reason] += 1

    def _signatures(self, texts: list[str]) -> np.ndarray:
        """(len(texts), num_perm) uint32 min-hash signatures of normalized texts."""
        k = self.shingle
        # Token hashes of all texts in one flat list, each text followed by k zeros so that a shingle never
        # spans two texts and a text shorter than k tokens (even an empty one) still has one, zero-padded.
        token_hashes: list[int] = []
        starts, counts = [], []
        for text in texts:
            tokens = TOKEN_RE.findall(text)
            starts.append(len(token_hashes))
            counts.append(max(len(tokens) - k + 1, 1))
            token_hashes.extend(map(zlib.crc32, map(str.encode, tokens)))
            token_hashes.extend([0] * k)
        flat = np.asarray(token_hashes, dtype=np.uint64)
        # shingle hash at position p = sum_j flat[p + j] * c_j (mod 2^64), top 32 bits.
        width = len(flat) - k + 1
        combined = np.zeros(width, dtype=np.uint64)
        for j in range(k):
            combined += flat[j : j + width] * self._shingle_mul[j]
        counts_arr = np.asarray(counts, dtype=np.int64)
        first = np.cumsum(counts_arr) - counts_arr  # where each text's shingles start in `positions`
        positions = np.repeat(np.asarray(starts, dtype=np.int64) - first, counts_arr) + np.arange(counts_arr.sum())
        shingles = combined[positions] >> np.uint64(32)

        # Min over each text's shingles of h_i(x) = (a_i * x + b_i) mod 2^64 >> 32, a few texts at a time.
        out = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        text = 0
        while text < len(texts):
            end = text + 1
            budget = counts[text]
            while end < len(texts) and budget + counts[end] <= SHINGLES_PER_STEP:
                budget += counts[end]
                end += 1
            lo, hi = first[text], first[end - 1] + counts[end - 1]
            # (num_perm, shingles) layout: reducing along the contiguous axis is several times faster.
            hashed = self._perm_mul[:, None] * shingles[None, lo:hi]
            hashed += self._perm_add[:, None]
            hashed >>= np.uint64(32)
            out[text:end] = np.minimum.reduceat(hashed, first[text:end] - lo, axis=1).T
            text = end
        return out

    def _band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """(len, bands) uint64 keys: each band's rows combined into one 64-bit hash, salted by band number."""
        used = signatures[:, : self.bands * self.rows].astype(np.uint64)
        banded = used.reshape(len(signatures), self.bands, self.rows)
        return (banded * self._row_mul[None, None, :]).sum(axis=2, dtype=np.uint64) + self._band_salt[None, :]


@dataclass(slots=True)
class PromptHashes:
    """`PromptDeduper.hash_batch` of some texts: exact keys, and for near dedupe band keys and signatures."""

    exact: np.ndarray  # (n,) uint64
    keys: np.ndarray | None  # (n, bands) uint64
    signatures: np.ndarray | None  # (n, num_perm) uint16


@dataclass(slots=True)
class _BatchBands:
    """The near-dedupe view of one batch: a row per prompt needing it."""

    signatures: np.ndarray  # (rows, num_perm) uint16
    keys: np.ndarray  # (rows, bands) uint64 band keys
    owners: np.ndarray  # (rows, bands) kept index owning each key before this batch, -1: none
    may_match: list[bool]  # some key has an owner or appears twice in the batch: worth a look


class BandIndex:
    """Band key -> kept index of the first prompt with that key, looked up and filled a batch at a time.

    An open-addressing hash table (linear probing, at most half full) in one numpy array of (key, owner)
    records, so that a probe reads one cache line. A dict would do the same, but with 13 keys per prompt it
    costs about 75 bytes a key; this costs 24 to 48, and the probes of a whole batch run in numpy.
    """

    RECORD = np.dtype([("key", np.uint64), ("owner", np.int32)])
    EMPTY = -1  # owner of an empty slot

    def __init__(self, capacity: int = 1 << 16):
        self._table = self._empty(capacity)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """The owner of each key, -1 where the key is absent."""
        found = np.full(len(keys), -1, dtype=np.int64)
        todo = np.arange(len(keys))
        slots = self._home(keys)
        while todo.size:
            records = self._table[slots]
            occupied = records["owner"] != self.EMPTY
            hit = occupied & (records["key"] == keys[todo])
            found[todo[hit]] = records["owner"][hit]
            go_on = occupied & ~hit  # another key in this slot: probe the next one; an empty slot: absent
            todo, slots = todo[go_on], (slots[go_on] + 1) & (len(self._table) - 1)
        return found

    def insert(self, keys: np.ndarray, owners: np.ndarray) -> None:
        """Add keys that are distinct and not in the table yet."""
        if 2 * (self.size + len(keys)) > len(self._table):
            self._grow(self.size + len(keys))
        table = self._table
        todo = np.arange(len(keys))
        slots = self._home(keys)
        while todo.size:
            free = table["owner"][slots] == self.EMPTY
            # Keys wanting the same free slot: each writes a mark there, the one whose mark stays takes it and
            # the others probe on (no sort needed; which one wins does not change any lookup).
            marks = -2 - np.arange(len(todo), dtype=np.int32)
            table["owner"][slots[free]] = marks[free]
            won = free & (table["owner"][slots] == marks)
            table["key"][slots[won]] = keys[todo[won]]
            table["owner"][slots[won]] = owners[todo[won]]
            todo, slots = todo[~won], (slots[~won] + 1) & (len(table) - 1)
        self.size += len(keys)

    def _home(self, keys: np.ndarray) -> np.ndarray:
        """The first slot to probe: the top bits of a multiplicative hash (capacity is a power of two)."""
        shift = np.uint64(64 - (len(self._table).bit_length() - 1))
        return ((keys * np.uint64(0x9E3779B97F4A7C15)) >> shift).astype(np.int64)

    def _empty(self, capacity: int) -> np.ndarray:
        table = np.zeros(capacity, dtype=self.RECORD)
        table["owner"] = self.EMPTY
        return table

    def _grow(self, needed: int) -> None:
        old = self._table[self._table["owner"] != self.EMPTY]
        capacity = len(self._table)
        while 2 * needed > capacity:
            capacity *= 2
        self._table = self._empty(capacity)
        self.size = 0
        self.insert(old["key"], old["owner"])
