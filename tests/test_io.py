"""Image I/O: exact round trips checked against files written or read by Pillow / OpenCV directly."""

import os
import pickle

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from irformers.data import io
from irformers.data.io import ImageError, read_array, read_image, to_uint, write_image


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _u8(rng, *shape):
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _u16(rng, *shape):
    return rng.integers(0, 65536, shape, dtype=np.uint16)


def _pil(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


# --- round trips -----------------------------------------------------------------------------------


def test_png_8bit_rgb_round_trip_exact(tmp_path, rng):
    arr = _u8(rng, 5, 7, 3)
    p = tmp_path / "sub" / "dir" / "x.png"  # parent folders are created
    write_image(p, arr.astype(np.float32) / 255)
    np.testing.assert_array_equal(_pil(p), arr)  # channel order checked by an independent reader
    img = read_image(p)
    assert img.pixels.dtype == np.float32 and img.pixels.shape == (5, 7, 3)
    assert img.bit_depth == 8 and img.alpha is None and img.path == p
    np.testing.assert_array_equal(to_uint(img.pixels), arr)
    np.testing.assert_array_equal(read_array(p), arr)
    assert sorted(os.listdir(p.parent)) == ["x.png"]  # no temporary file left behind


def test_png_16bit_rgb_round_trip_exact(tmp_path, rng):
    arr = _u16(rng, 4, 6, 3)
    src = tmp_path / "src.png"
    cv2.imwrite(str(src), arr[..., ::-1])  # OpenCV stores BGR arrays as RGB files
    img = read_image(src)
    assert img.bit_depth == 16 and img.pixels.shape == (4, 6, 3)
    np.testing.assert_array_equal(to_uint(img.pixels, 16), arr)
    out = tmp_path / "out.png"
    write_image(out, img.pixels, bit_depth=img.bit_depth)
    np.testing.assert_array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), arr[..., ::-1])
    got = read_array(out, "unchanged")
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, arr)


def test_png_16bit_gray_round_trip_exact(tmp_path, rng):
    arr = _u16(rng, 4, 6)
    src = tmp_path / "g16.png"
    Image.fromarray(arr).save(src)
    img = read_image(src)
    assert img.bit_depth == 16 and img.pixels.shape == (4, 6, 1)
    np.testing.assert_array_equal(to_uint(img.pixels[..., 0], 16), arr)
    out = tmp_path / "out.png"
    write_image(out, img.pixels, bit_depth=16)
    with Image.open(out) as im:
        assert im.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(im), arr)


def test_rgba_png_alpha_kept_aside_and_reattached(tmp_path, rng):
    rgba = _u8(rng, 5, 6, 4)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
    src = tmp_path / "a.png"
    Image.fromarray(rgba).save(src)
    img = read_image(src)
    assert img.pixels.shape == (5, 6, 3) and img.alpha.shape == (5, 6) and img.alpha.dtype == np.float32
    np.testing.assert_array_equal(to_uint(img.pixels), rgba[..., :3])
    np.testing.assert_array_equal(to_uint(img.alpha), rgba[..., 3])
    np.testing.assert_array_equal(read_array(src), rgba[..., :3])  # alpha dropped for evaluation
    out = tmp_path / "b.png"
    write_image(out, img.pixels, alpha=img.alpha)
    with Image.open(out) as im:
        assert im.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(im), rgba)


def test_gray_alpha_png(tmp_path, rng):
    la = _u8(rng, 4, 5, 2)
    src = tmp_path / "la.png"
    Image.fromarray(la).save(src)
    img = read_image(src)
    assert img.pixels.shape == (4, 5, 1)
    np.testing.assert_array_equal(to_uint(img.pixels[..., 0]), la[..., 0])
    np.testing.assert_array_equal(to_uint(img.alpha), la[..., 1])
    out = tmp_path / "out.png"
    write_image(out, img.pixels, alpha=img.alpha)  # stored as RGBA with equal colour channels
    np.testing.assert_array_equal(_pil(out), la[..., [0, 0, 0, 1]])


def _png(path, pixels: np.ndarray, color_type: int, *chunks: tuple[bytes, bytes]) -> None:
    """A PNG written by hand: Pillow cannot write 16-bit gray + alpha."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    h, w = pixels.shape[:2]
    header = struct.pack(">IIBBBBB", w, h, pixels.dtype.itemsize * 8, color_type, 0, 0, 0)
    rows = pixels.astype(pixels.dtype.newbyteorder(">")).reshape(h, -1).view(np.uint8)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    parts = [chunk(b"IHDR", header), *(chunk(*c) for c in chunks), chunk(b"IDAT", zlib.compress(raw))]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(parts) + chunk(b"IEND", b""))


def test_16bit_gray_alpha_png_stays_gray(tmp_path, rng):
    """Pillow names it RGBA: it was read as a color image, which a gray model refused."""
    la = _u16(rng, 4, 5, 2)
    _png(tmp_path / "la16.png", la, 4)
    img = read_image(tmp_path / "la16.png")
    assert img.pixels.shape == (4, 5, 1) and img.bit_depth == 16
    np.testing.assert_array_equal(to_uint(img.pixels[..., 0], 16), la[..., 0])
    np.testing.assert_array_equal(to_uint(img.alpha, 16), la[..., 1])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_gray_png_with_a_transparent_value_keeps_its_alpha(tmp_path, rng, dtype):
    """OpenCV drops a gray PNG's tRNS chunk (palette and RGB ones become alpha): it came back opaque."""
    import struct

    gray = rng.integers(0, 256 if dtype == np.uint8 else 65536, (4, 5)).astype(dtype)
    gray[0, :3] = key = 202
    _png(tmp_path / "t.png", gray, 0, (b"tRNS", struct.pack(">H", key)))
    img = read_image(tmp_path / "t.png")
    np.testing.assert_array_equal(to_uint(img.pixels[..., 0], img.bit_depth), gray)
    assert img.alpha is not None
    np.testing.assert_array_equal(img.alpha == 0, gray == key)


def test_gray_png_stays_one_channel(tmp_path, rng):
    arr = _u8(rng, 6, 4)
    src = tmp_path / "g.png"
    Image.fromarray(arr).save(src)
    img = read_image(src)
    assert img.pixels.shape == (6, 4, 1) and img.bit_depth == 8
    np.testing.assert_array_equal(read_array(src, "gray"), arr)
    np.testing.assert_array_equal(read_array(src, "unchanged"), arr)
    np.testing.assert_array_equal(read_array(src, "rgb"), np.stack([arr] * 3, axis=2))
    out = tmp_path / "out.png"
    write_image(out, img.pixels)
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED).ndim == 2
    with Image.open(out) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), arr)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_a_palette_of_grays_is_a_gray_image(tmp_path, rng, suffix):
    """GIMP and ImageMagick save gray images with a palette: read as colour, a gray JPEG test encoded their
    BT.601 Y (16 + 219/255 v) and a gray set whose first file was one ran as a colour set."""
    arr, grays = _u8(rng, 6, 5), Image.new("P", (5, 6))
    grays.putpalette([v for i in range(256) for v in (i, i, i)])
    grays.putdata(arr.ravel().tolist())
    grays.save(tmp_path / f"g{suffix}")
    np.testing.assert_array_equal(read_array(tmp_path / f"g{suffix}", "gray"), arr)
    assert read_image(tmp_path / f"g{suffix}").pixels.shape == (6, 5, 1)
    colours = grays.copy()
    colours.putpalette([v for i in range(256) for v in (i, i, 255 - i)])
    colours.save(tmp_path / f"c{suffix}")
    assert read_array(tmp_path / f"c{suffix}", "unchanged").shape == (6, 5, 3)
    if suffix == ".png":  # a transparent palette entry: gray + alpha
        grays.save(tmp_path / "ga.png", transparency=0)
        img = read_image(tmp_path / "ga.png")
        assert img.pixels.shape == (6, 5, 1) and (img.alpha == (arr != 0)).all()


def test_equal_channels_rgb_file_stays_rgb(tmp_path, rng):
    src = tmp_path / "rgb.png"
    Image.fromarray(np.repeat(_u8(rng, 4, 4, 1), 3, axis=2)).save(src)
    assert read_image(src).pixels.shape == (4, 4, 3)
    with pytest.raises(ImageError, match=r"rgb\.png"):
        read_array(src, "gray")


@pytest.mark.parametrize("shape", [(5, 6), (5, 6, 3)])
def test_tiff_16bit_round_trip_exact(tmp_path, rng, shape):
    arr = _u16(rng, *shape)
    p = tmp_path / "x.tif"
    write_image(p, arr, bit_depth=16)
    np.testing.assert_array_equal(
        cv2.imread(str(p), cv2.IMREAD_UNCHANGED), arr[..., ::-1] if arr.ndim == 3 else arr
    )
    img = read_image(p)
    assert img.bit_depth == 16 and img.pixels.shape[2] == (3 if arr.ndim == 3 else 1)
    np.testing.assert_array_equal(read_array(p, "unchanged"), arr)


def test_tiff_unassociated_alpha_not_premultiplied(tmp_path, rng):
    rgba = _u8(rng, 4, 5, 4)
    rgba[..., 3] = rng.integers(1, 255, (4, 5))
    src = tmp_path / "a.tiff"
    Image.fromarray(rgba).save(src)  # Pillow writes ExtraSamples = unassociated alpha
    img = read_image(src)
    np.testing.assert_array_equal(to_uint(img.pixels), rgba[..., :3])
    np.testing.assert_array_equal(to_uint(img.alpha), rgba[..., 3])
    out = tmp_path / "b.tiff"
    write_image(out, img.pixels, alpha=img.alpha)
    np.testing.assert_array_equal(_pil(out), rgba)


def test_bmp_round_trip_and_gray_bmp(tmp_path, rng):
    arr = _u8(rng, 5, 7, 3)
    p = tmp_path / "x.bmp"
    write_image(p, arr)
    np.testing.assert_array_equal(_pil(p), arr)
    np.testing.assert_array_equal(read_array(p), arr)
    gray = _u8(rng, 5, 7)
    g = tmp_path / "g.bmp"
    Image.fromarray(gray).save(g)
    assert read_image(g).pixels.shape == (5, 7, 1)
    np.testing.assert_array_equal(read_array(g, "gray"), gray)


def _smooth(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (h + w - 2)], axis=2).astype(
        np.uint8
    )


def test_webp_lossless_and_lossy(tmp_path, rng):
    arr = _u8(rng, 6, 8, 3)
    p = tmp_path / "x.webp"
    write_image(p, arr, quality=100)  # quality 100 means lossless
    np.testing.assert_array_equal(_pil(p), arr)
    np.testing.assert_array_equal(read_array(p), arr)
    smooth = _smooth(32, 48)
    q = tmp_path / "y.webp"
    write_image(q, smooth, quality=90)
    err = np.abs(read_array(q).astype(int) - smooth)
    assert err.max() > 0 and err.mean() < 3


def test_jpeg_read_and_write_within_tolerance(tmp_path):
    smooth = _smooth(32, 48)
    src = tmp_path / "x.jpg"
    Image.fromarray(smooth).save(src, quality=95)
    img = read_image(src)
    assert img.pixels.shape == (32, 48, 3) and img.bit_depth == 8
    assert np.abs(to_uint(img.pixels).astype(int) - smooth).mean() < 2
    out = tmp_path / "out.jpeg"
    write_image(out, img.pixels, quality=95)
    assert np.abs(_pil(out).astype(int) - smooth).mean() < 3


# --- EXIF orientation ------------------------------------------------------------------------------


def test_jpeg_exif_orientation_rotates_90_cw(tmp_path):
    arr = np.full((40, 60, 3), 128, np.uint8)
    arr[:10, :10] = (255, 0, 0)  # red top-left corner
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    src = tmp_path / "rot.jpg"
    im.save(src, quality=95, exif=exif.tobytes())
    for got in (to_uint(read_image(src).pixels), read_array(src)):
        assert got.shape == (60, 40, 3)
        assert np.abs(got[2:8, -8:-2].astype(int) - (255, 0, 0)).max() < 20  # top-left went top-right
        assert np.abs(got[2:8, 2:8].astype(int) - 128).max() < 20


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_training_sizes_from_the_header_agree_with_the_decoded_image(tmp_path, suffix):
    """Training checks patch sizes and pairs from headers: they must see the rotation decoding applies."""
    from irformers.data.pipelines import image_size

    src = tmp_path / f"r{suffix}"
    im = Image.fromarray(np.full((40, 60, 3), 128, np.uint8))
    if suffix == ".tif":
        im.save(src, tiffinfo={0x0112: 6})
    else:
        exif = im.getexif()
        exif[0x0112] = 6
        im.save(src, exif=exif.tobytes())
    assert image_size(src) == read_array(src).shape[:2] == (60, 40)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_orientations_match_pillow_exif_transpose(tmp_path, rng, orientation):
    rgba = _u8(rng, 3, 5, 4)
    im = Image.fromarray(rgba)
    exif = im.getexif()
    exif[0x0112] = orientation
    src = tmp_path / "o.png"
    im.save(src, exif=exif.tobytes())
    with Image.open(src) as ref:
        expected = np.asarray(ImageOps.exif_transpose(ref))
    img = read_image(src)
    np.testing.assert_array_equal(to_uint(img.pixels), expected[..., :3])
    np.testing.assert_array_equal(to_uint(img.alpha), expected[..., 3])


def _oriented(arr: np.ndarray, orientation: int) -> np.ndarray:
    """arr as displayed, by Pillow's exif_transpose of an image holding pixel indices."""
    h, w = arr.shape[:2]
    index = Image.fromarray(np.arange(h * w, dtype=np.uint8).reshape(h, w))
    index.getexif()[0x0112] = orientation
    return arr.reshape(h * w, *arr.shape[2:])[np.asarray(ImageOps.exif_transpose(index))]


@pytest.mark.parametrize("kind", ["gray8", "gray16", "rgb8", "rgba8", "la8"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 7])
def test_tiff_orientation(tmp_path, rng, kind, orientation):
    # OpenCV orients TIFF itself (we must not do it twice), and Pillow 13 misreads TIFFs tagged 5-8, so the
    # expectation comes from the tag's meaning (_oriented), not from reading the TIFF with Pillow. Rotated
    # 8-bit TIFFs with alpha came out premultiplied (RGBA) or without their alpha (LA).
    arr = {
        "gray8": _u8(rng, 3, 5),
        "gray16": _u16(rng, 3, 5),
        "rgb8": _u8(rng, 3, 5, 3),
        "rgba8": _u8(rng, 3, 5, 4),
        "la8": _u8(rng, 3, 5, 2),
    }[kind]
    src = tmp_path / "o.tif"
    Image.fromarray(arr).save(src, tiffinfo={0x0112: orientation})
    expected = _oriented(arr, orientation)
    pixels, alpha = (expected[..., :-1], expected[..., -1]) if kind in ("rgba8", "la8") else (expected, None)
    pixels = pixels[..., 0] if kind == "la8" else pixels
    img = read_image(src)
    got = to_uint(img.pixels, img.bit_depth)
    np.testing.assert_array_equal(got if pixels.ndim == 3 else got[..., 0], pixels)
    if alpha is not None:
        np.testing.assert_array_equal(to_uint(img.alpha), alpha)
    np.testing.assert_array_equal(read_array(src, "unchanged"), pixels)


def test_tiff_orientation_stored_as_a_long(tmp_path, rng):
    """Some writers store tag 274 as a LONG, which was left for Pillow to misread (unrotated)."""
    import struct

    rgba = _u8(rng, 3, 5, 4)
    src = tmp_path / "long.tif"
    Image.fromarray(rgba).save(src, tiffinfo={0x0112: 6})
    data = bytearray(src.read_bytes())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for entry in range(ifd + 2, ifd + 2 + 12 * struct.unpack_from("<H", data, ifd)[0], 12):
        if struct.unpack_from("<H", data, entry)[0] == 0x0112:
            struct.pack_into("<HHII", data, entry, 0x0112, 4, 1, 6)
    src.write_bytes(bytes(data))
    img = read_image(src)
    expected = _oriented(rgba, 6)
    np.testing.assert_array_equal(to_uint(img.pixels), expected[..., :3])
    np.testing.assert_array_equal(to_uint(img.alpha), expected[..., 3])


# --- errors ----------------------------------------------------------------------------------------


def _truncated(tmp_path, name: str) -> None:
    full = tmp_path / f"full{os.path.splitext(name)[1]}"
    write_image(full, _smooth(64, 64))
    data = full.read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("name", "make", "problem"),
    [
        ("missing.png", lambda p: None, "no such file"),
        ("empty.png", lambda p: p.write_bytes(b""), "empty file"),
        ("text.png", lambda p: p.write_text("hello\nworld\n"), "not an image in a supported format"),
        ("folder.png", lambda p: p.mkdir(), "is a directory"),
        ("cut.png", lambda p: _truncated(p.parent, p.name), "truncated or corrupt"),
        ("cut.jpg", lambda p: _truncated(p.parent, p.name), "truncated or corrupt"),
        ("cut.tif", lambda p: _truncated(p.parent, p.name), "truncated or corrupt"),
        ("cut.webp", lambda p: _truncated(p.parent, p.name), "truncated or corrupt"),
        # a valid file Pillow has no mode for: it was called corrupt
        (
            "float.tif",
            lambda p: cv2.imwrite(str(p), np.zeros((4, 4, 3), np.float32)),
            "unsupported sample type",
        ),
    ],
)
def test_bad_files_raise_one_line_image_error(tmp_path, capfd, recwarn, name, make, problem):
    p = tmp_path / name
    make(p)
    capfd.readouterr()
    for read in (read_image, read_array):
        with pytest.raises(ImageError) as info:
            read(p)
        msg = str(info.value)
        assert msg.startswith(f"{p}: {problem}")
        assert "\n" not in msg
    assert capfd.readouterr().err == ""  # OpenCV's own warnings are silenced
    assert [str(w.message) for w in recwarn] == []  # and Pillow's (the cut TIFF's "Corrupt EXIF data")


def test_truncated_png_missing_only_iend_is_rejected(tmp_path):
    full = tmp_path / "full.png"
    write_image(full, _smooth(8, 8))
    p = tmp_path / "noend.png"
    p.write_bytes(full.read_bytes()[:-12])  # IEND is the last 12 bytes
    with pytest.raises(ImageError, match=r"noend\.png: truncated"):
        read_image(p)


def test_read_array_gray_on_colour_file_raises(tmp_path, rng):
    p = tmp_path / "colour.png"
    write_image(p, _u8(rng, 3, 3, 3))
    with pytest.raises(ImageError, match=r"colour\.png"):
        read_array(p, "gray")
    with pytest.raises(ValueError, match="mode"):
        read_array(p, "bgr")


def test_image_error_pickles():
    e = pickle.loads(pickle.dumps(ImageError("x.png: empty file")))
    assert isinstance(e, ImageError) and str(e) == "x.png: empty file"


@pytest.mark.parametrize(
    ("name", "kwargs", "problem"),
    [
        ("x.jpg", {"bit_depth": 16}, "cannot store 16-bit"),
        ("x.bmp", {"bit_depth": 16}, "cannot store 16-bit"),
        ("x.webp", {"bit_depth": 16}, "cannot store 16-bit"),
        ("x.jpg", {"alpha": np.ones((4, 4), np.float32)}, "cannot store alpha"),
        ("x.png", {"alpha": np.ones((3, 4), np.float32)}, "alpha shape"),
        ("x.gif", {}, "unsupported extension"),
        ("x.png", {"bit_depth": 12}, "bit_depth"),
        ("x.jpg", {"quality": 0}, "quality"),
    ],
)
def test_write_rejects_what_the_format_cannot_hold(tmp_path, name, kwargs, problem):
    with pytest.raises(ImageError, match=problem):
        write_image(tmp_path / name, np.zeros((4, 4, 3), np.float32), **kwargs)
    assert os.listdir(tmp_path) == []


def test_write_rejects_bad_integer_dtype_and_shape(tmp_path):
    with pytest.raises(ImageError, match="uint16"):
        write_image(tmp_path / "a.png", np.zeros((4, 4), np.uint16))  # bit_depth defaults to 8
    with pytest.raises(ImageError, match="int64"):
        write_image(tmp_path / "a.png", np.zeros((4, 4), np.int64))
    with pytest.raises(ImageError, match="H x W"):
        write_image(tmp_path / "a.png", np.zeros((4, 4, 4), np.float32))
    with pytest.raises(ImageError, match=r"a\.png: pixels contain NaN"):  # the path was missing
        write_image(tmp_path / "a.png", np.full((4, 4), np.nan, np.float32))
    with pytest.raises(ImageError, match=r"a\.png: pixels must be a numpy array, not list"):
        write_image(tmp_path / "a.png", [[0.5]])


# --- atomic write ----------------------------------------------------------------------------------


def _boom(*args, **kwargs):
    raise OSError("simulated failure")


@pytest.mark.parametrize("target", ["imencode", "replace"])
def test_failed_write_leaves_destination_untouched(tmp_path, monkeypatch, target):
    dest = tmp_path / "out.png"
    dest.write_bytes(b"previous content")
    if target == "imencode":
        monkeypatch.setattr(io.cv2, "imencode", _boom)
    else:  # fails after the temporary file has been fully written
        monkeypatch.setattr(io.os, "replace", _boom)
    # a failing write is the image's error, naming the file (a batch reports it and goes on)
    expected = OSError if target == "imencode" else ImageError
    with pytest.raises(expected, match="simulated"):
        write_image(dest, np.zeros((4, 4, 3), np.float32))
    assert dest.read_bytes() == b"previous content"
    assert os.listdir(tmp_path) == ["out.png"]


def test_failed_write_of_new_file_leaves_nothing(tmp_path, monkeypatch):
    real_open = open
    seen = []

    def failing_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        seen.append(os.path.basename(file))

        class Half:  # writes half the bytes, then fails like a full disk
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

            def write(self, data):
                f.write(data[: len(data) // 2])
                raise OSError("simulated failure")

        return Half()

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(ImageError, match=r"new.png: cannot write \(simulated failure\)"):
        write_image(tmp_path / "new.png", np.zeros((4, 4, 3), np.float32))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []
    assert seen and seen[0].startswith(".new.png.tmp-")  # a hidden temporary beside the destination


def test_a_name_near_the_file_system_limit_can_be_written(tmp_path):
    """The temporary name added 22 bytes to the destination's: names of 234-255 bytes failed."""
    p = tmp_path / ("ü" * 100 + "b" * 50 + ".png")  # 254 bytes
    write_image(p, np.zeros((2, 2), np.float32))
    assert os.listdir(tmp_path) == [p.name]


def test_written_file_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    p = tmp_path / "perm.png"
    write_image(p, np.zeros((2, 2), np.float32))
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask


# --- quantisation ----------------------------------------------------------------------------------


def test_to_uint_clips_and_rounds():
    x = np.array([-0.2, 0.0, 0.4 / 255, 0.6 / 255, 100.4 / 255, 1.0, 1.3])
    np.testing.assert_array_equal(to_uint(x), np.array([0, 0, 0, 1, 100, 255, 255], np.uint8))
    np.testing.assert_array_equal(to_uint(np.array([0.6 / 65535, 1.0]), 16), np.array([1, 65535], np.uint16))
    assert to_uint(np.zeros(1, np.float32), 16).dtype == np.uint16
    with pytest.raises(ValueError, match="NaN"):
        to_uint(np.array([np.nan]))
    with pytest.raises(ValueError, match="float"):
        to_uint(np.zeros(2, np.uint8))


def test_float_pixels_are_quantised_with_to_uint(tmp_path):
    x = np.array([[0.4 / 255, 0.6 / 255, 1.2, -1.0]], np.float32)
    p = tmp_path / "q.png"
    write_image(p, x)
    np.testing.assert_array_equal(_pil(p), [[0, 1, 255, 0]])
