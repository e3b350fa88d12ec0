"""fedge's FedAvg arithmetic against Flower's own aggregate_inplace on the same FitRes messages."""

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy.aggregate import aggregate_inplace

from fedge.server.aggregate import fedavg_fit_results, npy_view, weighted_average


def _results(rng, k, shapes):
    out = []
    for i in range(k):
        arrays = [rng.normal(size=s).astype(np.float32) for s in shapes] + [np.array(7 + i, dtype=np.int64)]
        out.append((None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), int(rng.integers(1, 500)), {})))
    return out


@pytest.mark.parametrize("k", [1, 3, 17])
def test_matches_flowers_fedavg(k):
    rng = np.random.default_rng(k)
    results = _results(rng, k, [(3, 5), (1_000_003,), (), (2, 3, 4, 5)])
    ours = fedavg_fit_results(results)
    theirs = aggregate_inplace(_results(np.random.default_rng(k), k, [(3, 5), (1_000_003,), (), (2, 3, 4, 5)]))
    assert [a.shape for a in ours] == [b.shape for b in theirs]
    for a, b in zip(ours[:-1], theirs[:-1]):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the integer counter: weighted mean rounded (Flower's would leave a float in an int slot)
    w = np.array([r.num_examples for _, r in results], dtype=np.float64)
    assert ours[-1].dtype == np.int64 and ours[-1] == np.rint((w * (7 + np.arange(k))).sum() / w.sum())


def test_block_boundaries_do_not_change_the_result():
    rng = np.random.default_rng(0)
    ups = [[rng.normal(size=1000).astype(np.float32)] for _ in range(4)]
    a = weighted_average(ups, [1, 2, 3, 4], block=7)[0]
    b = weighted_average(ups, [1, 2, 3, 4], block=1 << 20)[0]
    ref = sum(w * u[0].astype(np.float64) for w, u in zip([1, 2, 3, 4], ups)) / 10
    np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a, b)


def test_npy_view_reads_without_copying_and_keeps_layout():
    x = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    (buf,) = ndarrays_to_parameters([x]).tensors
    v = npy_view(buf)
    np.testing.assert_array_equal(v, x)
    assert not v.flags.writeable  # a view into the message bytes, not a copy
    np.testing.assert_array_equal(v, parameters_to_ndarrays(ndarrays_to_parameters([x]))[0])


def test_secagg_results_share_one_aggregate_which_is_returned_as_is():
    params = ndarrays_to_parameters([np.ones(4, np.float32) * 3])
    results = [(None, FitRes(Status(Code.OK, ""), params, n, {})) for n in (5, 9)]
    np.testing.assert_array_equal(fedavg_fit_results(results)[0], np.full(4, 3, np.float32))


def test_mismatched_shapes_and_zero_weights_are_refused():
    with pytest.raises(ValueError, match="shapes differ"):
        weighted_average([[np.zeros(3, np.float32)], [np.zeros(4, np.float32)]], [1, 1])
    with pytest.raises(ValueError, match="positive total"):
        weighted_average([[np.zeros(3, np.float32)]], [0])
