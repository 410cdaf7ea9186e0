import math
import struct
from collections import Counter

import numpy as np
import pytest

from aird.errors import ModelFileError
from aird.models.dlib_format import DlibStream, LayerSpec, load_dlib_net, parse_dlib_net, read_dlib_net
from aird.models.dlib_resnet import default_dat_path, face_resnet_layout


@pytest.fixture(scope="module")
def dat_bytes() -> bytes:
    return default_dat_path().read_bytes()


def pack_int(value: int) -> bytes:
    """dlib's packed integer, written independently of the reader under test."""
    mag = abs(value)
    body = bytearray()
    while True:
        body.append(mag & 0xFF)
        mag >>= 8
        if mag == 0:
            break
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + bytes(body)


def pack_float(value: float) -> bytes:
    """dlib's float_details of a float32: mantissa * 2**exponent, with zero low bytes shifted off."""
    if math.isinf(value):
        return pack_int(0) + pack_int(32000 if value > 0 else 32001)
    if math.isnan(value):
        return pack_int(0) + pack_int(32002)
    frac, exp = math.frexp(value)
    mantissa, exponent = int(frac * (1 << 24)), exp - 24
    while mantissa and mantissa & 0xFF == 0:
        mantissa >>= 8
        exponent += 8
    return pack_int(mantissa) + pack_int(exponent)


def test_packed_integers_floats_strings_bools():
    data = pack_int(0) + pack_int(150) + pack_int(-4736) + pack_int(2**40) + b"\x01\x05con_4" + b"10"
    s = DlibStream(data)
    assert [s.int("a"), s.int("b"), s.int("c"), s.uint("d")] == [0, 150, -4736, 2**40]
    assert s.string("version") == "con_4"
    assert (s.bool("x"), s.bool("y")) == (True, False)
    assert s.remaining() == 0
    # The loss layer's margin as it sits in the real file: 0xa3d70a * 2**-28.
    assert DlibStream(bytes.fromhex("030ad7a3811c")).float("margin") == pytest.approx(0.04, rel=1e-7)
    for value in (0.6, -117.001, 1e-30, 3.0e38, math.inf, -math.inf):
        assert DlibStream(pack_float(np.float32(value).item())).float("v") == np.float32(value).item()
    assert math.isnan(DlibStream(pack_float(math.nan)).float("v"))


def test_packed_integer_errors_name_what_was_expected():
    with pytest.raises(ModelFileError, match="invalid packed integer .* where n was expected"):
        DlibStream(b"\x71\x00", "f.dat").int("n")  # reserved bits set
    with pytest.raises(ModelFileError, match="f.dat: invalid packed integer"):
        DlibStream(pack_int(-3), "f.dat").uint("n")  # negative where dlib wants unsigned
    with pytest.raises(ModelFileError, match="truncated"):
        DlibStream(b"\x04\x01\x02", "f.dat").int("n")
    with pytest.raises(ModelFileError, match="expected a bool"):
        DlibStream(b"\x02", "f.dat").bool("flag")


def test_tensor_versions_1_and_2():
    values = np.array([0.5, -1.25, 3.0e-5, 7.0, 0.0, -2.0], dtype=np.float32)
    v2 = pack_int(2) + b"".join(pack_int(d) for d in (1, 2, 3, 1)) + struct.pack("<6f", *values)
    got = DlibStream(v2).tensor("t")
    assert got.shape == (1, 2, 3, 1) and got.dtype == np.float32
    np.testing.assert_array_equal(got.ravel(), values)
    # Version 1 lists num_samples, nr, nc, k and stores dlib floats; the data order is the same.
    v1 = pack_int(1) + b"".join(pack_int(d) for d in (1, 3, 1, 2)) + b"".join(pack_float(v.item()) for v in values)
    got = DlibStream(v1).tensor("t")
    assert got.shape == (1, 2, 3, 1)
    np.testing.assert_array_equal(got.ravel(), values)
    with pytest.raises(ModelFileError, match="unknown tensor version 7"):
        DlibStream(pack_int(7)).tensor("t")
    with pytest.raises(ModelFileError, match="truncated"):
        DlibStream(v2[:-3]).tensor("t")


def test_reads_the_real_file(dat_bytes):
    net = parse_dlib_net(dat_bytes, face_resnet_layout(), "real.dat")
    assert len(net.layers) == 130
    kinds = Counter(rec.kind for rec in net.layers)
    assert kinds == {
        "con": 29,
        "affine": 29,
        "relu": 29,
        "tag": 18,
        "add_prev": 14,
        "avg_pool": 5,
        "skip": 4,
        "max_pool": 1,
        "fc": 1,
    }
    assert net.num_params() == 5_614_592
    assert net.input.version == "input_rgb_image_sized" and net.input.size == (150, 150)
    assert net.input.mean_rgb == pytest.approx((122.782, 117.001, 104.298), abs=1e-3)
    assert (net.loss.version, net.loss.margin, net.loss.dist_thresh) == (
        "loss_metric_2",
        pytest.approx(0.04),
        pytest.approx(0.6),
    )

    convs = [rec for rec in net.layers if rec.kind == "con"]
    assert convs[0].params["weight"].shape == (32, 3, 7, 7) and convs[0].params["bias"].shape == (32,)
    assert {k: convs[0].attrs[k] for k in ("nr", "stride_y", "padding_y")} == {"nr": 7, "stride_y": 2, "padding_y": 0}
    assert convs[-1].params["weight"].shape == (256, 256, 3, 3)
    # every filter bank takes the channels the previous one produced
    assert all(b.params["weight"].shape[1] == a.params["weight"].shape[0] for a, b in zip(convs, convs[1:]))
    affines = [rec for rec in net.layers if rec.kind == "affine"]
    assert [a.params["gamma"].shape for a in affines[:2]] == [(32,), (32,)]
    fc = net.layers[-1]
    assert fc.kind == "fc" and fc.params["weight"].shape == (256, 128) and "bias" not in fc.params
    pools = [rec.attrs for rec in net.layers if rec.kind == "avg_pool"]
    assert pools[-1]["nr"] == 0 and pools[0] == dict(nr=2, nc=2, stride_y=2, stride_x=2, padding_y=0, padding_x=0)


@pytest.mark.parametrize("keep", [0, 7, 500, 11_000_000, -1])
def test_truncated_file_fails_clearly(dat_bytes, tmp_path, keep):
    path = tmp_path / "cut.dat"
    path.write_bytes(dat_bytes[:keep])
    with pytest.raises(ModelFileError, match="truncated") as err:
        read_dlib_net(path, face_resnet_layout())
    assert str(path) in str(err.value)


def test_garbage_file_fails_clearly(tmp_path):
    path = tmp_path / "garbage.dat"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelFileError, match="expected|invalid") as err:
        read_dlib_net(path, face_resnet_layout())
    assert str(path) in str(err.value)
    # Another dlib file (the landmark predictor) is refused too.
    with pytest.raises(ModelFileError):
        parse_dlib_net(b"\x01\x01\x01\x05con_4" + bytes(64), face_resnet_layout(), "other.dat")


def test_missing_file_and_wrong_layout(dat_bytes, tmp_path):
    with pytest.raises(ModelFileError, match="cannot read"):
        read_dlib_net(tmp_path / "absent.dat", face_resnet_layout())
    layout = list(face_resnet_layout())
    del layout[4:12]  # one residual block fewer than the file holds
    with pytest.raises(ModelFileError, match="expected"):
        parse_dlib_net(dat_bytes, layout, "real.dat")
    with pytest.raises(ValueError):
        LayerSpec("skip")  # a skip needs its tag id


def test_non_finite_weights_are_refused(dat_bytes):
    data = bytearray(dat_bytes)
    # first float of the stem filters: after "con_4", tensor version 2 and its 4 dimensions
    start = data.index(b"con_4") + len(b"con_4") + len(pack_int(2) + pack_int(4736) + pack_int(1) * 3)
    data[start : start + 4] = struct.pack("<f", math.nan)
    with pytest.raises(ModelFileError, match="non-finite"):
        parse_dlib_net(bytes(data), face_resnet_layout(), "nan.dat")


def test_cache_round_trip_and_damaged_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRD_CACHE", str(tmp_path))
    first = load_dlib_net(default_dat_path(), face_resnet_layout())
    cached = list((tmp_path / "models" / "dlib").glob(f"{first.sha256}.safetensors"))
    assert len(cached) == 1
    second = load_dlib_net(default_dat_path(), face_resnet_layout())
    assert [(r.kind, r.version, r.tag, r.attrs) for r in second.layers] == [
        (r.kind, r.version, r.tag, r.attrs) for r in first.layers
    ]
    for a, b in zip(first.layers, second.layers):
        assert a.params.keys() == b.params.keys()
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])
    assert second.input == first.input and second.loss == first.loss
    cached[0].write_bytes(b"not a safetensors file")
    third = load_dlib_net(default_dat_path(), face_resnet_layout())
    np.testing.assert_array_equal(third.layers[-1].params["weight"], first.layers[-1].params["weight"])
