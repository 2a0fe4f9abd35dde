"""The embedded default data: deterministic, balanced, small vocabulary, learnable from its words."""

from __future__ import annotations

from collections import Counter

import numpy as np

from securefed.data import DataConfig, default_corpus, load_examples
from securefed.data.default import (
    FILLER_WORDS,
    LABELS,
    SENTIMENT_WORDS,
    TOPIC_NOUNS,
    default_rows,
    default_vocabulary,
)


def test_deterministic_and_balanced():
    rows = default_rows()
    assert rows == default_rows()
    assert len(rows) == 2400
    assert Counter(r["label"] for r in rows) == {label: 800 for label in LABELS}
    assert set(Counter(r["topic"] for r in rows)) == set(TOPIC_NOUNS)
    assert len({r["text"] for r in rows}) > 2300  # little duplication


def test_word_lists_are_disjoint_and_small():
    groups = [FILLER_WORDS, *SENTIMENT_WORDS.values(), *TOPIC_NOUNS.values()]
    assert sum(len(g) for g in groups) == len(default_vocabulary())
    assert 100 < len(default_vocabulary()) < 300


def test_loaded_split_and_task():
    data = load_examples(DataConfig(), seed=0)
    assert (len(data.train), len(data.eval)) == (2200, 200)
    assert data.task == "classification" and data.labels == LABELS
    assert data.partition_keys == tuple(ex.label for ex in data.train)
    assert load_examples(DataConfig(), seed=0) == data


def test_corpus_covers_every_text_with_a_small_vocabulary():
    corpus = default_corpus()
    words = {w for text in corpus for w in text.split()}
    assert words == set(default_vocabulary()) | {"Review:", "Sentiment:"} | set(LABELS)
    assert corpus == default_corpus()


def test_sentiment_is_learnable_from_words():
    # A bag-of-words naive Bayes fit on the train split: if the words carry the label, a tiny
    # transformer can learn it too. Chance is 1/3.
    data = load_examples(DataConfig(), seed=0)
    vocab = {w: i for i, w in enumerate(default_vocabulary())}
    counts = np.ones((len(LABELS), len(vocab)))
    for ex in data.train:
        for w in ex.prompt.split()[1:-1]:
            counts[LABELS.index(ex.label), vocab[w]] += 1
    log_p = np.log(counts / counts.sum(axis=1, keepdims=True))
    correct = 0
    for ex in data.eval:
        scores = sum(log_p[:, vocab[w]] for w in ex.prompt.split()[1:-1])
        correct += LABELS[int(np.argmax(scores))] == ex.label
    assert correct / len(data.eval) > 0.85
