import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmtpp import timecodec
from mmtpp.timecodec import ByteTokenCodec, decode, encode

# Exact IEEE behaviour, subnormals included (conftest switches off the flush other tests set).
pytestmark = pytest.mark.ieee


# Byte token ids deliberately not contiguous and not starting at 0.
BYTE_IDS = 1000 + 3 * np.arange(256)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1.0, (63, 128, 0, 0)), (5.3, (64, 169, 153, 154)), (0.31666666, (62, 162, 34, 34))],
)
def test_spec_examples(value, expected):
    assert tuple(encode(value)) == expected
    assert decode(np.array(expected)) == np.float32(value)


def test_spec_decode_example():
    assert decode([62, 162, 34, 34]) == pytest.approx(0.31666666, abs=1e-8)


def test_vectorised_shapes():
    gaps = np.array([[1.0, 5.3], [0.0, 2.5]])
    raw = encode(gaps)
    assert raw.shape == (2, 2, 4) and raw.dtype == np.uint8
    np.testing.assert_array_equal(decode(raw), gaps.astype(np.float32))


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_round_trip_every_finite_float32(x):
    x32 = np.float32(x)
    assert decode(encode(x32)).tobytes() == x32.tobytes()
    codec = ByteTokenCodec(BYTE_IDS)
    value, reason = codec.decode_one(codec.to_ids(x32))
    if x32 < 0:
        assert reason == timecodec.NEGATIVE
    else:
        assert reason is None and np.float32(value).tobytes() == x32.tobytes()


@given(arrays(np.float32, st.integers(0, 50), elements=st.floats(0, 2.0**100, width=32)))
def test_round_trip_arrays(values):
    np.testing.assert_array_equal(decode(encode(values)), values)


@pytest.mark.parametrize(
    ("tokens", "reason"),
    [
        ([63, 128, 0], timecodec.WRONG_LENGTH),
        ([63, 128, 0, 0, 0], timecodec.WRONG_LENGTH),
        ([127, 192, 0, 0], timecodec.NOT_FINITE),  # NaN
        ([127, 128, 0, 0], timecodec.NOT_FINITE),  # +inf
        ([191, 128, 0, 0], timecodec.NEGATIVE),  # -1.0
    ],
)
def test_invalid_outcomes_are_reasoned_and_counted(tokens, reason):
    codec = ByteTokenCodec(BYTE_IDS)
    out = codec.decode_many([BYTE_IDS[tokens], BYTE_IDS[[63, 128, 0, 0]]])
    assert out.reasons == [reason, None]
    assert np.isnan(out.values[0]) and out.values[1] == 1.0
    assert out.invalid_counts()[reason] == 1 and sum(out.invalid_counts().values()) == 1
    assert out.valid.tolist() == [False, True]


def test_non_byte_token_is_invalid():
    codec = ByteTokenCodec(BYTE_IDS)
    assert codec.decode_one([BYTE_IDS[63], 5, BYTE_IDS[0], BYTE_IDS[0]]) == (
        None,
        timecodec.NOT_A_BYTE,
    )
    assert codec.decode_one([BYTE_IDS[63], 10**9, BYTE_IDS[0], -1])[1] == timecodec.NOT_A_BYTE


def test_codec_rejects_bad_id_table():
    with pytest.raises(ValueError, match="256"):
        ByteTokenCodec(np.arange(255))
    with pytest.raises(ValueError, match="distinct"):
        ByteTokenCodec(np.zeros(256))


def test_interval_width_is_the_float32_cell():
    w = timecodec.float32_interval_width([1.0, 1.5, 0.0, 3.0e-45])
    assert w[0] == 0.75 * 2.0**-23  # a power of two: half an ulp below, half above
    assert w[1] == 2.0**-23  # one ulp elsewhere
    assert w[2] == 2.0**-150  # [0, half the smallest subnormal]
    assert w[3] == 2.0**-149


def test_resolution_bins_are_centred_on_the_grid_and_cut_at_zero():
    bins = timecodec.resolution_bins([1.0, 0.0, 2.0 + 1e-9, 0.01], 1 / 60)
    r = 1 / 60
    # 0.6 min rounds to the 1-minute grid point; a tie's bin starts at 0
    want = [[1 - r / 2, 1 + r / 2], [0.0, r / 2], [2 - r / 2, 2 + r / 2], [r / 2, 3 * r / 2]]
    np.testing.assert_allclose(bins, want, atol=1e-15)
    # half-way: the half-open bin that holds the gap
    np.testing.assert_array_equal(
        timecodec.resolution_bins([2.5, 0.5], 1.0), [[2.5, 3.5], [0.5, 1.5]]
    )
    with pytest.raises(ValueError, match="positive"):
        timecodec.resolution_bins([1.0], 0.0)
