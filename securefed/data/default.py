"""The embedded default data set: synthetic product reviews labelled by sentiment.

Why synthetic: the default run must work offline and be learnable by a tiny random-init model (two
layers, hidden 64, a word-level vocabulary) within minutes on a CPU. Each review is a shuffled bag of
a topic noun or two, two or three sentiment words of its label, sometimes one distractor word of
another label (never enough to outvote the label), and filler words. A model must learn which words
carry sentiment and ignore topic and filler, so accuracy rises from chance (1/3) well above it.

The rows are generated from a fixed seed, so every process sees the same data; the vocabulary is
small (about 180 words) so a word-level tokenizer built from `loading.default_corpus()` covers it.
"""

from __future__ import annotations

import numpy as np

# Fixed constant, not the run seed: the data set is part of the product, the run seed only decides
# the eval split and the partition.
GENERATOR_SEED = 20_240_601
ROWS_PER_LABEL = 800
LABELS = ("negative", "neutral", "positive")

SENTIMENT_WORDS: dict[str, tuple[str, ...]] = {
    "positive": (
        "great", "excellent", "wonderful", "amazing", "fantastic", "lovely", "superb", "brilliant",
        "delightful", "perfect", "pleasant", "enjoyable", "charming", "beautiful", "outstanding",
        "impressive", "friendly", "fresh", "clean", "smooth", "fun", "good", "nice", "best",
    ),
    "negative": (
        "terrible", "awful", "horrible", "bad", "poor", "boring", "disappointing", "dirty", "rude",
        "broken", "slow", "ugly", "worst", "annoying", "bland", "noisy", "cold", "weak", "painful",
        "useless", "stale", "cheap", "messy", "dull",
    ),
    "neutral": (
        "okay", "average", "ordinary", "standard", "typical", "fine", "acceptable", "decent",
        "moderate", "usual", "plain", "normal", "regular", "adequate", "fair", "passable",
        "unremarkable", "reasonable", "common", "basic", "modest", "simple", "expected", "routine",
    ),
}

TOPIC_NOUNS: dict[str, tuple[str, ...]] = {
    "movie": ("film", "movie", "plot", "actor", "actress", "scene", "ending", "soundtrack",
              "director", "script"),
    "hotel": ("hotel", "room", "bed", "lobby", "staff", "pool", "view", "breakfast", "bathroom",
              "location"),
    "restaurant": ("restaurant", "meal", "soup", "pasta", "waiter", "dessert", "menu", "pizza",
                   "salad", "chef"),
    "phone": ("phone", "screen", "battery", "camera", "charger", "speaker", "keyboard", "case",
              "app", "signal"),
    "book": ("book", "chapter", "story", "author", "novel", "page", "character", "cover", "poem",
             "narrator"),
}

FILLER_WORDS = (
    "the", "a", "it", "was", "is", "and", "but", "i", "we", "my", "our", "this", "that", "very",
    "really", "quite", "rather", "with", "of", "in", "on", "at", "for", "to", "overall", "also",
    "just", "so", "too", "felt", "seemed", "looked", "found", "thought", "they", "there", "some",
    "all", "again", "today", "last", "week", "night", "visit", "time", "experience", "honestly",
    "pretty", "bit", "here",
)


def default_rows() -> list[dict[str, str]]:
    """All rows of the default set: {"text", "label", "topic"}, balanced over labels, deterministic.

    `topic` is a natural category for `partition.method = "natural"` (5 values).
    """
    rng = np.random.Generator(np.random.PCG64(GENERATOR_SEED))
    topics = sorted(TOPIC_NOUNS)
    labels = np.repeat(np.arange(len(LABELS)), ROWS_PER_LABEL)
    rng.shuffle(labels)  # interleave labels so any prefix of the data is roughly balanced
    rows = []
    for label_index in labels:
        label = LABELS[int(label_index)]
        topic = topics[int(rng.integers(len(topics)))]
        words = list(_pick(rng, TOPIC_NOUNS[topic], int(rng.integers(1, 3))))
        words += _pick(rng, SENTIMENT_WORDS[label], int(rng.integers(2, 4)))
        if rng.random() < 0.3:
            others = [other for other in LABELS if other != label]
            words += _pick(rng, SENTIMENT_WORDS[others[int(rng.integers(2))]], 1)
        words += _pick(rng, FILLER_WORDS, int(rng.integers(3, 8)))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label, "topic": topic})
    return rows


def default_vocabulary() -> list[str]:
    """Every word that can occur in a default review (without the template words)."""
    words = set(FILLER_WORDS)
    for group in (*SENTIMENT_WORDS.values(), *TOPIC_NOUNS.values()):
        words.update(group)
    return sorted(words)


def _pick(rng: np.random.Generator, words: tuple[str, ...], count: int) -> list[str]:
    return [words[int(i)] for i in rng.choice(len(words), size=count, replace=False)]
