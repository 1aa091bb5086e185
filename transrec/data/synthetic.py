"""A generated multimodal world: the embedded default dataset.

Deterministic from a seed and written in the canonical dataset folder format, so every
part of the library (ID and content encoders, transfer, profile tasks, cross-domain) can be
exercised offline and in seconds.

World model, in short:
- `num_topics` latent topics on a ring. Each topic owns a vocabulary of pseudo-words and a
  visual style (hue, shape, texture); all topics share common filler words.
- Each domain has its own items from every topic. Inside a (domain, topic) the items have a
  cyclic latent order; an item's content drifts smoothly with that order (its words come from
  a sliding window of the topic vocabulary, its shape moves around a circle), so neighbours in
  the order look alike and content models can see the sequential structure too.
- Each item has a fixed list of successors: mostly the next items in the latent order, now and
  then one from the neighbouring topic. Popularity inside a topic is Zipf-like.
- A user has a Dirichlet taste over topics concentrated on 1-2 of them, which drifts to a
  neighbouring topic now and then. Next item: with `successor_prob` one of the unseen successors
  of the previous item, else taste x popularity. No item repeats within a user.
- Users live in a primary domain; a `cross_domain_share` of them continue, later in time, in a
  second domain with the same taste.
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from transrec.errors import ConfigError, DataError

SHAPES = ("circle", "square", "triangle", "cross", "stripes", "diamond", "ring", "checker")
TEXTURES = ("plain", "grain", "lines", "dots")
FILLERS = (
    "the", "a", "best", "new", "with", "for", "and", "of", "great", "classic", "top", "my",
    "our", "very", "simple", "daily", "fresh", "good", "small", "big", "edition", "set",
    "pack", "style", "one", "more", "just", "all", "plus", "really",
)
_ONSETS = tuple("bdfgklmnprstvz") + ("br", "dr", "kr", "st", "tr", "pl")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "", "", "n", "r", "l", "s", "m")
_OUTPUTS = ("interactions.csv", "items.csv", "users.csv", "world.json", "DESCRIPTION.md", "images")
_DAY = 86_400


@dataclass
class WorldConfig:
    """Knobs of the generated world; defaults give a CPU-demo-sized dataset (~25k events)."""

    seed: int = 0
    num_users: int = 1000
    items_per_domain: int = 300
    domains: tuple[str, ...] = ("A", "B")
    num_topics: int = 8
    min_len: int = 10  # total interactions per user, both domains together
    max_len: int = 40
    image_size: int = 32  # square RGB PNGs
    text_share: float = 0.5  # share of text-modality items per domain (the rest are image)
    words_per_topic: int = 30
    text_words: tuple[int, int] = (6, 12)  # word count range of a text item's description
    caption_words: tuple[int, int] = (2, 4)  # word count range of an image item's caption
    zipf_exponent: float = 1.0  # popularity ~ 1 / rank**a inside a (domain, topic)
    num_successors: int = 3
    successor_weights: tuple[float, ...] = (0.5, 0.3, 0.2)  # preference among successors
    successor_prob: float = 0.6  # P(next item is a successor of the previous one)
    cross_topic_successor_prob: float = 0.15  # P(a successor slot points to the next topic)
    taste_alpha: float = 0.2  # Dirichlet base concentration; the main topic gets +4
    second_topic_prob: float = 0.5  # P(a user also has a secondary topic, +2)
    drift_prob: float = 0.04  # per step, P(taste rotates to a neighbouring topic)
    cross_domain_share: float = 0.3  # users who later also interact in a second domain
    cross_domain_fraction: tuple[float, float] = (0.2, 0.4)  # share of their sequence there
    high_activity_share: float = 0.3  # `activity=high` users draw lengths from the upper half
    start_time: int = 1_600_000_000

    def validate(self) -> None:
        """Raise `ConfigError` for settings that cannot produce a valid world."""
        if not self.domains or len(set(self.domains)) != len(self.domains):
            raise ConfigError(f"domains must be distinct and non-empty, got {self.domains!r}")
        if self.num_topics < 1 or self.num_users < 1:
            raise ConfigError("num_topics and num_users must be >= 1")
        if self.items_per_domain < self.num_topics * (self.num_successors + 1):
            raise ConfigError(
                f"items_per_domain={self.items_per_domain} too small: need >= "
                f"num_topics * (num_successors + 1) = {self.num_topics * (self.num_successors + 1)}"
            )
        if not 2 <= self.min_len <= self.max_len <= self.items_per_domain:
            raise ConfigError("need 2 <= min_len <= max_len <= items_per_domain (no repeats per user)")
        if len(self.successor_weights) != self.num_successors:
            raise ConfigError("successor_weights needs one weight per successor")
        for name in ("text_share", "successor_prob", "cross_topic_successor_prob", "second_topic_prob",
                     "drift_prob", "cross_domain_share", "high_activity_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1]")
        if self.image_size < 8 or self.words_per_topic < 4:
            raise ConfigError("image_size must be >= 8 and words_per_topic >= 4")


@dataclass
class _Item:
    domain: int
    topic: int
    order: int  # latent position inside its (domain, topic)
    size: int  # number of items in its (domain, topic)
    modality: str = "text"
    text: str = ""


def generate_world(out_dir: str | Path, config: WorldConfig | None = None, overwrite: bool = False) -> Path:
    """Generate the world into `out_dir` and return its path.

    Refuses a non-empty folder unless `overwrite`, which replaces only the files it writes.
    """
    cfg = config or WorldConfig()
    cfg.validate()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"{out} is not empty; pass overwrite=True (--overwrite) to replace it")
        for name in _OUTPUTS:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    (out / "images").mkdir(parents=True, exist_ok=True)

    # Independent streams, so e.g. changing the image size leaves the sequences unchanged.
    vocab_rng, item_rng, image_rng, user_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(4)
    )
    vocab = _vocabularies(vocab_rng, cfg.num_topics, cfg.words_per_topic)
    items, members, popularity, successors = _items(item_rng, cfg, vocab)
    id_width = max(5, len(str(len(items))))
    item_ids = [f"i{k + 1:0{id_width}d}" for k in range(len(items))]

    for k, item in enumerate(items):
        img = _render(image_rng, cfg.image_size, item, cfg.num_topics)
        img.save(out / "images" / f"{item_ids[k]}.png", format="PNG")
    with open(out / "items.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["item_id", "modality", "text", "image", "domain"])
        for k, item in enumerate(items):
            w.writerow([item_ids[k], item.modality, item.text, f"images/{item_ids[k]}.png", cfg.domains[item.domain]])

    users = _users(user_rng, cfg, members, popularity, successors)
    user_width = max(4, len(str(cfg.num_users)))
    n_events = 0
    with open(out / "interactions.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["user_id", "item_id", "timestamp", "domain"])
        for u, (_, _, _, seq, stamps) in enumerate(users):
            for k, ts in zip(seq, stamps):
                w.writerow([f"u{u + 1:0{user_width}d}", item_ids[k], ts, cfg.domains[items[k].domain]])
            n_events += len(seq)
    with open(out / "users.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["user_id", "taste", "activity", "primary_domain"])
        for u, (taste, activity, domain, _, _) in enumerate(users):
            w.writerow([f"u{u + 1:0{user_width}d}", taste, activity, cfg.domains[domain]])

    stats = {
        "num_items": len(items),
        "num_users": cfg.num_users,
        "num_interactions": n_events,
        "cross_domain_users": sum(len({items[k].domain for k in s}) > 1 for *_, s, _ in users),
    }
    meta = {"generator": "transrec.data.synthetic", "format_version": 1, "config": asdict(cfg), "stats": stats}
    (out / "world.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    (out / "DESCRIPTION.md").write_text(_description(cfg, stats))
    return out


def _vocabularies(rng: np.random.Generator, num_topics: int, per_topic: int) -> list[list[str]]:
    """Distinct pronounceable pseudo-words per topic, none equal to a filler word."""
    used = set(FILLERS)
    vocab: list[list[str]] = []
    for _ in range(num_topics):
        words: list[str] = []
        while len(words) < per_topic:
            n_syll = 2 if rng.random() < 0.7 else 3
            word = "".join(
                _ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))] for _ in range(n_syll)
            ) + _CODAS[rng.integers(len(_CODAS))]
            if word not in used:
                used.add(word)
                words.append(word)
        vocab.append(words)
    return vocab


def _items(rng: np.random.Generator, cfg: WorldConfig, vocab: list[list[str]]):
    """Items with topic, latent order, modality, text; plus per-(domain, topic) tables.

    Returns items, members[d][t] (item indices in latent order), popularity[d][t] (weights
    aligned with members) and successors[k] (item indices).
    """
    T, V = cfg.num_topics, cfg.words_per_topic
    items: list[_Item] = []
    members: list[list[np.ndarray]] = []
    popularity: list[list[np.ndarray]] = []
    for d in range(len(cfg.domains)):
        n = cfg.items_per_domain
        # Random id order so that ids reveal neither topic nor latent order.
        slots = rng.permutation(n)  # slot j (in id order) -> position in (topic, order) layout
        topic_of = np.arange(n) % T
        order_of = np.arange(n) // T
        sizes = np.bincount(topic_of, minlength=T)
        n_text = int(round(cfg.text_share * n))
        modality = np.array(["text"] * n_text + ["image"] * (n - n_text))[rng.permutation(n)]
        base = len(items)
        table = [np.empty(sizes[t], dtype=np.int64) for t in range(T)]
        for j in range(n):
            t, o = int(topic_of[slots[j]]), int(order_of[slots[j]])
            items.append(_Item(domain=d, topic=t, order=o, size=int(sizes[t]), modality=str(modality[j])))
            table[t][o] = base + j
        members.append(table)
        popularity.append([1.0 / (rng.permutation(len(m)) + 1.0) ** cfg.zipf_exponent for m in table])

    for item in items:
        lo, hi = cfg.text_words if item.modality == "text" else cfg.caption_words
        n_words = int(rng.integers(lo, hi + 1))
        n_topic = max(1, int(round(n_words * rng.uniform(0.45, 0.65))))
        anchor = item.order * V / item.size  # sliding window over the topic vocabulary
        topic_words = [
            vocab[item.topic][int(anchor + rng.integers(-3, 4)) % V] if rng.random() < 0.85
            else vocab[item.topic][int(rng.integers(V))]
            for _ in range(n_topic)
        ]
        fillers = [FILLERS[int(rng.integers(len(FILLERS)))] for _ in range(n_words - n_topic)]
        words = topic_words + fillers
        item.text = " ".join(words[i] for i in rng.permutation(len(words)))

    successors: list[np.ndarray] = []
    for k, item in enumerate(items):
        table = members[item.domain]
        succ = []
        for s in range(1, cfg.num_successors + 1):
            if rng.random() < cfg.cross_topic_successor_prob and T > 1:
                nxt = table[(item.topic + 1) % T]
                pos = round((item.order + s) * len(nxt) / item.size) % len(nxt)
                cand = int(nxt[pos])
            else:
                cand = int(table[item.topic][(item.order + s) % item.size])
            while cand in succ or cand == k:  # distinct, never the item itself
                cand = int(table[item.topic][(items[cand].order + 1) % item.size])
            succ.append(cand)
        successors.append(np.array(succ, dtype=np.int64))
    return items, members, popularity, successors


def _users(rng: np.random.Generator, cfg: WorldConfig, members, popularity, successors):
    """Per user: (taste label, activity, primary domain index, item sequence, timestamps)."""
    T, D = cfg.num_topics, len(cfg.domains)
    n_items = sum(len(m) for table in members for m in table)
    topic_of = np.empty(n_items, dtype=np.int64)
    for table in members:
        for t, m in enumerate(table):
            topic_of[m] = t
    succ_w = np.asarray(cfg.successor_weights, dtype=np.float64)
    mid = (cfg.min_len + cfg.max_len) // 2
    users = []
    for _ in range(cfg.num_users):
        alpha = np.full(T, cfg.taste_alpha)
        main = int(rng.integers(T))
        alpha[main] += 4.0
        if T > 1 and rng.random() < cfg.second_topic_prob:
            alpha[(main + 1 + int(rng.integers(T - 1))) % T] += 2.0
        taste = rng.dirichlet(alpha)
        label = int(np.argmax(taste))
        high = rng.random() < cfg.high_activity_share
        length = int(rng.integers(mid, cfg.max_len + 1) if high else rng.integers(cfg.min_len, mid + 1))
        primary = int(rng.integers(D))
        segments = [(primary, length)]
        if D > 1 and rng.random() < cfg.cross_domain_share:
            second = (primary + 1 + int(rng.integers(D - 1))) % D
            n2 = max(2, int(round(length * rng.uniform(*cfg.cross_domain_fraction))))
            segments = [(primary, length - n2), (second, n2)]

        seen = np.zeros(n_items, dtype=bool)
        seq: list[int] = []
        stamps: list[int] = []
        clock = cfg.start_time + int(rng.integers(0, 30 * _DAY))
        for seg, (d, n) in enumerate(segments):
            if seg:
                clock += int(rng.integers(7 * _DAY, 60 * _DAY))  # the second domain comes later
            remaining = np.array([len(m) for m in members[d]], dtype=np.float64)
            prev = -1
            for _ in range(n):
                if rng.random() < cfg.drift_prob:
                    taste = np.roll(taste, 1 if rng.random() < 0.5 else -1)
                nxt = -1
                if prev >= 0 and rng.random() < cfg.successor_prob:
                    w = succ_w * ~seen[successors[prev]]
                    if w.sum() > 0:
                        nxt = int(successors[prev][_pick(rng, w)])
                if nxt < 0:
                    t = _pick(rng, (taste + 1e-12) * (remaining > 0))  # eps: a taste entry may underflow to 0
                    cand = members[d][t]
                    nxt = int(cand[_pick(rng, popularity[d][t] * ~seen[cand])])
                seen[nxt] = True
                remaining[topic_of[nxt]] -= 1
                seq.append(nxt)
                clock += int(rng.integers(60, 3 * _DAY))
                stamps.append(clock)
                prev = nxt
        users.append((label, "high" if high else "low", primary, seq, stamps))
    return users


def _pick(rng: np.random.Generator, weights: np.ndarray) -> int:
    """Index drawn proportionally to non-negative `weights` (faster than rng.choice)."""
    cum = np.cumsum(weights)
    return int(min(np.searchsorted(cum, rng.random() * cum[-1], side="right"), len(cum) - 1))


def _render(rng: np.random.Generator, size: int, item: _Item, num_topics: int) -> Image.Image:
    """Topic -> hue, shape, texture; latent order -> position on a circle; plus random jitter."""
    t, phase = item.topic, item.order / item.size
    hue = t / num_topics
    fg = _rgb(hue + rng.normal(0, 0.02), 0.75 + rng.uniform(-0.1, 0.1), 0.85 + rng.uniform(-0.1, 0.1))
    bg_value = 0.9 if item.domain % 2 == 0 else 0.3  # domains differ in visual style
    bg = _rgb(hue + 0.5, 0.15 + 0.1 * (item.domain // 2 % 3), bg_value + rng.uniform(-0.05, 0.05))
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    angle = 2 * math.pi * phase
    cx = size / 2 + 0.18 * size * math.cos(angle) + rng.normal(0, 0.03 * size)
    cy = size / 2 + 0.18 * size * math.sin(angle) + rng.normal(0, 0.03 * size)
    r = size * (0.2 + 0.08 * rng.random())
    shape = SHAPES[t % len(SHAPES)]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    elif shape == "cross":
        w = r / 3
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fg)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fg)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fg)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fg, width=max(2, int(r / 3)))
    elif shape == "stripes":
        period = max(4, size // 5)
        offset = int(phase * period)
        for y in range(-period + offset, size, period):
            draw.rectangle([0, y, size, y + period // 2 - 1], fill=fg)
    else:  # checker
        cell = max(2, size // 4)
        off = int(phase * 2 * cell)
        for y in range(-2 * cell, size, cell):
            for x in range(-2 * cell, size, cell):
                if ((x + y) // cell) % 2 == 0:
                    draw.rectangle([x + off, y, x + off + cell - 1, y + cell - 1], fill=fg)
    arr = np.asarray(img, dtype=np.float32)
    texture = TEXTURES[(t + t // len(SHAPES)) % len(TEXTURES)]
    if texture == "lines":
        arr[::3] *= 0.75
    elif texture == "dots":
        arr[1::4, 1::4] = 255 - arr[1::4, 1::4]
    sigma = 18.0 if texture == "grain" else 6.0
    arr += rng.normal(0, sigma, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "RGB")


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _description(cfg: WorldConfig, stats: dict) -> str:
    return f"""# Synthetic transrec world (seed {cfg.seed})

Generated by `transrec.data.synthetic` (`python -m transrec.data.synthetic OUT_DIR --seed {cfg.seed}`);
the same config always gives byte-identical files. Full config in `world.json`.

- {stats['num_users']} users, {stats['num_items']} items in domains {', '.join(cfg.domains)}
  ({cfg.items_per_domain} each, disjoint), {stats['num_interactions']} interactions;
  {stats['cross_domain_users']} users also interact, later in time, in a second domain.
- `items.csv`: item_id, modality (`text` for ~{cfg.text_share:.0%} of each domain, else `image`),
  text (a description for text items, a short caption for image items), image
  (`images/<item_id>.png`, {cfg.image_size}x{cfg.image_size} RGB, for every item), domain.
- `interactions.csv`: user_id, item_id, timestamp (integer seconds, strictly increasing per
  user), domain. No item repeats within a user.
- `users.csv`: user_id, taste (dominant latent topic id, 0..{cfg.num_topics - 1}: a profile label),
  activity (`low`/`high`: sequence length), primary_domain.

World model: {cfg.num_topics} latent topics on a ring, each with its own pseudo-word vocabulary
and visual style (hue, shape, texture). Inside each (domain, topic) items have a cyclic latent
order that their content follows smoothly. With probability {cfg.successor_prob} a user's next
item is one of {cfg.num_successors} fixed successors of the previous item (mostly the next items
in the latent order); otherwise it is drawn from the user's drifting topic taste times Zipf
popularity. A first-order sequential model therefore beats popularity by a wide margin.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the synthetic transrec world.")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users", type=int, default=WorldConfig.num_users)
    parser.add_argument("--items-per-domain", type=int, default=WorldConfig.items_per_domain)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    cfg = WorldConfig(seed=args.seed, num_users=args.users, items_per_domain=args.items_per_domain)
    start = time.perf_counter()
    out = generate_world(args.out_dir, cfg, overwrite=args.overwrite)
    stats = json.loads((out / "world.json").read_text())["stats"]
    print(f"wrote {out}: {stats} in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
