"""Search: constraints and feasibility, evolution, NSGA-II Pareto fronts, the integer encoding."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

import onceforall as ofa
from onceforall.search import (
    Candidate,
    Constraint,
    Cost,
    InfeasibleConstraint,
    IntegerEncoding,
    check_feasible,
    evolutionary_search,
    format_quantity,
    latency_cost,
    macs_cost,
    params_cost,
    pareto_front,
    pareto_search,
    spread_indices,
)

# 800 archs: small enough to brute-force, big enough that a search must work for its optimum.
TINY = ofa.SearchSpace(2, (3, 5), (3, 6), (1, 2), (24, 28))
TINY_WIDTH = ofa.SearchSpace(2, (3, 5), (3, 4, 6), (0, 1, 2), (24,), width_mults=(0.5, 1.0))
# ResNet-like: one kernel, base depths per stage, a stem width and an elastic stem.
TINY_STEM = ofa.SearchSpace(
    2, (3,), (0.25, 0.35), (0, 1), (24,), (0.65, 1.0), base_depths=(1, 2), num_widths=3,
    stem_depths=(2, 3),
)  # fmt: skip


def _linear_accuracy(space: ofa.SearchSpace, seed: int = 0):
    """A known function of the encoding: fixed random weights on ``space.encode``. Each row is
    summed alone in float64, so an arch scores the same in any batch (a float32 matrix product
    may sum a row in another order for another batch shape, as on AMD CPUs)."""
    w = torch.randn(space.encoding_size, generator=torch.Generator().manual_seed(seed)).double()

    def accuracy(archs):
        return (space.encode_batch(archs).double().numpy() * w.numpy()).sum(axis=1)

    return accuracy


def _toy_cost(archs) -> np.ndarray:
    """MAC-like and monotone in every choice: resolution^2 times the sum of k^2 * e per block."""
    return np.array(
        [
            a.resolution**2
            * sum(
                k * k * e
                for ks, es in zip(a.kernel_sizes, a.expand_ratios, strict=True)
                for k, e in zip(ks, es, strict=True)
            )
            for a in archs
        ],
        dtype=float,
    )


def _toy_params(archs) -> np.ndarray:
    return np.array(
        [
            sum(
                k * e
                for ks, es in zip(a.kernel_sizes, a.expand_ratios, strict=True)
                for k, e in zip(ks, es, strict=True)
            )
            for a in archs
        ],
        dtype=float,
    )


TOY = Cost("toy_macs", _toy_cost, "MACs")
TOY_PARAMS = Cost("toy_params", _toy_params, "params")


@pytest.fixture(scope="module")
def net() -> ofa.Supernet:
    return ofa.create_supernet("mbv3_small_images", num_classes=10, in_channels=1)


# ---------------------------------------------------------------- encoding
@pytest.mark.parametrize(
    "space", [TINY, TINY_WIDTH, TINY_STEM], ids=["tiny", "tiny_width", "tiny_stem"]
)
def test_integer_encoding_round_trips_every_arch(space):
    enc = IntegerEncoding(space)
    archs = space.enumerate()
    xs = enc.encode_batch(archs)
    assert xs.shape == (space.size, enc.num_genes)
    assert enc.decode_batch(xs) == archs
    assert len({x.tobytes() for x in xs}) == len(archs)  # injective: distinct archs, vectors
    np.testing.assert_array_equal(enc.canonical(xs), xs)  # encode writes canonical vectors
    # Genes of blocks beyond a stage's depth are ignored when decoding.
    noise = np.random.default_rng(0).integers(0, enc.upper + 1, size=xs.shape)
    latent = np.where(enc.inactive(xs), noise, xs)
    assert enc.decode_batch(latent) == archs
    np.testing.assert_array_equal(enc.canonical(latent), xs)


def test_integer_encoding_rejects_bad_vectors():
    enc = IntegerEncoding(TINY)
    x = enc.encode(TINY.largest())
    with pytest.raises(ValueError, match="length"):
        enc.decode(x[:-1])
    bad = x.copy()
    bad[0] = enc.upper[0] + 1
    with pytest.raises(ValueError, match="gene 0"):
        enc.decode(bad)
    with pytest.raises(ValueError, match="integers"):
        enc.decode(x + 0.5)
    with pytest.raises(ValueError, match="outside the search space"):
        enc.encode(ofa.ArchConfig(32, (1, 1), ((3,), (3,)), ((3,), (3,))))


# ---------------------------------------------------------------- pareto utilities
def test_pareto_front_on_hand_made_points():
    pts = [(1, 1), (2, 0), (0, 2), (2, 2), (1, 1), (1, 2), (3, 0)]
    np.testing.assert_array_equal(pareto_front(pts), [0, 1, 2, 4])  # equal points both kept
    # Maximize the first objective, minimize the second (accuracy vs latency).
    acc_lat = [(70.0, 5.0), (75.0, 8.0), (72.0, 9.0), (75.0, 7.0), (60.0, 5.0)]
    np.testing.assert_array_equal(pareto_front(acc_lat, maximize=(True, False)), [0, 3])
    assert pareto_front(np.zeros((0, 2))).size == 0
    with pytest.raises(ValueError, match="maximize has 1"):
        pareto_front(pts, maximize=(True,))
    with pytest.raises(ValueError, match="NaN"):
        pareto_front([(1.0, float("nan"))])


@pytest.mark.parametrize("m", [2, 3])
def test_pareto_front_matches_brute_force(m):
    p = np.random.default_rng(m).integers(0, 12, size=(300, m)).astype(float)  # many ties
    brute = [
        i
        for i in range(len(p))
        if not any((p[j] <= p[i]).all() and (p[j] < p[i]).any() for j in range(len(p)))
    ]
    np.testing.assert_array_equal(pareto_front(p), brute)


def test_spread_indices_keeps_ends_and_spreads():
    x = np.linspace(0, 1, 101)
    front = np.c_[x, 1 - x]
    idx = spread_indices(front, 5)
    np.testing.assert_array_equal(idx, [0, 25, 50, 75, 100])
    np.testing.assert_array_equal(spread_indices(front[:3], 5), [0, 1, 2])
    dense = np.r_[np.c_[np.linspace(0, 0.1, 90), np.zeros(90)], np.c_[np.ones(10), np.ones(10)]]
    assert len(set(spread_indices(dense, 10).tolist())) == 10
    with pytest.raises(ValueError, match="n_points"):
        spread_indices(front, 0)


# ---------------------------------------------------------------- costs and feasibility
def test_cost_helpers(net):
    archs = [net.space.smallest(), net.space.largest()]
    np.testing.assert_array_equal(macs_cost(net)(archs), [net.macs(a) for a in archs])
    np.testing.assert_array_equal(params_cost(net)(archs), [net.num_params(a) for a in archs])

    class Table:
        def predict_many(self, archs):
            return np.full(len(archs), 2.5)

    lat = latency_cost(Table())
    assert (lat.name, lat.unit) == ("latency_ms", "ms")
    np.testing.assert_array_equal(lat.at_most(3.0).satisfied(archs), [True, True])
    assert str(lat.at_most(3)) == "latency_ms <= 3 ms"
    assert format_quantity(1628488, "MACs") == "1,628,488 MACs"
    assert format_quantity(3.14159, "ms") == "3.142 ms"
    with pytest.raises(ValueError, match="one number per arch"):
        Cost("bad", lambda a: np.zeros((len(a), 2)))(archs)
    with pytest.raises(ValueError, match="limit must be a number"):
        Constraint("macs", "lots", _toy_cost)
    with pytest.raises(ValueError, match="callable"):
        Cost("macs", 3)


def _never_called(archs):
    raise AssertionError("accuracy must not be evaluated for an infeasible budget")


@pytest.mark.parametrize("search", ["evolution", "pareto"])
def test_infeasible_budget_fails_fast_naming_smallest_value(net, search):
    smallest = net.macs(net.space.smallest())
    budget = macs_cost(net).at_most(smallest - 1)
    start = time.perf_counter()
    with pytest.raises(InfeasibleConstraint) as info:
        if search == "evolution":
            evolutionary_search(net.space, _never_called, [budget])
        else:
            pareto_search(net.space, _never_called, params_cost(net), [budget])
    assert time.perf_counter() - start < 1.0
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.name, err.limit, err.smallest, err.unit) == ("macs", smallest - 1, smallest, "MACs")
    assert err.arch == net.space.smallest()
    assert format_quantity(smallest, "MACs") in str(err) and "macs <=" in str(err)


def test_check_feasible_combined_and_non_monotone():
    both = [TOY.at_most(_toy_cost([TINY.smallest()])[0]), TOY_PARAMS.at_most(100)]
    assert check_feasible(TINY, both) == TINY.smallest()
    with pytest.raises(InfeasibleConstraint, match="toy_params"):
        check_feasible(TINY, [TOY.at_most(1e9), TOY_PARAMS.at_most(1)])
    # A cost that is smallest for the largest arch: the random sample finds the feasible region.
    budget = Cost("inverted", lambda archs: -_toy_cost(archs)).at_most(-3e5)  # 7% of archs
    with pytest.raises(InfeasibleConstraint):
        check_feasible(TINY, [budget], num_samples=0)  # the smallest arch alone misses them
    anchor = check_feasible(TINY, [budget])
    assert budget([anchor])[0] <= budget.limit

    # A cost whose resolutions are out of order (as a noisy latency table's per-resolution
    # offsets can be): the smallest arch at the cheaper resolution is the true minimum.
    def swapped(archs):
        return np.array([_toy_cost([a])[0] * (0.5 if a.resolution == 28 else 1.0) for a in archs])

    small28 = dataclasses.replace(TINY.smallest(), resolution=28)
    low = swapped([small28])[0]
    assert low < swapped([TINY.smallest()])[0]
    with pytest.raises(InfeasibleConstraint) as info:
        check_feasible(TINY, [Cost("swapped", swapped).at_most(low * 0.99)], num_samples=0)
    assert info.value.smallest == low and info.value.arch == small28
    assert check_feasible(TINY, [Cost("swapped", swapped).at_most(low)], num_samples=0) == small28
    result = evolutionary_search(TINY, _linear_accuracy(TINY), [budget], generations=3)
    assert (budget([c.arch for c in result.top]) <= budget.limit).all()


# ---------------------------------------------------------------- evolutionary search
def test_evolution_finds_true_constrained_optimum():
    archs = TINY.enumerate()
    accuracy = _linear_accuracy(TINY)
    acc, cost, params = accuracy(archs), _toy_cost(archs), _toy_params(archs)
    limits = (np.quantile(cost, 0.3), np.quantile(params, 0.5))
    budgets = [TOY.at_most(limits[0]), TOY_PARAMS.at_most(limits[1])]
    ok = (cost <= limits[0]) & (params <= limits[1])
    result = evolutionary_search(
        TINY, accuracy, budgets, population_size=30, generations=25, top_k=5, seed=0
    )
    assert result.best.score == pytest.approx(acc[ok].max())
    assert result.best.arch == archs[int(np.flatnonzero(ok)[np.argmax(acc[ok])])]
    # The top-K are the K best feasible archs, distinct, best first, with their own costs.
    assert [c.score for c in result.top] == pytest.approx(np.sort(acc[ok])[::-1][:5])
    assert len({c.arch for c in result.top}) == 5
    for c in result.top:
        assert c.costs == {
            "toy_macs": _toy_cost([c.arch])[0],
            "toy_params": _toy_params([c.arch])[0],
        }
    assert list(result.history) == sorted(result.history)


def _mbv3_budgets(net, macs_frac: float, params_frac: float) -> list[Constraint]:
    s, lg = net.space.smallest(), net.space.largest()
    return [
        macs_cost(net).at_most(net.macs(s) + macs_frac * (net.macs(lg) - net.macs(s))),
        params_cost(net).at_most(
            net.num_params(s) + params_frac * (net.num_params(lg) - net.num_params(s))
        ),
    ]


@pytest.mark.parametrize("fracs", [(0.3, 0.5), (0.02, 0.02)], ids=["medium", "tight"])
def test_evolution_never_returns_a_violating_arch(net, fracs):
    budgets = _mbv3_budgets(net, *fracs)
    calls = []

    def accuracy(archs):
        calls.append(len(archs))
        return _linear_accuracy(net.space)(archs)

    result = evolutionary_search(net.space, accuracy, budgets, generations=8, top_k=20)
    archs = [c.arch for c in result.top]
    assert len(set(archs)) == len(archs) >= 10
    for b in budgets:
        assert (b(archs) <= b.limit).all()  # checked with the same cost functions
    assert len(calls) <= 9 and result.num_evaluated == sum(calls)  # one batch per generation


def test_evolution_limit_at_smallest_and_seeding_fallback(net):
    # Only the smallest arch meets the budget: sampling finds nothing, mutations of the smallest
    # are all rejected, and every loop still ends.
    exact = macs_cost(net).at_most(net.macs(net.space.smallest()))
    result = evolutionary_search(
        net.space, _linear_accuracy(net.space), [exact], generations=3, max_init_attempts=50
    )
    assert [c.arch for c in result.top] == [net.space.smallest()]
    # A tight budget with few sampling attempts grows the population from the smallest arch.
    tight = _mbv3_budgets(net, 0.05, 1.0)[:1]
    result = evolutionary_search(
        net.space, _linear_accuracy(net.space), tight, generations=3, max_init_attempts=10
    )
    assert (
        len(result.top) == 10 and (tight[0]([c.arch for c in result.top]) <= tight[0].limit).all()
    )


def test_evolution_is_deterministic_under_a_seed(net):
    budgets = _mbv3_budgets(net, 0.3, 1.0)
    acc = _linear_accuracy(net.space)

    def run(seed):
        r = evolutionary_search(
            net.space, acc, budgets, population_size=30, generations=5, seed=seed
        )
        return [(c.arch, c.score) for c in r.top], r.history

    assert run(0) == run(0)
    assert run(torch.Generator().manual_seed(3)) == run(3)
    assert run(0) != run(1)
    state = torch.random.get_rng_state()
    run(0)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched


def test_evolution_rejects_bad_arguments():
    acc = _linear_accuracy(TINY)
    with pytest.raises(ValueError, match="parents_ratio"):
        evolutionary_search(TINY, acc, parents_ratio=1.5)
    with pytest.raises(ValueError, match="population_size"):
        evolutionary_search(TINY, acc, population_size=1)
    with pytest.raises(ValueError, match="unique"):
        evolutionary_search(TINY, acc, [TOY.at_most(1e9), TOY.at_most(1e8)])
    with pytest.raises(ValueError, match="Constraint objects"):
        evolutionary_search(TINY, acc, [TOY])
    with pytest.raises(ValueError, match="shape"):
        evolutionary_search(TINY, lambda archs: np.zeros(len(archs) + 1))
    with pytest.raises(ValueError, match="finite"):
        evolutionary_search(TINY, lambda archs: np.full(len(archs), np.nan))
    with pytest.raises(ValueError, match="callable"):
        evolutionary_search(TINY, "predictor")


# ---------------------------------------------------------------- NSGA-II Pareto search
def _check_front(result, constraints=()):
    front = result.front
    pts = np.array([(c.score, c.costs[result.objective]) for c in front])
    assert len(pareto_front(pts, maximize=(True, False))) == len(front)  # non-dominated
    assert (np.diff(pts[:, 1]) > 0).all() and (np.diff(pts[:, 0]) > 0).all()  # sorted, distinct
    assert len({c.arch for c in front}) == len(front)
    archs = [c.arch for c in front]
    for con in constraints:
        assert (con(archs) <= con.limit).all()
    return pts


def test_pareto_search_recovers_true_front_of_tiny_space():
    archs = TINY.enumerate()
    accuracy = _linear_accuracy(TINY, seed=1)
    budget = TOY_PARAMS.at_most(np.quantile(_toy_params(archs), 0.7))
    result = pareto_search(TINY, accuracy, TOY, [budget], generations=30, seed=0)
    assert isinstance(result.front[0], Candidate) and result.objective == "toy_macs"
    pts = _check_front(result, [budget])
    ok = _toy_params(archs) <= budget.limit
    truth = np.c_[accuracy(archs), _toy_cost(archs)][ok]
    true_front = {tuple(p) for p in truth[pareto_front(truth, maximize=(True, False))]}
    assert {tuple(p) for p in pts} == true_front


def test_pareto_search_is_deterministic_and_spreads(net):
    # Two budgets, one on the objective itself: the front stays inside both.
    budgets = _mbv3_budgets(net, 0.5, 0.5)
    calls = []

    def accuracy(archs):
        calls.append(len(archs))
        return _linear_accuracy(net.space)(archs)

    def run(seed):
        return pareto_search(
            net.space,
            accuracy,
            macs_cost(net),
            budgets,
            population_size=40,
            generations=8,
            seed=seed,
        )

    a = run(0)
    # One batch per generation: 8 of NSGA-II, 41 of the search for the most accurate arch.
    assert len(calls) <= 8 + 41 and a.num_evaluated == sum(calls)
    b = run(0)
    assert [(c.arch, c.score) for c in a.front] == [(c.arch, c.score) for c in b.front]
    assert [c.arch for c in a.front] != [c.arch for c in run(1).front]
    _check_front(a, budgets)
    assert set(a.front[0].costs) == {"macs", "params"}
    picks = a.spread(5)
    assert (
        len(picks) == min(5, len(a.front)) and picks[0] == a.front[0] and picks[-1] == a.front[-1]
    )
    assert a.front[0].to_dict()["arch"] == str(a.front[0].arch)


def test_pareto_front_spans_the_space_from_smallest_to_largest(net):
    # Accuracy rising with MACs: the largest arch is the front's most accurate end, however
    # unlikely a short search is to sample it.
    space = net.space

    def accuracy(archs):
        return np.log(np.array([net.macs(a) for a in archs], dtype=float))

    front = pareto_search(
        space, accuracy, macs_cost(net), generations=2, population_size=10, seed=0
    ).front
    assert front[0].arch == space.smallest() and front[-1].arch == space.largest()


def test_pareto_front_reaches_the_most_accurate_arch(net):
    # One best arch far from the extremes: a short NSGA-II alone ends its front well below it;
    # the evolutionary search for the most accurate arch (best_generations) puts it on the front.
    space = net.space
    target = space.sample(torch.Generator().manual_seed(100))
    t = space.encode(target)

    def accuracy(archs):
        return -(space.encode_batch(archs) - t).abs().sum(1).numpy()

    def front(**kw):
        return pareto_search(
            space, accuracy, macs_cost(net), generations=3, population_size=20, seed=0, **kw
        ).front

    assert front(best_generations=0)[-1].score < -20
    top = front()[-1]  # the front is sorted by cost, so by score too: the last is the best
    assert top.arch == target and top.score == 0
    # Unconstrained, the evolutionary search alone finds it too.
    assert evolutionary_search(space, accuracy, population_size=20, seed=0).best.arch == target


def test_pareto_search_rejects_bad_arguments():
    acc = _linear_accuracy(TINY)
    with pytest.raises(ValueError, match="objective must be a Cost"):
        pareto_search(TINY, acc, TOY.at_most(1e9))
    with pytest.raises(ValueError, match="generations"):
        pareto_search(TINY, acc, TOY, generations=0)
    other = Cost("toy_macs", _toy_params)
    with pytest.raises(ValueError, match="both named 'toy_macs'"):
        pareto_search(TINY, acc, other, [TOY.at_most(1e9)])
    with pytest.raises(ValueError, match="predict_many"):
        latency_cost(object())


def test_searches_start_from_feasible_seeds(net):
    """A seed the accuracy function rates far above everything (as a measured arch can be) is
    found by both searches, however unlikely sampling is to hit it; infeasible seeds are
    skipped."""
    space = net.space
    budgets = _mbv3_budgets(net, 0.3, 1.0)
    star = space.mutate(space.smallest(), 0.3, torch.Generator().manual_seed(5))
    assert (budgets[0]([star]) <= budgets[0].limit).all()
    base = _linear_accuracy(space)

    def accuracy(archs):
        out = base(archs)
        out[[a == star for a in archs]] = 1e3
        return out

    seeds = [space.largest(), star]  # the largest breaks the budget
    plain = evolutionary_search(space, accuracy, budgets, generations=3, seed=0)
    assert plain.best.arch != star
    seeded = evolutionary_search(space, accuracy, budgets, generations=3, seed=0, seeds=seeds)
    assert seeded.best.arch == star and seeded.best.score == 1e3
    front = pareto_search(
        space, accuracy, macs_cost(net), budgets, generations=3, population_size=20, seeds=seeds
    )
    assert star in [c.arch for c in front.front]
    assert space.largest() not in [c.arch for c in front.front]
