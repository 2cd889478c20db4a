"""Reading, decoding, downloading and caching of image data sets.

NumPy, Pillow and the standard library only: nothing here imports
TensorFlow, so the array loaders work on every Keras backend.

The building blocks:

- `FileIndex`: one read-only view of the files under a folder, inside the
  zip and tar archives in it (the three GTSRB training zips merge into one
  tree), or inside a single archive.
- `decode_image`: bytes to a uint8 `(height, width, 3)` array, with a fast
  NumPy path for binary PPM (which TensorFlow cannot decode) and Pillow for
  everything else; a corrupt file raises a `ValueError` naming it.
- `download`: streams a URL into a temporary file beside its destination,
  checks its MD5 or SHA-256, then renames it into place (atomic), removing
  the temporary file on any failure.
- `cached_arrays`: optional `.npz` cache of decoded arrays, one entry per
  data set and source folder, keyed on the sizes and modification times of
  the source files; only arrays that pass the data set's completeness check
  are cached.
"""

import hashlib
import io
import lzma
import os
import pickle
import re
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib

import numpy as np
from PIL import Image
from PIL import JpegImagePlugin

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".gif", ".webp")
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")
# Bump when the decoded arrays would change for the same source files.
# Version 2: one entry per source folder, and completeness checked.
_CACHE_FORMAT_VERSION = 2
# A cache file being written is `.<entry>.<pid>.<random>.npz.part`; one
# whose writer is gone (killed) is deleted by the next cache write. Without
# a live process to ask (another machine sharing the cache), one untouched
# for this long is deleted.
_STALE_PART_SECONDS = 3600
# Errors of a corrupt archive member or stream: zip and tar structure,
# deflate (zlib), xz (lzma), truncation.
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    OSError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
)
_CHUNK_SIZE = 1 << 20

# Official archives per data set: (file name, URL, MD5 or SHA-256). Tests
# point the URLs at local files.
REMOTE_FILES = {
    "cifar10": [
        (
            "cifar-10-python.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        )
    ],
    "cifar100": [
        (
            "cifar-100-python.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        )
    ],
    "gtsrb": [
        (
            "GTSRB_Final_Training_Images.zip",
            "https://sid.erda.dk/public/archives/"
            "daaeac0d7ce1152aea9b61d9f1e19370/GTSRB_Final_Training_Images.zip",
            "f33fd80ac59bff73c82d25ab499e03a3",
        ),
        (
            "GTSRB_Final_Test_Images.zip",
            "https://sid.erda.dk/public/archives/"
            "daaeac0d7ce1152aea9b61d9f1e19370/GTSRB_Final_Test_Images.zip",
            "c7e4e6327067d32654124b0fe9e82185",
        ),
        (
            "GTSRB_Final_Test_GT.zip",
            "https://sid.erda.dk/public/archives/"
            "daaeac0d7ce1152aea9b61d9f1e19370/GTSRB_Final_Test_GT.zip",
            "fe31e9c9270bbcd7b84b7f21a9d9d9e5",
        ),
    ],
}


# === File index over folders and archives ===


class FileIndex:
    """Read-only view of the files under a folder or inside an archive.

    A folder is walked recursively; the members of each zip or tar archive
    found in it are listed by their own paths inside the archive (so that
    archives which each hold part of one tree merge into that tree). Plain
    files are listed by their path relative to the folder. Paths use "/".

    Args:
        path: a folder, a zip file or a tar archive.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.files = {}  # relative path -> (archive or None, member or path)
        self.sources = []  # physical files read: for fingerprints
        self._archives = {}
        if os.path.isdir(self.path):
            for root, dirs, names in os.walk(self.path):
                dirs.sort()
                for name in sorted(names):
                    full = os.path.join(root, name)
                    if _is_archive(name):
                        self._add_archive(full)
                    else:
                        rel = os.path.relpath(full, self.path)
                        self.files[rel.replace(os.sep, "/")] = (None, full)
                        self.sources.append(full)
        elif os.path.isfile(self.path):
            if not _is_archive(self.path):
                raise ValueError(
                    f"Expected a folder, a zip file or a tar archive. "
                    f"Received: {self.path}"
                )
            self._add_archive(self.path)
        else:
            raise FileNotFoundError(
                f"No such file or folder: {self.path}. Expected a folder, a "
                "zip file or a tar archive holding the data set."
            )

    def _add_archive(self, full):
        try:
            if full.lower().endswith(".zip"):
                archive = zipfile.ZipFile(full)
                members = [
                    (info.filename, info)
                    for info in archive.infolist()
                    if not info.is_dir()
                ]
            else:
                archive = tarfile.open(full, "r:*")
                members = [(m.name, m) for m in archive if m.isfile()]
        except _ARCHIVE_ERRORS as e:
            raise ValueError(
                f"Corrupt or unreadable archive: {full} ({e}). Expected a "
                "valid zip or tar archive; delete it and download it again."
            ) from e
        self._archives[full] = archive
        self.sources.append(full)
        for name, member in members:
            while name.startswith("./"):
                name = name[2:]
            self.files[name] = (full, member)

    def describe(self, rel):
        """Human-readable location of `rel`, for error messages."""
        archive, member = self.files.get(rel, (None, None))
        if archive is None:
            return member or os.path.join(self.path, rel)
        return f"{archive}:{rel}"

    def read(self, rel):
        """Returns the bytes of file `rel`.

        Raises:
            FileNotFoundError: if `rel` is not in the index.
            ValueError: naming the archive and the member, if the member
                cannot be read (corrupt: bad deflate stream, CRC, ...).
        """
        if rel not in self.files:
            raise FileNotFoundError(
                f"Missing file: {rel} (expected under {self.path})."
            )
        archive, member = self.files[rel]
        if archive is None:
            with open(member, "rb") as f:
                return f.read()
        handle = self._archives[archive]
        try:
            if isinstance(handle, zipfile.ZipFile):
                return handle.read(member)
            return handle.extractfile(member).read()
        except _ARCHIVE_ERRORS as e:
            raise ValueError(
                f"Corrupt archive member {rel} in {archive}: "
                f"{type(e).__name__}: {e}. Delete the archive and download "
                "it again."
            ) from e

    def find(self, pattern):
        """Sorted paths matching the regular expression `pattern`."""
        regex = re.compile(pattern)
        return sorted(rel for rel in self.files if regex.search(rel))

    def sample(self, count=5):
        """A few file paths, to show what was found in error messages."""
        names = sorted(self.files)
        shown = ", ".join(names[:count])
        more = f" and {len(names) - count} more" if len(names) > count else ""
        return f"[{shown}{more}]" if names else "no files"

    def fingerprint(self):
        """(path, size, mtime) of every physical file this index reads."""
        entries = []
        for source in sorted(self.sources):
            stat = os.stat(source)
            entries.append((source, stat.st_size, stat.st_mtime_ns))
        return entries

    def close(self):
        for archive in self._archives.values():
            archive.close()
        self._archives = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _is_archive(name):
    lower = name.lower()
    return lower.endswith(".zip") or lower.endswith(_TAR_SUFFIXES)


# === Image decoding ===


def _ppm_header(data):
    """Parses a binary PPM/PGM header: (magic, width, height, maxval, pos)."""
    tokens = []
    pos = 0
    size = len(data)
    while len(tokens) < 4:
        while pos < size and data[pos] in b" \t\r\n":
            pos += 1
        if pos < size and data[pos] == ord("#"):
            end = data.find(b"\n", pos)
            pos = size if end < 0 else end + 1
            continue
        start = pos
        while pos < size and data[pos] not in b" \t\r\n#":
            pos += 1
        if start == pos:
            return None
        tokens.append(data[start:pos])
    if pos >= size:
        return None
    try:
        width, height, maxval = (int(token) for token in tokens[1:])
    except ValueError:
        return None
    return tokens[0], width, height, maxval, pos + 1  # one whitespace byte


def decode_ppm(data, name="<bytes>"):
    """Decodes a binary PPM (`P6`) or PGM (`P5`) image with 8-bit samples.

    Args:
        data: the file's bytes.
        name: the file's name, for error messages.

    Returns:
        A uint8 array of shape `(height, width, 3)`.

    Raises:
        ValueError: if the header is malformed or the pixels are truncated.

    References:
        - Netpbm PPM format: https://netpbm.sourceforge.net/doc/ppm.html
    """
    header = _ppm_header(data)
    if header is None or header[0] not in (b"P5", b"P6"):
        raise ValueError(
            f"Corrupt image {name}: expected a binary PPM header "
            f"'P6 <width> <height> <maxval>'. Received: {bytes(data[:16])!r}"
        )
    magic, width, height, maxval, pos = header
    channels = 3 if magic == b"P6" else 1
    if width <= 0 or height <= 0 or not 0 < maxval < 256:
        raise ValueError(
            f"Corrupt or unsupported image {name}: expected a positive size "
            f"and 8-bit samples. Received: width={width}, height={height}, "
            f"maxval={maxval}"
        )
    expected = width * height * channels
    if len(data) - pos < expected:
        raise ValueError(
            f"Corrupt image {name}: truncated PPM, expected {expected} pixel "
            f"bytes for (height, width, channels)=({height}, {width}, "
            f"{channels}), found {len(data) - pos}."
        )
    pixels = np.frombuffer(data, np.uint8, count=expected, offset=pos)
    image = pixels.reshape(height, width, channels)
    if maxval != 255:
        image = (image.astype(np.uint16) * 255 // maxval).astype(np.uint8)
    if channels == 1:
        image = np.repeat(image, 3, axis=-1)
    return image


def decode_image(data, name="<bytes>", size=None):
    """Decodes image bytes (PPM, JPEG, PNG, ...) into an RGB uint8 array.

    Args:
        data: the file's bytes.
        name: the file's name, for error messages.
        size: optional `(height, width)`; images of another size are resized
            to it (bilinear, Pillow).

    Returns:
        A uint8 array of shape `(height, width, 3)`.

    Raises:
        ValueError: naming the file if it is corrupt, truncated or not an
            image.
    """
    if data[:2] in (b"P5", b"P6"):
        image = decode_ppm(data, name)
    else:
        try:
            if data[:2] == b"\xff\xd8":
                pil_image = JpegImagePlugin.JpegImageFile(io.BytesIO(data))
            else:
                pil_image = Image.open(io.BytesIO(data))
            pil_image.load()
            if pil_image.mode != "RGB":
                pil_image = pil_image.convert("RGB")
            image = np.asarray(pil_image)
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            raise ValueError(
                f"Corrupt or unreadable image {name}: {e}. Expected a "
                "complete PPM, JPEG or PNG file."
            ) from e
    if size is not None and image.shape[:2] != tuple(size):
        resized = Image.fromarray(image).resize(
            (size[1], size[0]), Image.Resampling.BILINEAR
        )
        image = np.asarray(resized)
    return image


# === Restricted unpickling of the official CIFAR batches ===

_ALLOWED_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
    ("_codecs", "encode"),  # bytes pickled by Python 3 at protocol 2
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}"
            )
        return super().find_class(module, name)


def load_pickle(data, name="<bytes>"):
    """Unpickles an official CIFAR batch (Python 2 pickle, bytes keys).

    Only dicts, lists, strings, numbers and NumPy arrays are accepted: the
    official files hold nothing else, and arbitrary globals are refused.

    Raises:
        ValueError: naming the file if it is not such a pickle.
    """
    try:
        value = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # pickle raises many kinds of errors
        raise ValueError(
            f"Corrupt CIFAR batch {name}: {type(e).__name__}: {e}. Expected "
            "a pickled dict as in the official python version."
        ) from e
    if not isinstance(value, dict):
        raise ValueError(
            f"Corrupt CIFAR batch {name}: expected a pickled dict. "
            f"Received: {type(value).__name__}"
        )
    return value


# === Cache folder, data folder resolution and download ===


def keras_datasets_dir():
    """The Keras data set cache, `$KERAS_HOME/datasets` or `~/.keras/...`.

    Falls back to `/tmp/.keras/datasets` when the home one is not writable,
    as `keras.utils.get_file` does.
    """
    base = os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras"
    )
    if os.path.exists(base) and not os.access(base, os.W_OK):
        base = os.path.join(tempfile.gettempdir(), ".keras")
    return os.path.join(base, "datasets")


def _file_hash(path, algorithm):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_algorithm(file_hash):
    return "md5" if len(file_hash) == 32 else "sha256"


def download(url, destination, file_hash=None):
    """Downloads `url` to `destination`, checking its MD5 or SHA-256.

    The bytes go to a temporary file in the destination's folder, which is
    renamed into place only once the checksum matches; on any failure
    (network, checksum, interruption) the temporary file is removed, so the
    cache never holds a partial file.

    Args:
        url: an `https://`, `http://` or `file://` URL.
        destination: the final path.
        file_hash: expected hex digest: 32 characters for MD5, 64 for
            SHA-256; None skips the check.

    Returns:
        `destination`.

    Raises:
        ValueError: if the checksum does not match.
        OSError: if the download fails (message says how to work offline).
    """
    folder = os.path.dirname(os.path.abspath(destination))
    os.makedirs(folder, exist_ok=True)
    algorithm = _hash_algorithm(file_hash) if file_hash else "sha256"
    digest = hashlib.new(algorithm)
    handle, temp_path = tempfile.mkstemp(
        dir=folder, prefix=f".{os.path.basename(destination)}.", suffix=".part"
    )
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    for chunk in iter(lambda: response.read(_CHUNK_SIZE), b""):
                        digest.update(chunk)
                        out.write(chunk)
            except (urllib.error.URLError, OSError) as e:
                raise OSError(
                    f"Could not download {url} to {destination}: {e}. If "
                    "this machine is offline, download the file elsewhere "
                    "and pass its folder as `data_dir`."
                ) from e
        if file_hash and digest.hexdigest() != file_hash.lower():
            raise ValueError(
                f"Checksum mismatch for {url}: expected {algorithm} "
                f"{file_hash}, received {digest.hexdigest()}. The download "
                "is corrupt or the file has changed; nothing was saved."
            )
        os.replace(temp_path, destination)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise
    return destination


def resolve_data_dir(name, data_dir, extra_cache_names=()):
    """Finds (or downloads) the data of data set `name`.

    Order: `data_dir` if given (it must exist); else `$KERAS_DIB_DATA/<name>`;
    else `<keras cache>/<name>` or one of `extra_cache_names` in the Keras
    cache (for example Keras' own extracted CIFAR folder); else the official
    archives are downloaded into `<keras cache>/<name>/` with a checksum
    check, and reused from there on later (offline) calls.

    Returns:
        A path to give to `FileIndex`.
    """
    if data_dir is not None:
        data_dir = os.path.expanduser(os.fspath(data_dir))
        if not os.path.exists(data_dir):
            raise FileNotFoundError(
                f"`data_dir` does not exist. Received: data_dir={data_dir}"
            )
        return data_dir
    env_root = os.environ.get("KERAS_DIB_DATA")
    if env_root and os.path.exists(os.path.join(env_root, name)):
        return os.path.join(env_root, name)
    cache = keras_datasets_dir()
    target = os.path.join(cache, name)
    remote = REMOTE_FILES[name]
    official = {filename for filename, _, _ in remote}
    if os.path.isdir(target):
        present = set(os.listdir(target))
        user_content = {p for p in present if not p.startswith(".")} - official
        if official <= present or user_content:
            return target
    for extra in extra_cache_names:
        if os.path.exists(os.path.join(cache, extra)):
            return os.path.join(cache, extra)
    created = not os.path.isdir(target)
    try:
        for filename, url, file_hash in remote:
            destination = os.path.join(target, filename)
            if not os.path.exists(destination):
                download(url, destination, file_hash)
    except BaseException:
        if created and os.path.isdir(target) and not os.listdir(target):
            os.rmdir(target)
        raise
    return target


def verify_file(path, file_hash):
    """True if the file at `path` has the MD5 or SHA-256 `file_hash`."""
    return _file_hash(path, _hash_algorithm(file_hash)) == file_hash.lower()


# === Decoded-array cache ===


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else (or cannot tell)
    return True


def _remove_stale_parts(folder):
    """Deletes cache files left half-written by a killed process."""
    now = time.time()
    for name in os.listdir(folder):
        if not (name.startswith(".") and name.endswith(".npz.part")):
            continue
        path = os.path.join(folder, name)
        match = re.search(r"\.(\d+)\.[^.]+\.npz\.part$", name)
        try:
            dead = match is not None and not _process_alive(int(match.group(1)))
            old = now - os.stat(path).st_mtime > _STALE_PART_SECONDS
            if dead or old:
                os.remove(path)
        except OSError:
            pass  # removed meanwhile, or not ours to remove


def cache_entry_prefix(name, source):
    """Cache file name prefix of data set `name` read from `source`."""
    source = os.path.realpath(os.path.abspath(os.fspath(source)))
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    return f"{name}-{digest}-"


def cached_arrays(
    name, index, compute, extra_key="", cache=True, validate=None
):
    """Returns `compute()`'s dict of arrays, cached as `.npz` when `cache`.

    The cache file sits in `<keras cache>/keras_dib_cache/`, one entry per
    data set `name` and source folder (`index.path`): loading the same data
    set from two folders keeps both entries. An entry is keyed on the source
    files' paths, sizes and modification times (plus `extra_key`), so
    changing or replacing a source invalidates it; the stale entry of the
    same data set and folder is then removed. The entry is written to a
    hidden `.part` file and renamed into place; `.part` files left by a
    killed process are removed by the next write. A cache that cannot be
    written only warns.

    Args:
        name: the data set's name (a file name prefix).
        index: the `FileIndex` the arrays are decoded from.
        compute: callable returning a dict of NumPy arrays.
        extra_key: more to key the entry on.
        cache: whether to use the cache at all.
        validate: optional callable taking the dict of arrays and raising
            if they are incomplete. Arrays are cached only once it passes,
            and a cached entry that fails it is decoded again.

    Returns:
        The dict of arrays.
    """
    if not cache:
        arrays = compute()
        if validate is not None:
            validate(arrays)
        return arrays
    key = hashlib.sha256(
        repr((_CACHE_FORMAT_VERSION, extra_key, index.fingerprint())).encode()
    ).hexdigest()[:20]
    folder = os.path.join(keras_datasets_dir(), "keras_dib_cache")
    prefix = cache_entry_prefix(name, index.path)
    path = os.path.join(folder, f"{prefix}{key}.npz")
    if os.path.exists(path):
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {k: stored[k] for k in stored.files}
            if validate is not None:
                validate(arrays)
            return arrays
        except (OSError, ValueError, zipfile.BadZipFile):
            os.remove(path)  # unreadable or incomplete: decode again
    arrays = compute()
    if validate is not None:
        validate(arrays)  # never cache partial data
    try:
        os.makedirs(folder, exist_ok=True)
        _remove_stale_parts(folder)
        handle, temp_path = tempfile.mkstemp(
            dir=folder,
            prefix=f".{prefix}{key}.{os.getpid()}.",
            suffix=".npz.part",
        )
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, **arrays)
            os.replace(temp_path, path)
        except BaseException:
            if os.path.exists(temp_path):
                os.remove(temp_path)
            raise
        # Older entries of this data set and folder, and entries of the
        # version-1 layout (one per data set, with no folder part).
        legacy = re.compile(rf"^{re.escape(name)}-[0-9a-f]{{20}}\.npz$")
        for stale in os.listdir(folder):
            if (
                stale.startswith(prefix) and stale.endswith(".npz")
            ) or legacy.match(stale):
                if os.path.join(folder, stale) != path:
                    os.remove(os.path.join(folder, stale))
    except OSError as e:
        warnings.warn(
            f"Could not write the decoded-array cache {path}: {e}",
            stacklevel=3,
        )
    return arrays
