"""Image files in and out: exact integers, bit depth and alpha preserved, nothing half-read or half-written.

OpenCV decodes and encodes: it keeps 16-bit colour, which Pillow drops, and it is the codec the JPEG
benchmarks assume. Pillow inspects each file (colour type, EXIF orientation, truncation, which OpenCV
does not report reliably) and decodes the one case OpenCV gets wrong, 8-bit TIFF with alpha.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
from PIL import ExifTags, Image

_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"BM": "BMP",
}
# Highest bit depth each writable extension can hold, and which of them store alpha (a 32-bit BMP's
# fourth byte is "reserved" and readers disagree on it, so BMP does not count).
MAX_BIT_DEPTH = {".png": 16, ".tif": 16, ".tiff": 16, ".bmp": 8, ".jpg": 8, ".jpeg": 8, ".webp": 8}
ALPHA_FORMATS = {".png", ".tif", ".tiff", ".webp"}
_PEAK = {8: 255, 16: 65535}
_DTYPE = {8: np.uint8, 16: np.uint16}
# EXIF orientation -> the transform a viewer applies (same as PIL.ImageOps.exif_transpose).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


class ImageError(ValueError):
    """A file that cannot be read or written as an image; the message is one line, "<path>: <problem>".

    Built from the single message string (not from path and problem) so that it survives pickling, e.g.
    when a DataLoader worker re-raises it in the main process.
    """


class InputError(ValueError):
    """An image a model cannot take (its channels); raised without the file name, which the caller adds."""


def error_line(err: BaseException) -> str:
    """An error's message on one line. One re-raised from a DataLoader worker carries the worker's
    traceback, whose last line is the message; others keep their first line."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    if len(lines) > 1 and lines[1].startswith("Original Traceback"):
        return lines[-1].removeprefix(f"{type(err).__module__}.{type(err).__name__}: ")
    return lines[0]


@dataclass
class LoadedImage:
    pixels: np.ndarray  # float32, H x W x C in [0, 1], C = 1 (gray) or 3 (RGB)
    alpha: np.ndarray | None  # float32, H x W in [0, 1]; None when the file has no alpha
    bit_depth: int  # 8 or 16, as stored, so that writing can keep it
    path: Path | None


def read_image(path: str | Path) -> LoadedImage:
    """Float pixels for models; gray files stay one channel, alpha is set aside rather than blended."""
    arr, alpha = _decode(path)
    bit_depth = 8 if arr.dtype == np.uint8 else 16
    peak = np.float32(_PEAK[bit_depth])
    pixels = arr.astype(np.float32) / peak
    return LoadedImage(
        pixels=pixels[..., None] if pixels.ndim == 2 else pixels,
        alpha=None if alpha is None else alpha.astype(np.float32) / peak,
        bit_depth=bit_depth,
        path=Path(path),
    )


def read_array(path: str | Path, mode: str = "rgb") -> np.ndarray:
    """Stored integer pixels for evaluation, where any silent conversion would change the reported numbers.

    mode "rgb": H x W x 3, gray files as three equal channels; "gray": H x W, a colour file is an error;
    "unchanged": H x W or H x W x 3 as stored. Alpha is dropped; the dtype (uint8/uint16) is the file's.
    """
    if mode not in ("rgb", "gray", "unchanged"):
        raise ValueError(f"mode must be 'rgb', 'gray' or 'unchanged', not {mode!r}")
    arr, _ = _decode(path)
    if mode == "gray" and arr.ndim == 3:
        raise _error(path, "colour image where a gray one is expected")
    if mode == "rgb" and arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    return arr


def to_uint(pixels: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """Float [0, 1] -> clipped, rounded uint8/uint16: the one quantisation saved outputs and metrics share."""
    if bit_depth not in _PEAK:
        raise ValueError(f"bit_depth must be 8 or 16, not {bit_depth}")
    if not np.issubdtype(pixels.dtype, np.floating):
        raise ValueError(f"to_uint expects float pixels in [0, 1], got {pixels.dtype}")
    if np.isnan(pixels).any():
        raise ValueError("pixels contain NaN")
    return np.rint(np.clip(pixels, 0.0, 1.0) * _PEAK[bit_depth]).astype(_DTYPE[bit_depth])


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8, 1 = as stored) that decoding applies, read from an open image's
    header: TIFF's own tag, or the EXIF block of JPEG, PNG and WebP. Pillow's PNG getexif() would
    decode the whole image to look for an eXIf chunk after the pixels; writers put it before, where
    open() sees it."""
    if im.format == "TIFF":
        value = im.tag_v2.get(ExifTags.Base.Orientation, 1)
    else:
        value = im.getexif().get(ExifTags.Base.Orientation, 1) if "exif" in im.info else 1
    return value if value in range(1, 9) else 1  # a value outside the standard's is ignored


def decoded_size(im: Image.Image) -> tuple[int, int]:
    """(height, width) of an open image once decoded and oriented, from its header alone: TIFF's
    stored width and length (Pillow 13 may report them rotated), then orientations 5-8 transpose."""
    w, h = (im.tag_v2[256], im.tag_v2[257]) if im.format == "TIFF" else im.size
    return (w, h) if exif_orientation(im) >= 5 else (h, w)


TEMP_GLOB = ".*.tmp-*"  # the names atomic_write gives its temporary files


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Run `write(tmp)` on a new file beside `path`, then rename it into place (atomic on one file
    system): readers never see a half-written file, and a crash leaves any old file untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    short = path.name.encode()[:200].decode(errors="ignore")  # within 255 bytes with what it adds
    tmp = path.with_name(f".{short}.tmp-{secrets.token_hex(8)}")
    try:
        with open(tmp, "xb"):  # created with the umask's permissions (mkstemp would give 0600)
            pass
        mode = tmp.stat().st_mode
        write(tmp)
        os.chmod(tmp, mode)  # writers that recreate the file (safetensors) keep those permissions
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())  # on disk before it replaces the old file (a power cut keeps one)
        os.replace(tmp, path)
        _sync_folder(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def folder_problem(folder: Path) -> str | None:
    """Why `folder` cannot take files, or None: a nameless probe file is made in it, or in the nearest
    folder above that exists (a refused command leaves no new folder behind)."""
    if folder.exists() and not folder.is_dir():
        return "must be a folder, and this is a file"
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return f"cannot be created ({existing} is a file)"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        return f"cannot be written ({err.strerror or err})"
    return None


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries, so that a rename into it survives a power cut (POSIX; best effort where
    the file system cannot sync folders)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path: str | Path, text: str) -> None:
    """A text file (results JSON, a table, a config) written atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_image(
    path: str | Path,
    pixels: np.ndarray,
    bit_depth: int = 8,
    alpha: np.ndarray | None = None,
    quality: int = 95,
) -> None:
    """Save atomically, so an interrupted run never leaves a truncated image that looks finished.

    pixels: float in [0, 1] (quantised with `to_uint` to `bit_depth`) or uint8/uint16 written as they are
    (their dtype must match `bit_depth`); H x W, H x W x 1 or H x W x 3 RGB. alpha: H x W, same rules.
    The extension picks the format: .png/.tif/.tiff (8 or 16 bit), .bmp, .jpg/.jpeg, .webp (8 bit).
    quality applies to JPEG and WebP; WebP at quality 100 is lossless. Gray + alpha is stored as RGBA
    because OpenCV's encoders take 1, 3 or 4 channels.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in MAX_BIT_DEPTH:
        raise _error(path, f"unsupported extension {path.suffix!r} (use {', '.join(MAX_BIT_DEPTH)})")
    if bit_depth not in _PEAK:
        raise _error(path, f"bit_depth must be 8 or 16, not {bit_depth}")
    if bit_depth > MAX_BIT_DEPTH[ext]:
        raise _error(path, f"{ext} cannot store {bit_depth}-bit pixels")
    if not 1 <= quality <= 100:
        raise _error(path, f"quality must be in 1..100, not {quality}")
    img = _quantise(path, pixels, bit_depth, "pixels")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise _error(path, f"pixels must be H x W, H x W x 1 or H x W x 3, not {pixels.shape}")
    if alpha is not None:
        if ext not in ALPHA_FORMATS:
            raise _error(path, f"{ext} cannot store alpha")
        a = _quantise(path, alpha, bit_depth, "alpha")
        if a.shape != img.shape[:2]:
            raise _error(path, f"alpha shape {alpha.shape} does not match pixels {pixels.shape[:2]}")
        rgb = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
        img = cv2.cvtColor(np.dstack([rgb, a]), cv2.COLOR_RGBA2BGRA)
    elif img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)

    params: list[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, 101 if quality == 100 else quality]  # OpenCV: >100 = lossless
    with _quiet_opencv():
        ok, encoded = cv2.imencode(ext, np.ascontiguousarray(img), params)
    if not ok:
        raise _error(path, f"the {ext} encoder failed")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(encoded.tobytes())

    try:
        atomic_write(path, write)
    except OSError as err:  # a folder in the way, no permission, disk full: this image fails, not the batch
        raise _error(path, f"cannot write ({err.strerror or err})") from None


def _error(path: str | Path, problem: str) -> ImageError:
    return ImageError(f"{path}: {problem}")


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    # OpenCV logs decoder complaints to stderr; failures are reported through ImageError instead.
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


@contextlib.contextmanager
def _quiet_pillow() -> Iterator[None]:
    # Pillow warns without the file's name (e.g. "Corrupt EXIF data"); failures are ImageErrors, one line.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        yield


def _quantise(path: Path, arr: np.ndarray, bit_depth: int, what: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray):  # a tensor failed inside numpy ("Cannot interpret 'torch.float32'")
        raise _error(path, f"{what} must be a numpy array, not {type(arr).__name__}")
    if np.issubdtype(arr.dtype, np.floating):
        if np.isnan(arr).any():  # to_uint's own error would not name the file
            raise _error(path, f"{what} contain NaN")
        return to_uint(arr, bit_depth)
    if arr.dtype != _DTYPE[bit_depth]:
        raise _error(
            path,
            f"{what} of dtype {arr.dtype} cannot be written at bit_depth={bit_depth} "
            "(use float in [0, 1], uint8 for 8 bit or uint16 for 16 bit)",
        )
    return arr


def _sniff(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for sig, fmt in _SIGNATURES.items() if data.startswith(sig)), None)


def _as_stored(tiff: bytes) -> bytes:
    """The TIFF with its first image's orientation tag set to 1, so that a decoder leaves it as stored."""
    order = "<" if tiff[:2] == b"II" else ">"
    ifd = struct.unpack_from(order + "I", tiff, 4)[0]
    out = bytearray(tiff)
    for entry in range(ifd + 2, ifd + 2 + 12 * struct.unpack_from(order + "H", tiff, ifd)[0], 12):
        tag, kind = struct.unpack_from(order + "HH", tiff, entry)
        if tag == ExifTags.Base.Orientation and kind in (3, 4):  # SHORT, or LONG as some writers store it
            struct.pack_into(order + ("H" if kind == 3 else "I"), out, entry + 8, 1)
    return bytes(out)


def _png_gray_key(png: bytes) -> int | None:
    """A gray PNG's transparent sample value (its tRNS chunk, before the pixels), which OpenCV drops."""
    at = 8
    while at + 8 <= len(png):
        length, kind = struct.unpack_from(">I4s", png, at)
        if kind == b"IDAT":
            return None
        if kind == b"tRNS" and length == 2:
            return struct.unpack_from(">H", png, at + 8)[0]
        at += 12 + length
    return None


def _decode(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Stored integers in RGB order (H x W for gray files, else H x W x 3), oriented, and the alpha plane."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise _error(path, "no such file") from None
    except IsADirectoryError:
        raise _error(path, "is a directory") from None
    except OSError as e:
        raise _error(path, f"cannot read ({e.strerror})") from e
    if not data:
        raise _error(path, "empty file")
    fmt = _sniff(data)
    if fmt is None:
        raise _error(path, "not an image in a supported format (PNG, JPEG, TIFF, BMP or WebP)")

    try:
        with _quiet_pillow(), Image.open(BytesIO(data)) as im:
            gray = Image.getmodebase(im.mode) == "L"
            if fmt == "PNG":  # the header's colour type: Pillow calls 16-bit gray + alpha RGBA
                gray = data[25] in (0, 4)
            palette = im.mode == "P"
            # libtiff's RGBA reader, which OpenCV uses for 8-bit TIFF, premultiplies unassociated alpha, so
            # Pillow decodes those, as stored (it misreads TIFFs tagged 5-8), and they are oriented below.
            by_pillow = fmt == "TIFF" and im.mode in ("RGBA", "LA") and np.max(im.tag_v2.get(258, 8)) == 8
            # OpenCV's TIFF decoder applies tag 274 itself; the others' orientation is applied below.
            orientation = exif_orientation(im) if fmt != "TIFF" or by_pillow else 1
            # OpenCV may return a truncated image padded with grey; Pillow refuses it. For PNG a CRC walk
            # to IEND is enough (no inflating); JPEG is decoded at 1/8 scale, which still reads every byte.
            if fmt == "PNG":
                im.verify()
            elif fmt == "JPEG":
                im.draft(im.mode, (1, 1))
                im.load()
            arr = None
            if by_pillow:
                with Image.open(BytesIO(_as_stored(data) if orientation != 1 else data)) as stored:
                    arr = np.asarray(stored)
    except Exception as e:  # Pillow reports bad data as OSError, SyntaxError, ValueError, struct.error, ...
        if fmt == "TIFF":  # Pillow has no mode for some valid TIFFs (3-channel float): OpenCV says what it is
            with _quiet_opencv():
                arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if arr is not None and arr.dtype not in (np.uint8, np.uint16):
                raise _error(
                    path, f"unsupported sample type {arr.dtype} (8- or 16-bit unsigned only)"
                ) from None
        layout = ", or a TIFF layout Pillow cannot read" if fmt == "TIFF" else ""  # 16-bit gray + alpha
        raise _error(path, f"truncated or corrupt image data{layout}") from e

    if arr is None:
        with _quiet_opencv():
            arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise _error(path, "truncated or corrupt image data")
        if arr.ndim == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB if arr.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    if arr.dtype not in (np.uint8, np.uint16):
        raise _error(path, f"unsupported sample type {arr.dtype} (8- or 16-bit unsigned only)")
    alpha = None
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        arr, alpha = arr[..., :-1], arr[..., -1]
    if palette and arr.ndim == 3:  # gray pixels by a palette (GIMP, ImageMagick save gray images so)
        gray = bool((arr == arr[..., :1]).all())
    if gray and arr.ndim == 3:  # OpenCV gives gray + alpha as BGRA with three equal colour channels
        arr = arr[..., 0]
    key = _png_gray_key(data) if fmt == "PNG" and data[25] == 0 else None
    if key is not None and arr.ndim == 2:  # libpng scales 1-, 2- and 4-bit gray to 8 bits, and so the key
        depth = data[24]
        key = key * 255 // (2**depth - 1) if depth < 8 else key
        alpha = np.where(arr == key, 0, np.iinfo(arr.dtype).max).astype(arr.dtype)
    if orientation in _ORIENT:
        arr, alpha = _ORIENT[orientation](arr), None if alpha is None else _ORIENT[orientation](alpha)
    return np.ascontiguousarray(arr), None if alpha is None else np.ascontiguousarray(alpha)
