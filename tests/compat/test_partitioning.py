import pytest

from partitioning import JAVA_KNOWN_VALUES, java_partition, murmur2


@pytest.mark.parametrize("data,expected", JAVA_KNOWN_VALUES)
def test_murmur2_matches_java(data, expected):
    assert murmur2(data) == expected


def test_partition_is_in_range_and_positive():
    for i in range(1000):
        p = java_partition(f"key-{i}", 6)
        assert 0 <= p < 6
