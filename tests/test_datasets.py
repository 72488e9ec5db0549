"""Dataset loaders, downloads and `glossy data`: generated fixtures in every canonical format, every failure
mode, and the real files of ../shared/data (skipped when absent, required when GLOSSY_REQUIRE_REAL_DATA=1).

No test touches the network: downloads go through a replaced `fetch_url`, file:// URLs or a closed local port.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from glossy_datasets import caltech101, cifar10, download, frey, histopathology, mnist, omniglot
from glossy_datasets import registry as datasets
from glossy_datasets.download import DatasetCorrupt, DatasetMissing
from tests.helpers import glossy_in_process


def _shared_data() -> Path:
    """The real data files: $GLOSSY_SHARED_DATA, else ../shared/data beside the checkout, else the
    workplace's /work/shared/data (a clone elsewhere, e.g. CI's, still finds them)."""
    if os.environ.get("GLOSSY_SHARED_DATA"):
        return Path(os.environ["GLOSSY_SHARED_DATA"])
    for cand in (Path(__file__).resolve().parents[2] / "shared" / "data", Path("/work/shared/data")):
        if cand.is_dir():
            return cand
    return Path(__file__).resolve().parents[2] / "shared" / "data"


SHARED = _shared_data()
GLOSSY = Path(sys.executable).with_name("glossy")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No test reads or writes the user's data or cache directories."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("GLOSSY_DATA_DIR", raising=False)


# ------------------------------------------------------------------------------------------ fixture helpers


def letter_f(h: int = 28, w: int = 28) -> np.ndarray:
    """A binary 'F': asymmetric under transposition and both flips."""
    img = np.zeros((h, w), dtype=np.uint8)
    img[3:h - 4, 5] = 1
    img[3, 5:w - 6] = 1
    img[h // 2, 5:w // 2 + 2] = 1
    return img


class Py2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle did: every str and bytes becomes a Python 2 byte string (STRING /
    BINSTRING opcodes), so the file loads only with encoding='latin1', like the canonical files."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_string(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if self.proto == 0:
            self.write(pickle.STRING + repr(data)[1:].encode("ascii") + b"\n")
        elif len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_string
    dispatch[bytes] = save_py2_string


def py2_pickle(obj, protocol: int = 2) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def pin(monkeypatch, module, key: str, path: Path, size: bool = True) -> None:
    """Record a fixture's SHA-256 (and size) as the expected one, as the real file's are recorded."""
    r = module.FILES[key]
    data = path.read_bytes()
    monkeypatch.setitem(module.FILES, key, dataclasses.replace(
        r, sha256=hashlib.sha256(data).hexdigest(), size=len(data) if size else None))


def pin_blob(monkeypatch, module, key: str, data: bytes) -> None:
    """Record a fixture's git blob id as the expected one, as the real file's (from its repository) is."""
    monkeypatch.setitem(module.FILES, key, dataclasses.replace(
        module.FILES[key], git_blob=hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def fake_fetcher(monkeypatch, payloads: dict[str, bytes | Exception], calls: list | None = None):
    """Replace the network: url -> bytes written, or an exception raised (after writing half the bytes)."""

    def fetch(url, dest, desc=""):
        if calls is not None:
            calls.append(url)
        what = payloads.get(url, urllib.error.URLError("no route to host (simulated offline)"))
        if isinstance(what, Exception):
            Path(dest).write_bytes(b"partial")
            raise what
        Path(dest).write_bytes(what)

    monkeypatch.setattr(download, "fetch_url", fetch)


def one_line_message(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# ------------------------------------------------------------------------------------------ static MNIST


def amat_text(x: np.ndarray) -> bytes:
    return "".join(" ".join(map(str, row)) + "\n" for row in x.reshape(len(x), -1)).encode()


@pytest.fixture
def mnist_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    arrays = {"train": (rng.random((5, 28, 28)) < 0.3).astype(np.uint8), "val": (rng.random((3, 28, 28)) < 0.3)
              .astype(np.uint8), "test": (rng.random((2, 28, 28)) < 0.3).astype(np.uint8)}
    arrays["train"][0] = letter_f()
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    for split, x in arrays.items():
        path = mnist.FILES[split].path(root)
        path.write_bytes(amat_text(x))
        pin(monkeypatch, mnist, split, path)
    return root, arrays


def test_mnist_amat_shape_orientation_binary(mnist_files):
    root, arrays = mnist_files
    s = datasets.load("mnist", root, download=False)
    assert s.sizes() == {"train": 5, "val": 3, "test": 2}
    assert s.train.dtype == torch.float32 and s.train.shape == (5, 1, 28, 28)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(s, split)[:, 0], torch.from_numpy(arrays[split]).float())
    assert torch.equal(s.train[0, 0], torch.from_numpy(letter_f()).float())  # no transposition, no flip
    assert set(s.train.unique().tolist()) <= {0.0, 1.0}
    m = s.meta
    assert (m.input_type, m.shape, m.dynamic_binarization) == ("binary", (1, 28, 28), False)
    assert (m.pseudo_init_mean, m.pseudo_init_std) == (0.05, 0.01)
    assert s.info["files"]["binarized_mnist_train.amat"]["verified_by"] == "sha256"


def test_mnist_cache_used_while_source_unchanged(mnist_files, monkeypatch):
    root, arrays = mnist_files
    first = datasets.load("mnist", root, download=False)
    cache = root / "mnist" / "binarized_mnist_train.amat.cache.npz"
    assert cache.is_file()

    def no_parse(*a, **k):
        raise AssertionError("the source was parsed although its cache is valid")

    monkeypatch.setattr(mnist, "parse_amat", no_parse)
    assert torch.equal(datasets.load("mnist", root, download=False).train, first.train)
    # a changed source (new content, its new hash recorded) is parsed again, not served from the stale cache
    monkeypatch.undo()
    new = 1 - arrays["train"]
    path = mnist.FILES["train"].path(root)
    path.write_bytes(amat_text(new))
    pin(monkeypatch, mnist, "train", path)
    for split in ("val", "test"):
        pin(monkeypatch, mnist, split, mnist.FILES[split].path(root))
    assert torch.equal(datasets.load("mnist", root, download=False).train[:, 0], torch.from_numpy(new).float())


def test_mnist_cache_goes_to_user_cache_when_data_dir_read_only(mnist_files, tmp_path):
    root, _ = mnist_files
    (root / "mnist").chmod(0o555)
    try:
        datasets.load("mnist", root, download=False)
        assert not list((root / "mnist").glob("*.cache.npz"))
        assert len(list((tmp_path / "xdg-cache" / "glossy" / "parsed").glob("*.cache.npz"))) == 3
        assert datasets.load("mnist", root, download=False, cache=False).sizes()["train"] == 5
    finally:
        (root / "mnist").chmod(0o755)


def test_amat_parser_accepts_any_whitespace_layout(tmp_path):
    x = (np.random.default_rng(1).random((4, 784)) < 0.5).astype(np.uint8)
    text = "".join("  ".join(map(str, row)) + " \r\n" for row in x) + "\n\n"
    (tmp_path / "f.amat").write_text(text)
    np.testing.assert_array_equal(mnist.parse_amat(tmp_path / "f.amat"), x)


@pytest.mark.parametrize("mutate, expected", [
    (lambda t: t.replace(b"\n", b" 0\n", 1), "wrong shape: line 1 holds 785 values, expected 784"),
    (lambda t: t[:2] + b"2" + t[3:], "line 1 holds the value '2'"),
    (lambda t: t[:2] + b"x" + t[3:], "line 1 holds the value 'x'"),
])
def test_mnist_wrong_content_is_reported_as_corrupt(mnist_files, monkeypatch, mutate, expected):
    root, _ = mnist_files
    path = mnist.FILES["train"].path(root)
    path.write_bytes(mutate(path.read_bytes()))
    pin(monkeypatch, mnist, "train", path)  # the hash matches: the parser must catch it
    with pytest.raises(DatasetCorrupt) as e:
        datasets.load("mnist", root, download=False)
    msg = one_line_message(e.value)
    assert expected in msg and str(path) in msg and mnist.FILES["train"].url in msg
    assert path.is_file()  # a user's file is reported, never deleted


def test_mnist_truncated_and_checksum_mismatch(mnist_files):
    root, _ = mnist_files
    path = mnist.FILES["val"].path(root)
    good = path.read_bytes()
    path.write_bytes(good[:-100])
    with pytest.raises(DatasetCorrupt) as e:
        datasets.load("mnist", root, download=False)
    msg = one_line_message(e.value)
    assert f"truncated: {len(good) - 100} bytes, expected {len(good)}" in msg
    assert str(path) in msg and mnist.FILES["val"].url in msg and "Delete it" in msg
    path.write_bytes(good[:-2] + (b"1" if good[-2:-1] == b"0" else b"0") + b"\n")  # same size, other bytes
    with pytest.raises(DatasetCorrupt, match="SHA-256 mismatch: got [0-9a-f]{64}, expected [0-9a-f]{64}"):
        datasets.load("mnist", root, download=False)


def test_mnist_missing_without_download(tmp_path):
    with pytest.raises(DatasetMissing) as e:
        datasets.load("mnist", tmp_path, download=False)
    msg = one_line_message(e.value)
    for r in mnist.FILES.values():
        assert r.filename in msg and str(r.path(tmp_path)) in msg and r.url in msg
    assert "download=false" in msg and "glossy data fetch dataset=mnist" in msg
    assert leftovers(tmp_path) == []


def test_mnist_download_verified_and_atomic(tmp_path, monkeypatch, mnist_files):
    src, arrays = mnist_files
    payloads = {r.url: r.path(src).read_bytes() for r in mnist.FILES.values()}
    calls = []
    fake_fetcher(monkeypatch, payloads, calls)
    dest = tmp_path / "fresh"
    s = datasets.load("mnist", dest, download=True)
    assert sorted(calls) == sorted(payloads) and s.sizes() == {"train": 5, "val": 3, "test": 2}
    assert not [n for n in leftovers(dest) if n.endswith(".part")]
    assert (mnist.FILES["train"].path(dest).stat().st_mode & 0o777) != 0o600  # not mkstemp's private mode
    calls.clear()
    datasets.load("mnist", dest, download=True)
    assert calls == []  # present and verified: nothing fetched again


def test_mnist_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch, mnist_files):
    src, _ = mnist_files
    payloads = {r.url: r.path(src).read_bytes() for r in mnist.FILES.values()}
    payloads[mnist.FILES["test"].url] = payloads[mnist.FILES["test"].url][::-1]  # same size, wrong bytes
    fake_fetcher(monkeypatch, payloads)
    dest = tmp_path / "fresh"
    with pytest.raises(DatasetCorrupt) as e:
        datasets.load("mnist", dest, download=True)
    msg = one_line_message(e.value)
    assert "SHA-256 mismatch" in msg and mnist.FILES["test"].url in msg and "deleted" in msg
    assert str(mnist.FILES["test"].path(dest)) in msg
    assert "binarized_mnist_test.amat" not in leftovers(dest)
    assert not [n for n in leftovers(dest) if n.endswith(".part")]


def test_download_offline_or_interrupted_leaves_nothing(tmp_path, monkeypatch):
    fake_fetcher(monkeypatch, {mnist.FILES["train"].url: ConnectionResetError("connection reset mid-transfer")})
    with pytest.raises(datasets.DatasetError) as e:
        datasets.load("mnist", tmp_path, download=True)
    msg = one_line_message(e.value)
    assert "could not download binarized_mnist_train.amat" in msg and mnist.FILES["train"].url in msg
    assert "ConnectionResetError" in msg and str(mnist.FILES["train"].path(tmp_path)) in msg
    assert leftovers(tmp_path) == []


def test_real_fetch_url_over_http_with_a_retry_and_a_closed_port(tmp_path, monkeypatch):
    """The real downloader (pooch) against a local HTTP server whose first answer is an error: it tries again and
    gets the bytes; a closed port, after its retries, is one clear message and leaves no file."""
    import http.server
    import threading
    import time

    payload, hits = os.urandom(200_000), []

    class Flaky(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            if len(hits) == 1:
                self.send_error(503, "busy")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(time, "sleep", lambda s: None)  # pooch's pause between tries
    try:
        download.fetch_url(f"http://127.0.0.1:{server.server_port}/src.bin", tmp_path / "copy.bin", "src.bin")
    finally:
        server.shutdown()
    assert (tmp_path / "copy.bin").read_bytes() == payload and len(hits) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.bin"]
    r = dataclasses.replace(caltech101.FILES["mat"], url="http://127.0.0.1:9/caltech.mat")
    monkeypatch.setitem(caltech101.FILES, "mat", r)
    with pytest.raises(datasets.DatasetError, match="could not download .*ConnectionError") as e:
        datasets.load("caltech101", tmp_path / "d", download=True)
    one_line_message(e.value)
    assert leftovers(tmp_path / "d") == []


def test_unwritable_data_dir_is_a_clear_error(tmp_path, monkeypatch):
    fake_fetcher(monkeypatch, {})
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    try:
        with pytest.raises(datasets.DatasetError, match="cannot write .*writable data_dir"):
            datasets.load("caltech101", ro, download=True)
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_unknown_dataset_and_options(tmp_path):
    with pytest.raises(datasets.DatasetError, match="unknown dataset 'nope'"):
        datasets.load("nope", tmp_path)
    with pytest.raises(datasets.DatasetError, match="unknown option.*n_vall"):
        datasets.load("frey", tmp_path, n_vall=3)


# ------------------------------------------------------------------------------------------ Omniglot


def colmajor_columns(imgs: np.ndarray) -> np.ndarray:
    """784 x N: every image a column, stored column-major (MATLAB order)."""
    return np.stack([im.flatten(order="F") for im in imgs], axis=1)


@pytest.fixture
def omniglot_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    train = rng.random((30, 28, 28)).astype(np.float32)
    train[7] = letter_f()
    test = (rng.random((10, 28, 28)) < 0.4).astype(np.float32)
    test[0] = letter_f()
    root = tmp_path / "data"
    (root / "omniglot").mkdir(parents=True)
    scipy.io.savemat(omniglot.FILES["chardata"].path(root),
                     {"data": colmajor_columns(train), "testdata": colmajor_columns(test)})
    pin_blob(monkeypatch, omniglot, "chardata", omniglot.FILES["chardata"].path(root).read_bytes())
    return root, train, test


def test_omniglot_mat_split_orientation_binarisation(omniglot_file):
    root, train, test = omniglot_file
    s = datasets.load("omniglot", root, download=False, n_validation=5)
    assert s.sizes() == {"train": 25, "val": 5, "test": 10}
    m = s.meta
    assert (m.input_type, m.shape, m.dynamic_binarization, m.pseudo_init_mean, m.pseudo_init_std) == \
        ("binary", (1, 28, 28), True, 0.05, 0.01)
    # the test set (already binary) round-trips exactly: orientation as in the reference's reshape
    stored = scipy.io.loadmat(omniglot.FILES["chardata"].path(root))["testdata"]
    ref = stored.T.reshape((-1, 28, 28)).reshape((-1, 784), order="F").reshape(-1, 28, 28)
    np.testing.assert_array_equal(s.test[:, 0].numpy(), ref)
    assert torch.equal(s.test[0, 0], torch.from_numpy(letter_f()).float())
    # train stays gray (binarised per batch by the trainer), a shuffled subset of the file's images
    got = np.concatenate([s.train[:, 0].numpy(), s.val[:, 0].numpy()])
    assert not set(np.unique(s.train).tolist()) <= {0.0, 1.0}
    originals = {im.tobytes() for im in train}
    assert all(im.tobytes() in originals for im in s.train[:, 0].numpy())
    assert any(np.array_equal(im, letter_f()) for im in got)  # the 'F' survives, upright
    # val is binarised once, and identically in every run
    assert set(np.unique(s.val).tolist()) <= {0.0, 1.0}
    again = datasets.load("omniglot", root, download=False, n_validation=5)
    assert torch.equal(again.train, s.train) and torch.equal(again.val, s.val) and torch.equal(again.test, s.test)
    other = datasets.load("omniglot", root, download=False, n_validation=5, split_seed=1)
    assert not torch.equal(other.train, s.train)
    assert s.info["files"]["chardata.mat"]["verified_by"] == "git blob id"


def test_omniglot_binary_test_set_is_the_references_bit_for_bit(tmp_path, monkeypatch):
    """The reference binarises with np.random.seed(777): binomial(1, x_val), then binomial(1, x_test), on its
    784-vectors (the .mat's columns through reshape((-1, 28, 28)).reshape((-1, 784), order='F')). Those bits,
    computed here that way from a gray test set with exact 0s and 1s, are the test split glossy loads, whatever
    the validation images are."""
    rng = np.random.default_rng(4)
    train, test = rng.random((40, 28, 28)).astype(np.float32), rng.random((12, 28, 28)).astype(np.float32)
    test[:, :3] = 0.0
    test[:, -3:] = 1.0
    root = tmp_path / "data"
    (root / "omniglot").mkdir(parents=True)
    scipy.io.savemat(omniglot.FILES["chardata"].path(root),
                     {"data": colmajor_columns(train), "testdata": colmajor_columns(test)})
    pin_blob(monkeypatch, omniglot, "chardata", omniglot.FILES["chardata"].path(root).read_bytes())
    raw = scipy.io.loadmat(omniglot.FILES["chardata"].path(root))
    as_ref = lambda m: m.T.astype("float32").reshape((-1, 28, 28)).reshape((-1, 784), order="F")  # noqa: E731
    np.random.seed(777)
    np.random.binomial(1, as_ref(raw["data"])[:7])  # any 7 validation images: one draw per pixel
    expected = np.random.binomial(1, as_ref(raw["testdata"]))
    for split_seed in (0, 1):
        s = datasets.load("omniglot", root, download=False, n_validation=7, split_seed=split_seed)
        np.testing.assert_array_equal(s.test.reshape(len(s.test), -1).numpy(), expected)
    assert set(np.unique(s.val).tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("content, expected", [
    ({"data": np.zeros((783, 4)), "testdata": np.zeros((784, 2))}, "wrong shape: 'data' is float64 (783, 4)"),
    ({"data": np.zeros((784, 4))}, "no variable 'testdata'"),
    ({"data": np.full((784, 4), 2.0), "testdata": np.zeros((784, 2))}, "values outside [0, 1]"),
])
def test_omniglot_bad_file(tmp_path, monkeypatch, content, expected):
    path = omniglot.FILES["chardata"].path(tmp_path)
    path.parent.mkdir()
    scipy.io.savemat(path, content)
    pin_blob(monkeypatch, omniglot, "chardata", path.read_bytes())  # past the hash: the format check speaks
    with pytest.raises(DatasetCorrupt) as e:
        datasets.load("omniglot", tmp_path, download=False)
    msg = one_line_message(e.value)
    assert expected in msg and str(path) in msg and omniglot.FILES["chardata"].url in msg


def test_omniglot_download_validates_format_without_hash(tmp_path, monkeypatch, omniglot_file):
    src, _, _ = omniglot_file
    url = omniglot.FILES["chardata"].url
    fake_fetcher(monkeypatch, {url: b"<html>404: Not Found</html>"})  # what a moved file often returns
    dest = tmp_path / "fresh"
    with pytest.raises(DatasetCorrupt, match="downloaded from .* is corrupt .* it was deleted") as e:
        datasets.load("omniglot", dest, download=True)
    one_line_message(e.value)
    assert leftovers(dest) == []
    fake_fetcher(monkeypatch, {url: omniglot.FILES["chardata"].path(src).read_bytes()})
    assert datasets.load("omniglot", dest, download=True, n_validation=5).sizes() == \
        {"train": 25, "val": 5, "test": 10}


# ------------------------------------------------------------------------------------------ Caltech 101


@pytest.fixture
def caltech_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    sil = {k: (rng.random((n, 28, 28)) < 0.5).astype(np.uint8) for k, n in (("train", 6), ("val", 4), ("test", 3))}
    sil["train"][0] = letter_f()
    root = tmp_path / "data"
    path = caltech101.FILES["mat"].path(root)
    path.parent.mkdir(parents=True)
    # the file stores 1 = background, every image a column-major row
    scipy.io.savemat(path, {f"{k}_data": colmajor_columns(1 - v).T for k, v in sil.items()}
                     | {f"{k}_labels": np.ones((len(v), 1)) for k, v in sil.items()})
    pin(monkeypatch, caltech101, "mat", path)
    return root, sil


def test_caltech_mat_orientation_inversion_splits(caltech_file):
    root, sil = caltech_file
    s = datasets.load("caltech101", root, download=False)
    assert s.sizes() == {"train": 6, "val": 4, "test": 3}
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(s, k)[:, 0].numpy(), sil[k].astype(np.float32))
    assert torch.equal(s.train[0, 0], torch.from_numpy(letter_f()).float())  # silhouette 1, upright
    m = s.meta
    assert (m.input_type, m.shape, m.dynamic_binarization, m.pseudo_init_mean, m.pseudo_init_std) == \
        ("binary", (1, 28, 28), False, 0.5, 0.02)
    raw = datasets.load("caltech101", root, download=False, invert=False)
    assert torch.equal(raw.train, 1 - s.train)


def test_caltech_wrong_shape(tmp_path, monkeypatch):
    path = caltech101.FILES["mat"].path(tmp_path)
    path.parent.mkdir()
    scipy.io.savemat(path, {"train_data": np.zeros((3, 780)), "val_data": np.zeros((1, 784)),
                            "test_data": np.zeros((1, 784))})
    pin(monkeypatch, caltech101, "mat", path)
    with pytest.raises(DatasetCorrupt, match=r"wrong shape: 'train_data' is \(3, 780\), expected N x 784"):
        datasets.load("caltech101", tmp_path, download=False)


# ------------------------------------------------------------------------------------------ Frey Faces


FREY_N = 20


def frey_frames() -> np.ndarray:
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, size=(FREY_N, 28, 20), dtype=np.uint8)
    frames[0] = (np.arange(560) % 256).reshape(28, 20)  # asymmetric: a 28x20 ramp
    return frames


def frey_split_options() -> dict:
    return {"n_train": 10, "n_val": 5, "n_test": 5}


@pytest.mark.parametrize("protocol", [0, 2])
def test_frey_py2_pickle(tmp_path, monkeypatch, protocol):
    frames = frey_frames()
    path = frey.FILES["pkl"].path(tmp_path)
    path.parent.mkdir()
    path.write_bytes(py2_pickle([frames.reshape(FREY_N, 560)], protocol))
    with pytest.raises(UnicodeDecodeError):  # a genuine Python 2 byte-string pickle: needs latin1
        pickle.loads(path.read_bytes())
    pin(monkeypatch, frey, "pkl", path)
    s = datasets.load("frey", tmp_path, download=False, **frey_split_options())
    assert s.sizes() == {"train": 10, "val": 5, "test": 5}
    assert s.train.shape[1:] == (1, 28, 20)
    m = s.meta
    assert (m.input_type, m.shape, m.pseudo_init_mean, m.pseudo_init_std) == ("gray", (1, 28, 20), 0.5, 0.02)
    allx = torch.cat([s.train, s.val, s.test])[:, 0].numpy()
    expected = (frames.astype(np.float32) + 0.5) / 256
    assert sorted(a.tobytes() for a in allx) == sorted(a.tobytes() for a in expected)  # a permutation
    assert any(np.array_equal(a, expected[0]) for a in allx)  # the ramp frame, upright and unflipped
    assert allx.min() >= 0.5 / 256 and allx.max() <= 255.5 / 256
    assert torch.equal(datasets.load("frey", tmp_path, download=False, **frey_split_options()).train, s.train)


def test_frey_mat_matches_pkl_and_pkl_is_preferred(tmp_path, monkeypatch):
    frames = frey_frames()
    d = tmp_path / "frey"
    d.mkdir()
    scipy.io.savemat(d / "frey_rawface.mat", {"ff": frames.reshape(FREY_N, 560).T})
    from_mat = datasets.load("frey", tmp_path, download=False, **frey_split_options())
    assert "frey_rawface.mat" in from_mat.info["files"]
    (d / "freyfaces.pkl").write_bytes(py2_pickle([frames.reshape(FREY_N, 560)], 2))
    pin(monkeypatch, frey, "pkl", d / "freyfaces.pkl")
    from_pkl = datasets.load("frey", tmp_path, download=False, **frey_split_options())
    assert "freyfaces.pkl" in from_pkl.info["files"]
    for k in ("train", "val", "test"):
        assert torch.equal(getattr(from_mat, k), getattr(from_pkl, k))
    chosen = datasets.load("frey", tmp_path, download=False, file="frey_rawface.mat", **frey_split_options())
    assert "frey_rawface.mat" in chosen.info["files"]


def test_frey_pickle_never_runs_code(tmp_path, monkeypatch):
    path = frey.FILES["pkl"].path(tmp_path)
    path.parent.mkdir()
    path.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    pin(monkeypatch, frey, "pkl", path)
    with pytest.raises(DatasetCorrupt, match="refusing to load os.system"):
        datasets.load("frey", tmp_path, download=False)


def test_frey_missing_and_download_fallback(tmp_path, monkeypatch):
    with pytest.raises(DatasetMissing) as e:
        datasets.load("frey", tmp_path, download=False)
    msg = one_line_message(e.value)
    for r in frey.FILES.values():
        assert r.url in msg and str(r.path(tmp_path)) in msg
    # the .pkl's server is gone: the .mat from its own address is used instead
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"ff": frey_frames().reshape(FREY_N, 560).T})
    fake_fetcher(monkeypatch, {frey.FILES["mat"].url: buf.getvalue()})
    s = datasets.load("frey", tmp_path, download=True, **frey_split_options())
    assert s.sizes() == {"train": 10, "val": 5, "test": 5} and leftovers(tmp_path) == ["frey_rawface.mat"]


def test_frey_both_downloads_fail(tmp_path, monkeypatch):
    fake_fetcher(monkeypatch, {frey.FILES["mat"].url: b"not a mat file"})
    with pytest.raises(datasets.DatasetError) as e:
        datasets.load("frey", tmp_path, download=True)
    msg = one_line_message(e.value)
    assert frey.FILES["pkl"].url in msg and frey.FILES["mat"].url in msg
    assert leftovers(tmp_path) == []


def test_frey_wrong_shape_and_bad_split(tmp_path, monkeypatch):
    path = frey.FILES["pkl"].path(tmp_path)
    path.parent.mkdir()
    path.write_bytes(py2_pickle([np.zeros((4, 559), np.uint8)]))
    pin(monkeypatch, frey, "pkl", path)
    with pytest.raises(DatasetCorrupt, match=r"wrong shape: the pickled array is uint8 \(4, 559\)"):
        datasets.load("frey", tmp_path, download=False)
    path.write_bytes(py2_pickle([np.zeros((4, 560), np.uint8)]))
    pin(monkeypatch, frey, "pkl", path)
    with pytest.raises(datasets.DatasetError, match="cannot split 4 frames"):
        datasets.load("frey", tmp_path, download=False)


# ------------------------------------------------------------------------------------------ Histopathology


def histo_dict() -> dict:
    rng = np.random.default_rng(5)
    d = {k: rng.random((n, 784)) for k, n in (("training", 7), ("validation", 3), ("test", 2))}
    ramp = np.linspace(0, 1, 784).reshape(28, 28)
    ramp[0, 0], ramp[-1, -1] = 0.0, 1.0
    d["training"][0] = ramp.reshape(784)
    return d


def test_histopathology_pkl_and_tar_gz(tmp_path, monkeypatch):
    d = histo_dict()
    raw = py2_pickle(d, 2)
    folder = tmp_path / "histopathology"
    folder.mkdir()
    with tarfile.open(folder / "histopathology.pkl.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("histopathologyGray/histopathology.pkl")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    pin_blob(monkeypatch, histopathology, "tar", (folder / "histopathology.pkl.tar.gz").read_bytes())
    s = datasets.load("histopathology", tmp_path, download=False)
    assert s.sizes() == {"train": 7, "val": 3, "test": 2} and s.train.shape[1:] == (1, 28, 28)
    assert s.info["files"]["histopathology.pkl.tar.gz"]["verified_by"] == "git blob id"
    assert float(s.train.min()) == pytest.approx(1 / 512) and float(s.train.max()) == pytest.approx(1 - 1 / 512)
    expected = np.clip(d["training"][0].reshape(28, 28), 1 / 512, 1 - 1 / 512).astype(np.float32)
    np.testing.assert_array_equal(s.train[0, 0].numpy(), expected)  # row-major, not transposed
    m = s.meta
    assert (m.input_type, m.shape, m.pseudo_init_mean, m.pseudo_init_std) == ("gray", (1, 28, 28), 0.4, 0.05)
    (folder / "histopathology.pkl").write_bytes(raw)
    p = datasets.load("histopathology", tmp_path, download=False)
    assert "histopathology.pkl" in p.info["files"] and torch.equal(p.train, s.train)


def test_histopathology_failures(tmp_path, monkeypatch):
    with pytest.raises(DatasetMissing) as e:
        datasets.load("histopathology", tmp_path, download=False)
    assert histopathology.FILES["tar"].url in one_line_message(e.value)
    folder = tmp_path / "histopathology"
    folder.mkdir()
    (folder / "histopathology.pkl.tar.gz").write_bytes(b"\x1f\x8b\x08\x00truncated")
    with pytest.raises(DatasetCorrupt, match="histopathology.pkl.tar.gz is corrupt"):
        datasets.load("histopathology", tmp_path, download=False)
    (folder / "histopathology.pkl.tar.gz").unlink()
    bad = histo_dict() | {"test": np.zeros((2, 700))}
    (folder / "histopathology.pkl").write_bytes(py2_pickle(bad))
    with pytest.raises(DatasetCorrupt, match=r"wrong shape: 'test' is float64 \(2, 700\)"):
        datasets.load("histopathology", tmp_path, download=False)
    (folder / "histopathology.pkl").unlink()
    fake_fetcher(monkeypatch, {histopathology.FILES["tar"].url: b"\x1f\x8b" + os.urandom(100)})
    with pytest.raises(DatasetCorrupt, match="it was deleted"):
        datasets.load("histopathology", tmp_path, download=True)
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------ CIFAR-10


def cifar_image() -> np.ndarray:
    """[3, 32, 32] uint8, different and asymmetric in every channel."""
    r = np.arange(1024, dtype=np.int64).reshape(32, 32) % 256
    return np.stack([r, r.T[::-1], np.full((32, 32), 7)]).astype(np.uint8)


def cifar_batches(rng) -> dict:
    batches = {f"data_batch_{i}": rng.integers(0, 256, (4, 3072), dtype=np.uint8) for i in range(1, 6)}
    batches["data_batch_3"][2] = cifar_image().reshape(3072)  # 1024 R, then G, then B; each row-major
    batches["test_batch"] = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    return batches


@pytest.fixture
def cifar_dir(tmp_path, monkeypatch):
    """A generated CIFAR-10 folder whose files stand for the originals (their MD5 recorded as the originals')
    and the content sha256 of each batch recorded too."""
    rng = np.random.default_rng(6)
    root = tmp_path / "data"
    folder = root / "cifar10" / cifar10.FOLDER
    folder.mkdir(parents=True)
    batches, md5, content = cifar_batches(rng), {}, {}
    for name, data in batches.items():
        labels = [int(v) for v in rng.integers(0, 10, len(data))]
        batch = {"batch_label": name, "labels": labels, "data": data,
                 "filenames": [f"img{j}.png" for j in range(len(data))]}
        (folder / name).write_bytes(py2_pickle(batch, 2))
        content[name] = (hashlib.sha256(data.tobytes()).hexdigest(),
                         hashlib.sha256(np.asarray(labels, np.uint8).tobytes()).hexdigest())
    (folder / "batches.meta").write_bytes(py2_pickle({"label_names": list(cifar10.LABEL_NAMES),
                                                      "num_cases_per_batch": 4, "num_vis": 3072}, 2))
    for f in folder.iterdir():
        md5[f.name] = hashlib.md5(f.read_bytes()).hexdigest()
    monkeypatch.setattr(cifar10, "MD5", md5)
    monkeypatch.setattr(cifar10, "CONTENT_SHA256", content)
    return root, batches


def test_cifar10_batches(cifar_dir):
    root, batches = cifar_dir
    s = datasets.load("cifar10", root, download=False, n_val=5)
    assert s.sizes() == {"train": 15, "val": 5, "test": 6}
    assert s.train.shape[1:] == (3, 32, 32) and s.train.dtype == torch.float32
    assert s.info["verified_by"] == "md5"
    m = s.meta
    assert (m.input_type, m.shape, m.pseudo_init_mean, m.pseudo_init_std) == ("continuous", (3, 32, 32), 0.4, 0.05)
    expected = (torch.from_numpy(cifar_image()).float() + 0.5) / 256
    assert any(torch.equal(x, expected) for x in torch.cat([s.train, s.val]))  # channels and axes in place
    test = (torch.from_numpy(batches["test_batch"].reshape(-1, 3, 32, 32)).float() + 0.5) / 256
    assert torch.equal(s.test, test)  # test order kept
    trainval = torch.cat([s.train, s.val])
    assert float(trainval.min()) >= 0.5 / 256 and float(trainval.max()) <= 255.5 / 256
    again = datasets.load("cifar10", root, download=False, n_val=5)
    assert torch.equal(again.train, s.train) and torch.equal(again.val, s.val)


def test_cifar10_content_copy(cifar_dir):
    """A batch rewritten without its filenames (other bytes, other MD5) is accepted by its content's sha256,
    and says so; the images and labels are those of the original."""
    root, _ = cifar_dir
    folder = root / "cifar10" / cifar10.FOLDER
    before = datasets.load("cifar10", root, download=False, n_val=5)
    for name in ("data_batch_4", "test_batch"):
        d = pickle.loads((folder / name).read_bytes(), encoding="latin1")
        del d["filenames"]
        (folder / name).write_bytes(py2_pickle(d, 2))
    s = datasets.load("cifar10", root, download=False, n_val=5)
    files = s.info["files"]
    assert files["data_batch_4"]["verified_by"] == "content sha256" and files["test_batch"]["verified_by"] == (
        "content sha256") and files["data_batch_1"]["verified_by"] == "md5"
    assert s.info["verified_by"] == "content sha256, md5"
    assert torch.equal(s.train, before.train) and torch.equal(s.test, before.test)
    assert torch.equal(s.info["labels"]["test"], before.info["labels"]["test"])


def test_cifar10_failures(cifar_dir, tmp_path, monkeypatch):
    root, batches = cifar_dir
    folder = root / "cifar10" / cifar10.FOLDER
    batch = folder / "data_batch_2"
    raw = batch.read_bytes()
    batch.write_bytes(raw[:-10])  # truncated: not a batch at all
    with pytest.raises(DatasetCorrupt) as e:
        datasets.load("cifar10", root, download=False, n_val=5)
    msg = one_line_message(e.value)
    assert str(batch) in msg and "MD5" in msg and cifar10.URL in msg
    d = pickle.loads(raw, encoding="latin1")
    d["data"] = d["data"].copy()
    d["data"][0, 0] ^= 1  # one pixel changed: a readable batch with other content
    batch.write_bytes(py2_pickle(d, 2))
    with pytest.raises(DatasetCorrupt) as e:
        datasets.load("cifar10", root, download=False, n_val=5)
    msg = one_line_message(e.value)
    assert str(batch) in msg and "data sha256" in msg and cifar10.CONTENT_SHA256["data_batch_2"][0] in msg
    assert batch.is_file()  # never deleted
    batch.write_bytes(pickle.dumps({"data": batches["data_batch_2"], "labels": [0] * 4,
                                    "x": torch.nn.Linear}))  # a pickle that would load a class
    with pytest.raises(DatasetCorrupt, match="not part of a CIFAR-10 batch"):
        datasets.load("cifar10", root, download=False, n_val=5)
    empty = tmp_path / "empty"
    with pytest.raises(DatasetMissing) as e:
        datasets.load("cifar10", empty, download=False)
    msg = one_line_message(e.value)
    assert cifar10.URL in msg and str(empty / "cifar10" / cifar10.ARCHIVE) in msg
    monkeypatch.setattr(cifar10, "URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    monkeypatch.setattr(download, "RETRIES", 0)  # no pauses between tries (the retry is tested over HTTP)
    with pytest.raises(datasets.DatasetError, match="could not download cifar-10-python.tar.gz") as e:
        datasets.load("cifar10", empty, download=True)
    one_line_message(e.value)
    assert leftovers(empty) == []


# ------------------------------------------------------------------------------------------ real files


def real_data(name: str) -> Path:
    if not (SHARED / name).is_dir():
        why = (f"real data folder {SHARED / name} is absent (set GLOSSY_SHARED_DATA to the folder holding "
               f"<dataset>/<file>)")
        if os.environ.get("GLOSSY_REQUIRE_REAL_DATA") == "1":
            pytest.fail(f"GLOSSY_REQUIRE_REAL_DATA=1 but {why}")
        pytest.skip(why)
    return SHARED


def test_a_git_blob_id_is_gits_own_and_a_file_that_differs_is_refused(tmp_path):
    """The ids that verify chardata.mat and histopathology.pkl.tar.gz (files no copy of which was here to hash):
    the id git itself computes for the same bytes, and a file one byte off is refused in one line."""
    data = np.random.default_rng(0).bytes(3000)
    path = omniglot.FILES["chardata"].path(tmp_path)
    path.parent.mkdir()
    path.write_bytes(data)
    git = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout
    assert download.git_blob_id(path) == git.strip()
    good = dataclasses.replace(omniglot.FILES["chardata"], git_blob=git.strip())
    assert download.checksum_problem(path, good)[0] is None and good.verified_by == "git blob id"
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    problem, _ = download.checksum_problem(path, good)
    assert problem.startswith(f"git blob id mismatch: got {download.git_blob_id(path)}, expected {git.strip()}")
    with pytest.raises(DatasetCorrupt, match="git blob id mismatch"):
        datasets.load("omniglot", tmp_path, download=False)  # the recorded id of the real chardata.mat
    assert omniglot.FILES["chardata"].git_blob == "016a3536ffe5e1d38e42563a18d7a78bfaf643ec"
    assert histopathology.FILES["tar"].git_blob == "40e100f65969106cbcf3c0f6f29e70e8e7e14fe3"


def test_the_real_freyfaces_pkl_has_its_repositorys_git_blob_id():
    path = frey.FILES["pkl"].path(real_data("frey"))
    assert download.git_blob_id(path) == frey.FILES["pkl"].git_blob == "032cd9c159728cd43e28041eb2bc547d278c3b80"


def test_real_mnist():
    s = datasets.load("mnist", real_data("mnist"), download=False)
    assert s.sizes() == {"train": 50000, "val": 10000, "test": 10000}
    assert s.train.shape[1:] == (1, 28, 28)
    assert set(s.test.unique().tolist()) == {0.0, 1.0}
    mean = s.train[:, 0].mean(0).double()
    border = torch.cat([mean[:2].flatten(), mean[-2:].flatten(), mean[:, :2].flatten(), mean[:, -2:].flatten()])
    assert float(border.max()) < 0.05 and float(mean[10:18, 10:18].mean()) > 0.3  # centred digits
    idx = torch.arange(28, dtype=torch.float64)

    def spread(p):
        m = (idx * p).sum() / p.sum()
        return float((((idx - m) ** 2) * p).sum() / p.sum()) ** 0.5

    assert spread(mean.sum(1)) > spread(mean.sum(0)) + 1  # digits are taller than wide: not transposed
    x0 = s.train[0, 0]
    assert float(x0[14:].sum()) > float(x0[:14].sum())  # train[0] is a 6: its loop is at the bottom


def test_real_caltech101():
    root = real_data("caltech101")
    s = datasets.load("caltech101", root, download=False)
    assert s.sizes() == {"train": 4100, "val": 2264, "test": 2307}
    assert set(s.train.unique().tolist()) == {0.0, 1.0}
    x = s.train[:, 0]
    border = torch.cat([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], 1)
    assert float(border.mean()) < 0.05 and float(x.mean()) > 0.3  # inverted: background 0, silhouette 1
    mat = scipy.io.loadmat(caltech101.FILES["mat"].path(root), variable_names=["train_labels", "classnames"])
    names = [str(c[0]) for c in mat["classnames"][0]]
    planes = x[torch.from_numpy(mat["train_labels"][:, 0] == names.index("Airplanes Side 2") + 1)]
    height = float((planes.sum(2) > 0).sum(1).float().mean())
    width = float((planes.sum(1) > 0).sum(1).float().mean())
    assert len(planes) == 100 and width > height + 1  # side views of airplanes are wide: not transposed
    assert float(planes[:, 14:].mean()) > float(planes[:, :14].mean())  # fuselage low, tail fin high: upright


def test_real_frey():
    root = real_data("frey")
    s = datasets.load("frey", root, download=False)
    assert s.sizes() == {"train": 1565, "val": 200, "test": 200}
    assert s.train.shape[1:] == (1, 28, 20) and s.meta.input_type == "gray"
    allx = torch.cat([s.train, s.val, s.test])
    k = allx * 256 - 0.5
    assert torch.equal(k, k.round()) and float(k.min()) >= 0 and float(k.max()) <= 255
    rows = allx[:, 0].mean((0, 2))
    assert float(rows[:4].mean()) > float(rows[5:9].mean()) + 0.1  # bright forehead above dark eyes: upright
    assert torch.equal(datasets.load("frey", root, download=False).val, s.val)  # fixed split


@pytest.mark.slow  # the console script in a subprocess, or 180 MB of real data
def test_real_cifar10():
    """The shared copy (content-verified, not byte-identical): the split, shapes, first pixels, class counts."""
    s = datasets.load("cifar10", real_data("cifar10"), download=False)
    assert s.sizes() == {"train": 40000, "val": 10000, "test": 10000}
    assert s.train.shape[1:] == s.test.shape[1:] == (3, 32, 32) and s.meta.input_type == "continuous"
    assert all(f["verified_by"] in ("md5", "content sha256") for f in s.info["files"].values())
    pixels = lambda x: (x * 256 - 0.5).round().to(torch.int64)  # back to the stored uint8 values
    assert pixels(s.test[0, 0, 0, :5]).tolist() == [158, 159, 165, 166, 160]  # test image 0 (a cat), red row 0
    first = (torch.tensor([59, 43, 50, 68, 98]) + 0.5) / 256  # training image 0 (a frog), red row 0
    trainval = torch.cat([s.train, s.val])
    assert int((trainval[:, 0, 0, :5] == first).all(1).sum()) == 1  # shuffled into train/val, once
    labels = s.info["labels"]
    assert torch.bincount(torch.cat([labels["train"], labels["val"]])).tolist() == [5000] * 10
    assert torch.bincount(labels["test"]).tolist() == [1000] * 10
    assert labels["test"][:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    from glossy_cli.data_cmd import dataset_status

    row = dataset_status("cifar10", real_data("cifar10"))  # what `glossy data` lists
    assert row["status"] == "ok" and row["sizes"] == s.sizes() and "content sha256" in row["verified"]


# ------------------------------------------------------------------------------------------ glossy data


def run_glossy(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GLOSSY_DATA_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg-cache")
    return subprocess.run([str(GLOSSY), *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)


def test_glossy_data_lists_missing_and_corrupt(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    (data / "caltech101").mkdir(parents=True)
    (data / "caltech101" / caltech101.FILES["mat"].filename).write_bytes(b"garbage")
    monkeypatch.delenv("GLOSSY_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    code, stdout, stderr = glossy_in_process(["data", f"data_dir={data}"], capsys, monkeypatch, tmp_path)
    p = subprocess.CompletedProcess([], code, stdout, stderr)
    assert p.returncode == 0, p.stderr
    lines = {ln.split()[0]: ln.split() for ln in p.stdout.splitlines()
             if ln[:1].strip() and ln.split()[0] in datasets.DATASETS}  # the table, not the notes below it
    assert set(lines) == set(datasets.DATASETS) - {"file"}  # `file` is a dataset only with its path
    for name in ("mnist", "omniglot", "frey", "histopathology", "cifar10"):
        assert lines[name][1] == "missing" and lines[name][-1] == str(data / name)
    assert lines["caltech101"][1] == "corrupt" and lines["synthetic"][1] == "generated"
    assert lines["synthetic"][2:5] == ["50000", "10000", "10000"]
    assert mnist.FILES["train"].url in p.stdout and "truncated: 7 bytes" in p.stdout
    assert "Traceback" not in p.stdout + p.stderr
    assert sorted(x.name for x in data.rglob("*")) == ["caltech101", caltech101.FILES["mat"].filename]


@pytest.mark.slow  # the console script in a subprocess, or 180 MB of real data
def test_glossy_data_fetch_offline_fails_cleanly(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    p = run_glossy("data", "fetch", "dataset=mnist", f"data_dir={empty}", "download=false", tmp_path=tmp_path)
    assert p.returncode != 0
    err = p.stderr.strip()
    assert "Traceback" not in p.stderr and len(err.splitlines()) == 1 and err.startswith("glossy: error: ")
    assert "binarized_mnist_train.amat" in err and mnist.FILES["train"].url in err and str(empty / "mnist") in err
    assert list(empty.iterdir()) == []


@pytest.mark.slow  # the console script in a subprocess, or 180 MB of real data
def test_glossy_data_real_frey(tmp_path):
    root = real_data("frey")
    p = run_glossy("data", "list", "dataset=frey", f"data_dir={root}", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr
    row = next(ln.split() for ln in p.stdout.splitlines() if ln.startswith("frey"))
    assert row[1:6] == ["ok", "1565", "200", "200", "sha256"]
    p = run_glossy("data", "fetch", "dataset=frey", f"data_dir={root}", tmp_path=tmp_path)
    assert p.returncode == 0 and "frey: ok  train 1565  val 200  test 200" in p.stdout, p.stderr


def test_a_training_refused_for_missing_data_leaves_no_run_directory(tmp_path, capsys, monkeypatch):
    runs, empty = tmp_path / "runs", tmp_path / "nodata"
    empty.mkdir()
    code, _, err = glossy_in_process(["train", "dataset=frey", f"data_dir={empty}", "download=false",
                                      f"runs_root={runs}", "train=quick"], capsys, monkeypatch, tmp_path)
    assert code == 2 and "glossy: error: dataset frey" in err and "Traceback" not in err
    assert not runs.exists() or list(runs.iterdir()) == [], list(runs.rglob("*"))


# ------------------------------------------------------------------------------------------ verify (glossy data)


def _frey_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "frey-data"
    path = frey.FILES["pkl"].path(root)
    path.parent.mkdir(parents=True)
    path.write_bytes(py2_pickle([frey_frames().reshape(FREY_N, 560)], 2))
    pin(monkeypatch, frey, "pkl", path)
    return root


def _histo_root(tmp_path) -> Path:
    folder = tmp_path / "histo-data" / "histopathology"
    folder.mkdir(parents=True)
    (folder / "histopathology.pkl").write_bytes(py2_pickle(histo_dict(), 2))
    return folder.parent


@pytest.mark.parametrize("name", ["mnist", "caltech101", "omniglot", "frey", "histopathology", "cifar10",
                                  "content-copy cifar10"])
def test_verify_reports_what_load_finds(name, request, tmp_path, monkeypatch):
    """`verify` (what `glossy data` lists: no splits built) gives the sizes and per-file checks of `load`, with
    and without the digest record, and the record is then used instead of reading the files again."""
    opts: dict = {}
    if name in ("mnist", "caltech101", "omniglot"):
        root = request.getfixturevalue({"mnist": "mnist_files", "caltech101": "caltech_file",
                                        "omniglot": "omniglot_file"}[name])[0]
        opts = {"n_validation": 5} if name == "omniglot" else {}
    elif name == "frey":
        root, opts = _frey_root(tmp_path, monkeypatch), frey_split_options()
    elif name == "histopathology":
        root = _histo_root(tmp_path)
    else:
        root, opts = request.getfixturevalue("cifar_dir")[0], {"n_val": 5}
        if name.startswith("content-copy"):
            for batch in ("data_batch_2", "test_batch"):
                f = root / "cifar10" / cifar10.FOLDER / batch
                d = pickle.loads(f.read_bytes(), encoding="latin1")
                del d["filenames"]
                f.write_bytes(py2_pickle(d, 2))
        name = "cifar10"
    loaded = datasets.load(name, root, download=False, **opts)
    want_files = {n: {"path": str(f["path"]), "verified_by": f["verified_by"]} for n, f in loaded.info["files"].items()}
    plain = datasets.verify(name, root, **opts)
    assert plain.sizes == loaded.sizes() and plain.files == want_files
    record = download.DigestCache(tmp_path / "digests.json")
    first = datasets.verify(name, root, record, **opts)
    record.save()
    assert (first.sizes, first.files) == (plain.sizes, plain.files) and record.reused == 0
    again = download.DigestCache(tmp_path / "digests.json")
    monkeypatch.setattr(download, "sha256_file", lambda p: pytest.fail(f"{p} hashed again"))
    monkeypatch.setattr(download, "md5_file", lambda p: pytest.fail(f"{p} hashed again"))
    second = datasets.verify(name, root, again, **opts)
    assert (second.sizes, second.files) == (plain.sizes, plain.files)
    assert again.reused == len(record.entries) > 0 or name in ("frey", "cifar10") and again.reused > 0


def test_the_digest_record_notices_a_changed_file(mnist_files, tmp_path):
    """A file changed after it was listed (new bytes, same size: mtime and the hash differ) is hashed again and
    reported corrupt; a record that cannot be read is ignored."""
    root, _ = mnist_files
    record = download.DigestCache(tmp_path / "digests.json")
    datasets.verify("mnist", root, record)
    record.save()
    path = mnist.FILES["val"].path(root)
    raw = bytearray(path.read_bytes())
    raw[0] = ord("1") if raw[0] == ord("0") else ord("0")  # one pixel flipped: same size, other SHA-256
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(DatasetCorrupt, match="SHA-256 mismatch"):
        datasets.verify("mnist", root, download.DigestCache(tmp_path / "digests.json"))
    (tmp_path / "digests.json").write_text("{not json")
    with pytest.raises(DatasetCorrupt, match="SHA-256 mismatch"):
        datasets.verify("mnist", root, download.DigestCache(tmp_path / "digests.json"))


def test_verify_refuses_as_load_does(tmp_path, cifar_dir):
    for name in ("mnist", "caltech101", "omniglot", "frey", "histopathology", "cifar10"):
        with pytest.raises(DatasetMissing) as missing:
            datasets.verify(name, tmp_path / "nothing")
        with pytest.raises(DatasetMissing) as loaded:
            datasets.load(name, tmp_path / "nothing", download=False)
        assert str(missing.value) == str(loaded.value)
    root, _ = cifar_dir
    batch = root / "cifar10" / cifar10.FOLDER / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-10])
    with pytest.raises(DatasetCorrupt) as verified:
        datasets.verify("cifar10", root, n_val=5)
    with pytest.raises(DatasetCorrupt) as loaded:
        datasets.load("cifar10", root, download=False, n_val=5)
    assert str(verified.value) == str(loaded.value)


def test_glossy_data_lists_without_torch(tmp_path, caltech_file, cifar_dir):
    """`glossy data` over present, verified files answers without importing torch (the modules loaded are
    counted, not the time): the recorded checksums of the generated files are handed to the child process."""
    root, _ = cifar_dir
    assert caltech_file[0] == root  # both fixtures write under tmp_path / "data"
    r = caltech101.FILES["mat"]
    code = (
        "import dataclasses, sys\n"
        "from glossy_datasets import caltech101, cifar10\n"
        f"caltech101.FILES['mat'] = dataclasses.replace(caltech101.FILES['mat'], sha256={r.sha256!r}, size={r.size})\n"
        f"cifar10.MD5.update({cifar10.MD5!r})\n"
        f"cifar10.CONTENT_SHA256.update({cifar10.CONTENT_SHA256!r})\n"
        "from glossy_cli.main import main\n"
        f"main(['data', 'data_dir={root}', 'dataset.options.n_val=5', 'dataset=cifar10'])\n"
        f"main(['data', 'data_dir={root}'])\n"
        "print('torch loaded:', 'torch' in sys.modules, file=sys.stderr)")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env=env)
    assert p.stderr.strip().splitlines()[-1] == "torch loaded: False", p.stderr[-2000:]
    one, every = p.stdout.split("data_dir: ")[1:]
    rows = {ln.split()[0]: ln.split() for ln in every.splitlines() if ln[:1].strip()}
    assert rows["caltech101"][1:6] == ["ok", "6", "4", "3", "sha256"], p.stdout
    assert rows["cifar10"][1] == "error" and "n_val=10000 must be between 1 and 19" in every  # 24 images here
    assert next(ln.split() for ln in one.splitlines() if ln.startswith("cifar10"))[1:6] == [
        "ok", "15", "5", "6", "md5"], p.stdout
    assert (tmp_path / "xdg-cache" / "glossy" / "digests.json").is_file()


def test_cifar10_download_extracts_only_the_missing_batches(cifar_dir, monkeypatch, tmp_path):
    """The archive is fetched (the network replaced), its MD5 checked, extracted with pooch's Untar, and only the
    missing batches moved into place: a batch already there keeps its inode. A wrong archive leaves nothing."""
    root, _ = cifar_dir
    folder = root / "cifar10" / cifar10.FOLDER
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=cifar10.FOLDER)
    archive = buf.getvalue()
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", hashlib.md5(archive).hexdigest())
    before = datasets.load("cifar10", root, download=False, n_val=5)
    kept = (folder / "data_batch_1").stat().st_ino
    for name in ("data_batch_2", "test_batch", "batches.meta"):
        (folder / name).unlink()
    calls: list = []
    fake_fetcher(monkeypatch, {cifar10.URL: archive}, calls)
    s = datasets.load("cifar10", root, download=True, n_val=5)
    assert calls == [cifar10.URL] and (folder / "data_batch_1").stat().st_ino == kept
    assert torch.equal(s.train, before.train) and torch.equal(s.test, before.test)
    assert sorted(p.name for p in (root / "cifar10").iterdir()) == sorted([cifar10.ARCHIVE, cifar10.FOLDER])
    other = tmp_path / "other"
    fake_fetcher(monkeypatch, {cifar10.URL: archive[:-100] + b"x" * 100})
    with pytest.raises(DatasetCorrupt, match="MD5 mismatch") as e:
        datasets.load("cifar10", other, download=True)
    one_line_message(e.value)
    assert leftovers(other) == []
