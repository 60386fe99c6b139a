"""Cuts of the archive (core/archive_layout.py): partition -> first offset left out."""

from core.archive_layout import before_cut_sql, earlier_cut


def test_the_earlier_cut_takes_each_partitions_smaller_offset():
    assert earlier_cut({0: 10, 1: 5}, {0: 7, 1: 9}) == {0: 7, 1: 5}


def test_a_partition_one_cut_lacks_keeps_nothing():
    # The stream committed nothing in partition 2: none of its records may count, whatever the time says.
    assert earlier_cut({0: 10}, {0: 12, 2: 40}) == {0: 10}
    assert "ELSE 0" in before_cut_sql(earlier_cut({0: 10}, {0: 12, 2: 40}))
    assert before_cut_sql(earlier_cut({1: 3}, {2: 4})) == "FALSE"
