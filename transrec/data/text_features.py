"""Features computed from item texts alone, with no model: TF-IDF rows (a training-free heuristic's
features, the zero-shot lexical term's, and what a content-shifted item hold-out clusters on)."""

from __future__ import annotations

import math
import re
from collections import Counter

import torch
import torch.nn.functional as F

_WORD = re.compile(r"[a-z0-9]+")
#: at most this many cells in the dense TF-IDF matrix (64M floats, 256 MB): a large catalogue keeps fewer terms
MAX_CELLS = 2**26


def tfidf_features(texts: list[str | None], max_features: int = 8192) -> torch.Tensor:
    """TF-IDF rows (sublinear tf, smooth idf, unit norm) for texts indexed 1..n; row 0 and empty texts are 0.

    The vocabulary keeps the `max_features` terms found in the most items (dense rows stay small), fewer
    on a catalogue so large that the rows would pass `MAX_CELLS` (ml-25m's 62k movies: about 1,100 terms;
    the terms dropped first are those of one item, which never match another)."""
    docs = [_WORD.findall((t or "").lower()) for t in texts]
    df = Counter(w for doc in docs for w in set(doc))
    n = len(docs)
    cap = max(256, min(max_features, MAX_CELLS // (n + 1)))
    vocab = {w: j for j, (w, _) in enumerate(sorted(df.items(), key=lambda kv: (-kv[1], kv[0]))[:cap])}
    out = torch.zeros(n + 1, max(len(vocab), 1))
    idf = {w: math.log((1 + n) / (1 + df[w])) + 1.0 for w in vocab}
    for i, doc in enumerate(docs, start=1):
        for w, c in Counter(doc).items():
            if w in vocab:
                out[i, vocab[w]] = (1.0 + math.log(c)) * idf[w]
    return F.normalize(out, dim=-1)
