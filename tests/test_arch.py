"""ArchConfig and SearchSpace: validation, text/JSON forms, sampling, evolution, size, encoding."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from onceforall import ArchConfig, SearchSpace

SPACE = SearchSpace(5, (3, 5, 7), (3, 4, 6), (2, 3, 4), (24, 28, 32))
TINY = SearchSpace(2, (3, 5), (3, 6), (1, 2), (24, 28))
WIDE = SearchSpace(2, (3, 5), (3, 6), (1, 2), (24, 28), width_mults=(0.65, 1.0))


def test_string_and_json_round_trips():
    for space in (SPACE, TINY, WIDE):
        g = torch.Generator().manual_seed(0)
        for arch in [space.largest(), space.smallest()] + [space.sample(g) for _ in range(50)]:
            assert ArchConfig.parse(str(arch)) == arch
            assert ArchConfig.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
            assert hash(ArchConfig.parse(str(arch))) == hash(arch)


def test_string_form_is_compact_and_shell_safe():
    arch = TINY.arch(28, (2, 1), ((3, 5), (5,)), ((3, 6), (6,)))
    assert str(arch) == "r28-k3e3,k5e6_k5e6"
    assert str(WIDE.arch(24, (1, 1), ((3,), (5,)), ((3,), (6,)), (0.65, 1.0))) == (
        "r24-w0.65,1-k3e3_k5e6"
    )
    assert not set(str(SPACE.largest())) & set(" []{}()*?'\"$;|&<>")


def test_equal_networks_compare_equal():
    a = ArchConfig(28, [2], [[3, 5]], [[3, 4]])
    b = ArchConfig(28, (2,), ((3, 5),), ((3.0, 4.0),))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "28-k3e3",
        "r28",
        "r28-k3",
        "r28-k3e3,,k3e3",
        "r28-x-k3e3",
        "r28-k3e3-k3e3-k3e3",
        "rr-k3e3",
    ],
)
def test_parse_rejects_malformed_strings(text):
    with pytest.raises(ValueError, match=r"arch string|malformed"):
        ArchConfig.parse(text)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"resolution": 0}, "resolution=0"),
        ({"depths": (2,)}, "depths has 1 stages"),
        ({"kernel_sizes": ((3, 4), (3,))}, r"kernel_sizes\[0\]\[1\]=4 must be a positive odd"),
        ({"kernel_sizes": ((3,), (3,))}, "stage 0 has depth 2 but 1 kernel sizes"),
        ({"expand_ratios": ((3, -1), (3,))}, r"expand_ratios\[0\]\[1\]=-1.0 must be > 0"),
        ({"depths": (2, -1)}, r"depths\[1\]=-1"),
        ({"width_mults": (0,)}, r"width_mults\[0\]=0.0 must be > 0"),
        ({"resolution": "big"}, "resolution='big' must be an integer"),
    ],
)
def test_structural_validation(kwargs, pattern):
    base = {
        "resolution": 28,
        "depths": (2, 1),
        "kernel_sizes": ((3, 5), (3,)),
        "expand_ratios": ((3, 6), (3,)),
    }
    with pytest.raises(ValueError, match=pattern):
        ArchConfig(**{**base, **kwargs})


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("r30-k3e3_k3e3", r"resolution=30 is not one of the allowed choices \(24, 28\)"),
        (
            "r28-k7e3_k3e3",
            r"kernel_sizes\[0\]\[0\]=7 is not one of the allowed choices \(3, 5\)",
        ),
        ("r28-k3e4_k3e3", r"expand_ratios\[0\]\[0\]=4 is not one of the allowed choices"),
        (
            "r28-k3e3,k3e3,k3e3_k3e3",
            r"depths\[0\]=3 is not one of the allowed choices \(1, 2\)",
        ),
        ("r28-k3e3", "depths has 1 stages; this space has 2"),
        ("r28-w1,1-k3e3_k3e3", "this space has no elastic width"),
    ],
)
def test_space_validation_names_field_value_and_choices(text, pattern):
    arch = ArchConfig.parse(text)
    assert arch not in TINY
    with pytest.raises(ValueError, match=pattern):
        TINY.validate(arch)


def test_width_validation():
    with pytest.raises(ValueError, match="width_mults has 0 entries"):
        WIDE.validate(ArchConfig.parse("r28-k3e3_k3e3"))
    with pytest.raises(ValueError, match=r"width_mults\[1\]=0.8 is not one of"):
        WIDE.parse("r28-w1,0.8-k3e3_k3e3")


def test_from_dict_rejects_unknown_and_missing_keys():
    d = TINY.largest().to_dict()
    with pytest.raises(ValueError, match="unknown ArchConfig keys"):
        ArchConfig.from_dict({**d, "kernel": 3})
    del d["depths"]
    with pytest.raises(ValueError, match="missing keys"):
        ArchConfig.from_dict(d)


def test_largest_smallest_and_membership():
    big, small = SPACE.largest(), SPACE.smallest()
    assert big.depths == (4,) * 5 and set(sum(big.kernel_sizes, ())) == {7}
    assert set(sum(big.expand_ratios, ())) == {6.0} and big.resolution == 32
    assert small.depths == (2,) * 5 and small.resolution == 24
    assert big in SPACE and small in SPACE and "r28" not in SPACE
    # An arch's string is the arch, as everywhere an arch is taken.
    assert str(big) in SPACE and str(small) in SPACE and str(big).replace("r32", "r99") not in SPACE
    assert SPACE.validate(str(small)) == small and 28 not in SPACE


def _brute_force_size(space: SearchSpace) -> int:
    """Count distinct networks from the redundant 'every slot has a choice' representation the
    reference implementation uses, normalising each to an ArchConfig."""
    slots = space.max_depth
    per_stage = list(
        itertools.product(
            space.depths,
            itertools.product(space.kernel_sizes, repeat=slots),
            itertools.product(space.expand_ratios, repeat=slots),
        )
    )
    seen = set()
    for r in space.resolutions:
        for stages in itertools.product(per_stage, repeat=space.num_stages):
            seen.add(
                ArchConfig(
                    r,
                    tuple(d for d, _, _ in stages),
                    tuple(k[:d] for d, k, _ in stages),
                    tuple(e[:d] for d, _, e in stages),
                )
            )
    return len(seen)


def test_size_matches_an_independent_count():
    assert TINY.size == _brute_force_size(TINY) == 2 * (4 + 16) ** 2
    small = SearchSpace(2, (3, 5, 7), (3,), (1, 2, 3), (28,))
    assert small.size == _brute_force_size(small)
    assert len(set(TINY.enumerate())) == TINY.size
    assert len(set(WIDE.enumerate())) == WIDE.size == TINY.size * 4
    # The paper's OFA-MobileNetV3 space: ((3*3)^2 + (3*3)^3 + (3*3)^4)^5 ~ 2e19 per resolution.
    assert SearchSpace(5, (3, 5, 7), (3, 4, 6), (2, 3, 4), (224,)).size == (81 + 729 + 6561) ** 5


def test_sampling_is_seeded_and_covers_the_space():
    a = [SPACE.sample(torch.Generator().manual_seed(1)) for _ in range(3)]
    assert a[0] == a[1] == a[2] == SPACE.sample(1)
    g = torch.Generator().manual_seed(0)
    archs = [SPACE.sample(g) for _ in range(300)]
    assert len(set(archs)) == 300 and all(x in SPACE for x in archs)
    assert {x.resolution for x in archs} == set(SPACE.resolutions)
    assert {d for x in archs for d in x.depths} == set(SPACE.depths)
    state = torch.get_rng_state()
    SPACE.sample(torch.Generator().manual_seed(5))
    assert torch.equal(state, torch.get_rng_state()), "sampling must not touch the global RNG"
    # Choices are uniform per dimension (depth first, then the running blocks' choices), so in
    # a tiny space every arch turns up; the rarest has probability 1/2048.
    seen = {TINY.sample(g) for _ in range(20000)}
    assert len(seen) == TINY.size


def test_mutate_and_crossover_stay_in_space_and_are_deterministic():
    g = torch.Generator().manual_seed(0)
    parents = [SPACE.sample(g) for _ in range(50)]
    for a, b in itertools.pairwise(parents):
        m = SPACE.mutate(a, 0.3, torch.Generator().manual_seed(7))
        assert m in SPACE and m == SPACE.mutate(a, 0.3, torch.Generator().manual_seed(7))
        c = SPACE.crossover(a, b, torch.Generator().manual_seed(7))
        assert c in SPACE and c == SPACE.crossover(a, b, torch.Generator().manual_seed(7))
        for s in range(SPACE.num_stages):
            assert c.depths[s] in (a.depths[s], b.depths[s])
            for i, k in enumerate(c.kernel_sizes[s]):
                assert k in [p.kernel_sizes[s][i] for p in (a, b) if i < p.depths[s]]
    assert SPACE.mutate(parents[0], 0.0, g) == parents[0]
    mutated = [SPACE.mutate(parents[0], 1.0, g) for _ in range(20)]
    assert sum(m != parents[0] for m in mutated) >= 19
    assert SPACE.crossover(parents[0], parents[0], g) == parents[0]


def test_restrict_narrows_and_checks():
    phase = SPACE.restrict(kernel_sizes=(7,), depths=(4,))
    assert phase.kernel_sizes == (7,) and phase.depths == (4,) and phase.resolutions == (24, 28, 32)
    assert phase.size == 3 * 3 ** (4 * 5)
    assert all(a in SPACE for a in (phase.sample(i) for i in range(20)))
    with pytest.raises(ValueError, match="not a subset"):
        SPACE.restrict(kernel_sizes=(9,))
    with pytest.raises(ValueError, match="unknown dimension"):
        SPACE.restrict(kernel=(3,))
    with pytest.raises(ValueError, match="at least one choice"):
        SPACE.restrict(depths=())


def test_encoding_layout():
    arch = TINY.arch(28, (2, 1), ((3, 5), (5,)), ((6, 3), (6,)))
    enc = TINY.encode(arch)
    assert enc.shape == (TINY.encoding_size,) == (2 * 2 * 4 + 2,)
    # slot layout: [k3, k5, e3, e6] per slot; slot 3 (stage 1, block 1) skipped -> zeros
    expected = [1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1]
    assert enc.tolist() == expected
    batch = TINY.encode_batch([arch, TINY.smallest()])
    assert batch.shape == (2, TINY.encoding_size) and torch.equal(batch[0], enc)
    encs = {tuple(TINY.encode(a).tolist()) for a in TINY.enumerate()}
    assert len(encs) == TINY.size, "distinct archs must have distinct encodings"
    assert WIDE.encode(WIDE.largest()).shape == (WIDE.encoding_size,)
    assert WIDE.encode(WIDE.largest())[-4:].tolist() == [0, 1, 0, 1]


def test_describe_mentions_choices():
    text = SPACE.describe()
    assert "kernel {3, 5, 7}" in text and "subnets" in text


@pytest.mark.parametrize("space", [TINY, WIDE], ids=["tiny", "wide"])
def test_fast_batch_encoding_equals_the_reference_encoding(space):
    g = torch.Generator().manual_seed(3)
    archs = [space.sample(g) for _ in range(200)] + [space.largest(), space.smallest()]
    reference = torch.tensor([space.encode_list(a) for a in archs], dtype=torch.float32)
    assert torch.equal(space.encode_batch(archs), reference)
    assert torch.equal(space.encode_batch(archs[:1])[0], space.encode(archs[0]))
    outside = space.restrict(resolutions=space.resolutions[:1])
    with pytest.raises(ValueError, match="resolution"):
        outside.encode_batch([space.largest()])


# ---------------------------------------------------------------- base depths, widths, stem
# A ResNet-like space: one kernel size, stages of 1-2 and 2-3 blocks (base depths 1 and 2 plus
# {0, 1} extra), three width multipliers (say, the stem and two stages) and a stem of 2 or 3 layers.
RES = SearchSpace(
    2, (3,), (0.25, 0.35), (0, 1), (24, 28), (0.65, 1.0), base_depths=(1, 2), num_widths=3,
    stem_depths=(2, 3),
)  # fmt: skip


def _brute_force_res_size(space: SearchSpace) -> int:
    """Count distinct archs from the reference's redundant form: every slot of every stage has a
    choice, depth is an index into the extra-depth list, widths and stem always present."""
    slots = space.stage_max_depths
    per_stage = [
        list(
            itertools.product(
                space.depths,
                itertools.product(space.kernel_sizes, repeat=n),
                itertools.product(space.expand_ratios, repeat=n),
            )
        )
        for n in slots
    ]
    seen = set()
    for r, stem in itertools.product(space.resolutions, space.stem_depths):
        for w in itertools.product(space.width_mults, repeat=space.num_widths):
            for stages in itertools.product(*per_stage):
                depths = [b + d for b, (d, _, _) in zip(space.base_depths, stages, strict=True)]
                seen.add(
                    ArchConfig(
                        r,
                        tuple(depths),
                        tuple(k[:d] for d, (_, k, _) in zip(depths, stages, strict=True)),
                        tuple(e[:d] for d, (_, _, e) in zip(depths, stages, strict=True)),
                        w,
                        stem,
                    )
                )
    return len(seen)


def test_base_depths_widths_and_stem_structure():
    assert RES.stage_depths == ((1, 2), (2, 3)) and RES.stage_max_depths == (2, 3)
    assert RES.num_slots == 5 and RES.max_depth == 3
    big, small = RES.largest(), RES.smallest()
    assert big.depths == (2, 3) and small.depths == (1, 2)
    assert big.width_mults == (1.0,) * 3 and small.width_mults == (0.65,) * 3
    assert (big.stem_depth, small.stem_depth) == (3, 2)
    assert str(big) == "r28-s3-w1,1,1-k3e0.35,k3e0.35_k3e0.35,k3e0.35,k3e0.35"
    # Defaults: base 0 per stage, one width per stage where width is elastic, no stem.
    assert SPACE.base_depths == (0,) * 5 and SPACE.num_widths == 0 and SPACE.stem_depths == ()
    assert WIDE.num_widths == 2 and SearchSpace(**vars(RES)) == RES
    assert "stem depth {2, 3}" in RES.describe() and "depth (1, 2) + {0, 1}" in RES.describe()


def test_base_depths_widths_and_stem_round_trips_and_size():
    archs = RES.enumerate()
    assert len(set(archs)) == RES.size == _brute_force_res_size(RES)
    assert RES.size == 2 * 2 * 2**3 * (2 + 4) * (4 + 8)
    for arch in archs[::7]:
        assert ArchConfig.parse(str(arch)) == arch and RES.parse(str(arch)) == arch
        assert ArchConfig.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
    assert "stem_depth" not in TINY.largest().to_dict()  # unchanged JSON for stem-less families
    assert ArchConfig.parse("r28-s2-k3e3") == ArchConfig(28, (1,), ((3,),), ((3,),), (), 2)
    with pytest.raises(ValueError, match="malformed part 'x2'"):
        ArchConfig.parse("r28-s2-x2-k3e3")
    with pytest.raises(ValueError, match="malformed"):
        ArchConfig.parse("r28-w1-s2-k3e3")  # canonical order only: stem depth, then widths
    with pytest.raises(ValueError, match="stem_depth=0 must be a positive"):
        ArchConfig(28, (1,), ((3,),), ((3,),), (), 0)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("r28-s3-w1,1,1-k3e0.25_k3e0.25", r"depths\[1\]=1 is not one of the allowed choices "
         r"\(2, 3\)"),
        ("r28-s4-w1,1,1-k3e0.25_k3e0.25,k3e0.25", r"stem_depth=4 is not one of the allowed "
         r"choices \(2, 3\)"),
        ("r28-w1,1,1-k3e0.25_k3e0.25,k3e0.25", "stem_depth missing"),
        ("r28-s3-w1,1-k3e0.25_k3e0.25,k3e0.25", "width_mults has 2 entries; this space needs 3"),
        ("r28-s3-w1,1,0.8-k3e0.25_k3e0.25,k3e0.25", r"width_mults\[2\]=0.8 is not one of"),
        ("r28-s3-w1,1,1-k5e0.25_k3e0.25,k3e0.25", r"kernel_sizes\[0\]\[0\]=5 is not one of the "
         r"allowed choices \(3\)"),
    ],
)  # fmt: skip
def test_base_depths_widths_and_stem_validation(text, pattern):
    with pytest.raises(ValueError, match=pattern):
        RES.parse(text)
    with pytest.raises(ValueError, match="this space has no elastic stem"):
        TINY.validate(ArchConfig.parse("r28-s3-k3e3_k3e3"))
    with pytest.raises(ValueError, match="base_depths"):
        SearchSpace(2, (3,), (1,), (0, 1), (28,), base_depths=(1,))
    with pytest.raises(ValueError, match="num_widths"):
        SearchSpace(2, (3,), (1,), (0, 1), (28,), num_widths=3)


def test_base_depths_widths_and_stem_sampling_evolution_encoding():
    g = torch.Generator().manual_seed(0)
    seen = {RES.sample(g) for _ in range(60000)}  # the rarest arch has probability 1/4096
    assert len(seen) == RES.size, "uniform per dimension: every arch of a tiny space turns up"
    parents = [RES.sample(g) for _ in range(40)]
    for a, b in itertools.pairwise(parents):
        m = RES.mutate(a, 0.5, torch.Generator().manual_seed(3))
        c = RES.crossover(a, b, torch.Generator().manual_seed(3))
        assert m in RES and c in RES and c.stem_depth in (a.stem_depth, b.stem_depth)
        pairs = zip(c.width_mults, a.width_mults, b.width_mults, strict=True)
        assert all(w in (x, y) for w, x, y in pairs)
    assert {RES.mutate(parents[0], 1.0, g).stem_depth for _ in range(50)} == {2, 3}
    # 5 slots x (1 kernel + 2 expand) + 2 resolutions + 3 widths x 2 + 2 stem depths
    assert RES.encoding_size == 5 * 3 + 2 + 3 * 2 + 2
    archs = RES.enumerate()
    enc = RES.encode_batch(archs)
    assert enc.shape == (RES.size, RES.encoding_size)
    assert len({tuple(row.tolist()) for row in enc}) == RES.size, "encodings are injective"
    reference = torch.tensor([RES.encode_list(a) for a in archs[::11]])
    assert torch.equal(enc[::11], reference)
    assert RES.encode(RES.largest())[-2:].tolist() == [0, 1]  # stem one-hot last
    narrow = RES.restrict(stem_depths=(3,), width_mults=(1.0,), depths=(1,))
    assert narrow.size == 2 * 2**2 * 2**3 and narrow.largest() == RES.largest()
    assert narrow.smallest().depths == (2, 3) and narrow.smallest().stem_depth == 3


# ---------------------------------------------------------------- number and container checks
_BASE = {
    "resolution": 28,
    "depths": (2, 1),
    "kernel_sizes": ((3, 5), (3,)),
    "expand_ratios": ((3, 6), (3,)),
}


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"resolution": 28.7}, r"resolution=28.7 must be an integer, not a float"),
        ({"resolution": 28.0}, r"resolution=28.0 must be an integer, not a float"),
        ({"resolution": True}, r"resolution=True must be an integer, not a bool"),
        ({"resolution": "28"}, r"resolution='28' must be an integer, not a str"),
        ({"resolution": torch.tensor(28.0)}, r"resolution=tensor\(28.\) must be an integer"),
        ({"kernel_sizes": ((3, 3.5), (3,))}, r"kernel_sizes\[0\]\[1\]=3.5 must be an integer"),
        ({"depths": (1.5, 1)}, r"depths\[0\]=1.5 must be an integer"),
        ({"kernel_sizes": ("35", (3,))}, r"kernel_sizes\[0\]='35' must be a sequence"),
        ({"depths": 2}, r"depths=2 must be a sequence"),
        ({"expand_ratios": ((3, True), (3,))}, r"expand_ratios\[0\]\[1\]=True must be a number"),
        ({"expand_ratios": ((3, "6"), (3,))}, r"expand_ratios\[0\]\[1\]='6' must be a number"),
        ({"expand_ratios": ((3, float("nan")), (3,))}, r"expand_ratios\[0\]\[1\]=nan must be"),
        ({"expand_ratios": ((3, float("inf")), (3,))}, r"expand_ratios\[0\]\[1\]=inf must be"),
        ({"width_mults": (float("inf"),)}, r"width_mults\[0\]=inf must be a finite"),
        ({"width_mults": (np.bool_(True),)}, r"width_mults\[0\]=\S*True\S* must be a number"),
        ({"stem_depth": 2.5}, r"stem_depth=2.5 must be an integer"),
        (
            {"depths": (), "kernel_sizes": (), "expand_ratios": ()},
            "depths=\\(\\) has no stages",
        ),
    ],
)
def test_numbers_are_checked_not_truncated(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        ArchConfig(**{**_BASE, **kwargs})


def test_integer_scalars_of_numpy_and_torch_are_accepted():
    a = ArchConfig(
        np.int64(28),
        (torch.tensor(2), np.int32(1)),
        (np.array([3, 5]), torch.tensor([3])),
        ((np.float32(3), torch.tensor(6.0)), (3,)),
        stem_depth=np.uint8(2),
    )
    assert a == ArchConfig(28, (2, 1), ((3, 5), (3,)), ((3.0, 6.0), (3.0,)), (), 2)
    assert all(type(x) is int for x in (a.resolution, *a.depths, *a.kernel_sizes[0], a.stem_depth))
    assert all(type(e) is float for e in a.expand_ratios[0])


def test_from_dict_refuses_strings_instead_of_parsing_them():
    d = ArchConfig(28, (2, 1), ((3, 5), (7,)), ((3, 6), (3,))).to_dict()
    with pytest.raises(ValueError, match=r"kernel_sizes\[0\]='35' must be a sequence"):
        ArchConfig.from_dict({**d, "kernel_sizes": ["35", "7"]})
    with pytest.raises(ValueError, match=r"resolution='28' must be an integer"):
        ArchConfig.from_dict({**d, "resolution": "28"})


@pytest.mark.parametrize("value", [1e-5, 1.5e-7, 5e-324, 0.1 + 0.2, 1e16, 1e300, 1 / 3, 123.456])
def test_every_valid_arch_round_trips_through_its_string(value):
    a = ArchConfig(28, (1, 0), ((3,), ()), ((value,), ()), (value, 1.0), 2)
    text = str(a)
    assert "e-" not in text and "e+" not in text and " " not in text
    assert ArchConfig.parse(text) == a


def test_string_form_of_ordinary_values_is_unchanged():
    cases = {
        "r28-k3e3,k5e4_k7e6": ArchConfig(28, (2, 1), ((3, 5), (7,)), ((3, 4), (6,))),
        "r224-s3-w0.65,1.2,1-k3e0.25_0": ArchConfig(
            224, (1, 0), ((3,), ()), ((0.25,), ()), (0.65, 1.2, 1.0), 3
        ),
    }
    for text, arch in cases.items():
        assert str(arch) == text and ArchConfig.parse(text) == arch


def test_parse_reads_ascii_digits_only():
    with pytest.raises(ValueError, match="malformed"):
        ArchConfig.parse("r\u0662\u0668-k3e3")  # Arabic-Indic "28"


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"kernel_sizes": (3, 4)}, r"SearchSpace.kernel_sizes=\(3, 4\) has 4"),
        ({"kernel_sizes": (3, 3.5)}, r"SearchSpace.kernel_sizes\[1\]=3.5 must be an integer"),
        ({"kernel_sizes": ("35",)}, r"SearchSpace.kernel_sizes\[0\]='35' must be an integer"),
        ({"kernel_sizes": "35"}, r"SearchSpace.kernel_sizes='35' must be a sequence"),
        ({"expand_ratios": (3, -1)}, r"SearchSpace.expand_ratios=\(-1.0, 3.0\) has -1"),
        ({"expand_ratios": (3, float("nan"))}, r"SearchSpace.expand_ratios\[1\]=nan must be"),
        ({"depths": (1, -1)}, r"SearchSpace.depths=\(-1, 1\) has -1"),
        ({"depths": (1, True)}, r"SearchSpace.depths\[1\]=True must be an integer"),
        ({"resolutions": (28, 0)}, r"SearchSpace.resolutions=\(0, 28\) has 0"),
        ({"resolutions": (28.5,)}, r"SearchSpace.resolutions\[0\]=28.5 must be an integer"),
        ({"width_mults": (1.0, 0.0)}, r"SearchSpace.width_mults=\(0.0, 1.0\) has 0"),
        ({"stem_depths": (2, 0)}, r"SearchSpace.stem_depths=\(0, 2\) has 0"),
        ({"num_stages": 2.5}, r"SearchSpace.num_stages=2.5 must be an integer"),
        ({"num_stages": True}, r"SearchSpace.num_stages=True must be an integer"),
        ({"base_depths": (1, 1.5)}, r"SearchSpace.base_depths\[1\]=1.5 must be an integer"),
    ],
)
def test_space_checks_every_choice_of_every_dimension(kwargs, pattern):
    base = {
        "num_stages": 2,
        "kernel_sizes": (3, 5),
        "expand_ratios": (3, 6),
        "depths": (1, 2),
        "resolutions": (24, 28),
    }
    with pytest.raises(ValueError, match=pattern):
        SearchSpace(**{**base, **kwargs})


def test_space_accepts_numpy_choices():
    space = SearchSpace(
        np.int64(2), np.array([3, 5]), np.array([3.0, 6.0]), (np.int8(1), 2), (24, 28)
    )
    assert space == TINY and space.sample(0) == TINY.sample(0)


def test_restrict_accepts_any_iterable():
    assert SPACE.restrict(kernel_sizes=(k for k in (3,))).kernel_sizes == (3,)
    assert SPACE.restrict(depths=iter([2, 4]), resolutions=np.array([28])) == SPACE.restrict(
        depths=(2, 4), resolutions=(28,)
    )
    with pytest.raises(ValueError, match=r"SearchSpace.kernel_sizes='7' must be a sequence"):
        SPACE.restrict(kernel_sizes="7")
    with pytest.raises(ValueError, match=r"kernel_sizes\[0\]=7.5 must be an integer"):
        SPACE.restrict(kernel_sizes=(7.5,))


def test_seeds_may_be_numpy_integers_and_none_means_seed_0():
    assert SPACE.sample(np.int64(3)) == SPACE.sample(3)
    assert SPACE.mutate(SPACE.largest(), 0.5, np.int32(3)) == SPACE.mutate(SPACE.largest(), 0.5, 3)
    assert SPACE.sample() == SPACE.sample(0) == SPACE.sample(None)
    for bad in (True, 3.0, "3"):
        with pytest.raises(TypeError, match="int seed"):
            SPACE.sample(bad)
    for method in (SearchSpace.sample, SearchSpace.mutate, SearchSpace.crossover):
        assert "seed 0" in method.__doc__
