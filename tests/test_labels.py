"""The packaged label sets: one name a line, in the models' (alphabetical) index order, each
the size of its dataset; a config names one by name (see streamrec/labels/SOURCES.md)."""

from __future__ import annotations

import pytest

from streamrec.config import LABELS_DIR, load_config, load_labels


@pytest.mark.parametrize("name,classes", [("kinetics400", 400), ("kinetics600", 600)])
def test_kinetics_label_sets_are_whole_distinct_and_in_index_order(name, classes):
    names = (LABELS_DIR / f"{name}.txt").read_text().splitlines()
    assert len(names) == len(set(names)) == classes
    assert names == sorted(names) and all(n == n.strip() and n for n in names)


def test_a_config_names_a_label_set():
    config = load_config("x3d_m", ["model.num_classes=600", "labels=kinetics600"])
    names = load_labels(config)
    assert len(names) == 600 and "adjusting glasses" in names  # a class Kinetics-400 lacks
