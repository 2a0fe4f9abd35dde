"""evaluation.max_examples scores a seeded uniform sample of the held-out rows, not their prefix."""

from securefed.simulation.world import scored_sample


def test_sample_of_a_label_sorted_split_is_not_its_prefix():
    rows = tuple(("pos", i) for i in range(300)) + tuple(("neg", i) for i in range(700))  # sorted source
    picked = scored_sample(rows, 200, seed=0)
    assert len(picked) == 200 and len(set(picked)) == 200 and set(picked) <= set(rows)
    assert list(picked) == sorted(picked, key=rows.index)  # source order kept
    share = sum(r[0] == "pos" for r in picked) / 200
    assert 0.2 < share < 0.4  # the prefix would be 100% "pos"
    assert scored_sample(rows, 200, seed=0) == picked  # a function of the seed
    assert scored_sample(rows, 200, seed=1) != picked


def test_small_split_is_scored_whole():
    rows = tuple(range(10))
    assert scored_sample(rows, 200, seed=0) == rows
