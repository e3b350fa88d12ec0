"""The download rate limit's arithmetic (fedge edge serve --pull-max-rate); over the wire: test_release_pull.py."""

import pytest

from fedge.edge_runtime.distribution.throttle import Throttle, chunk_for, parse_rate


@pytest.mark.parametrize(
    "text, rate",
    [("500000", 500_000), ("500k", 500_000), ("2M", 2_000_000), ("1.5M", 1_500_000), ("64kB/s", 64_000), ("1G", 10**9)],
)
def test_rates_read_in_si_units(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "0", "-5k", "5x", "1.5.2M"])
def test_rates_that_are_not_one_are_refused_with_an_example(text):
    with pytest.raises(ValueError, match="such as 500k or 2M"):
        parse_rate(text)


def test_the_throttle_waits_until_the_average_is_back_under_the_rate():
    now, waited = [0.0], []

    def wait(seconds):
        waited.append(seconds)
        now[0] += seconds
        return False

    t = Throttle(1000, wait, clock=lambda: now[0])
    assert t.spend(500) and waited == [0.5]  # 500 bytes at once: half a second's worth
    now[0] += 2.0  # then slow reads: credit, no wait
    assert t.spend(1000) and waited == [0.5]
    assert t.spend(2000) and waited == [0.5, 1.0]  # 3.5 kB in 2.5 s at 1 kB/s: a second more
    assert t.bytes == 3500


def test_a_stop_during_a_wait_ends_the_download():
    assert Throttle(10, lambda seconds: True, clock=lambda: 0.0).spend(100) is False


def test_chunks_are_about_an_eighth_of_a_second_within_bounds():
    assert (chunk_for(64_000), chunk_for(1000), chunk_for(10**9)) == (8000, 4096, 1 << 20)
