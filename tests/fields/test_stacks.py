"""Users' stacks of fields on disk: every format reads back the same values, lazily and in the
order asked, with the grid of its metadata; the streaming check's statistics and its errors;
patches of a single training image cover it exactly."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch
import zarr
from safetensors.torch import save_file
from zarr.storage import ZipStore

from vaeinv import Grid
from vaeinv.fields import (
    FieldStack,
    check_stack,
    cut_patches,
    open_image,
    open_stack,
    stack_from_patches,
)

FORMATS = ["npy", "npz", "h5", "zarr", "zip", "safetensors", "numpy", "torch"]


def _values(num=7, ny=4, nx=5, seed=0) -> np.ndarray:
    """Positive float32 fields, every value distinct (so that a misplaced row shows)."""
    rng = np.random.default_rng(seed)
    return (
        (rng.permutation(num * ny * nx) + 1.0 + rng.random(num * ny * nx))
        .astype(np.float32)
        .reshape(num, ny, nx)
    )


def _zarr_group(path, kind):
    store = ZipStore(path, mode="w") if kind == "zip" else str(path)
    return store, zarr.open_group(store=store, mode="w")


def _write(kind, tmp_path, data, meta=None, key="fields"):
    """``data`` in a file of ``kind`` (its array named ``key`` where a format names arrays),
    ``meta`` (grid entries) where the format keeps metadata; the source to open."""
    meta = meta or {}
    if kind in ("numpy", "torch"):
        return data if kind == "numpy" else torch.from_numpy(data)
    path = tmp_path / f"data.{kind}"
    if kind == "npy":
        np.save(path, data)
    elif kind == "npz":
        np.savez(path, **{key: data}, **meta)
    elif kind == "h5":
        with h5py.File(path, "w") as handle:
            handle.create_dataset(key, data=data).attrs.update(meta)
    elif kind in ("zarr", "zip"):
        store, group = _zarr_group(path, kind)
        chunks = (2, *data.shape[1:])  # a zip store writes each file once: attributes first
        array = group.create_array(
            key, shape=data.shape, dtype=data.dtype, chunks=chunks, attributes=meta
        )
        array[:] = data
        if kind == "zip":
            store.close()
    else:
        save_file(
            {key: torch.from_numpy(data)}, path, metadata={k: str(v) for k, v in meta.items()}
        )
    return path


@pytest.mark.parametrize("kind", FORMATS)
def test_every_format_reads_back_the_values_in_the_order_asked(kind, tmp_path):
    data = _values()
    stack = open_stack(_write(kind, tmp_path, data))
    assert stack.shape == data.shape and len(stack) == 7 and stack.grid is None and not stack.log
    whole = stack.read(slice(None))
    assert whole.dtype == torch.float32 and whole.device.type == "cpu"
    assert torch.equal(whole, torch.from_numpy(data))
    order = torch.tensor([5, 0, 6, 2, 3])  # shuffled, with a run (2, 3) and gaps
    assert torch.equal(stack.read(order), torch.from_numpy(data[order.numpy()]))
    assert torch.equal(stack.read(slice(5, 0, -2)), torch.from_numpy(data[5:0:-2].copy()))
    assert stack.read(torch.tensor([], dtype=torch.int64)).shape == (0, 4, 5)
    assert stack.read(slice(3, 3)).shape == (0, 4, 5)
    whole[0, 0, 0] = -1.0  # a read is the caller's own copy, never a view of the source
    assert stack.read(slice(0, 1))[0, 0, 0] == float(data[0, 0, 0]) != -1.0


@pytest.mark.parametrize("kind", FORMATS)
def test_batches_cover_every_field_once_in_file_order(kind, tmp_path):
    data = _values()
    stack = open_stack(_write(kind, tmp_path, data))
    starts, blocks = zip(*stack.batches(3), strict=True)
    assert starts == (0, 3, 6) and [len(b) for b in blocks] == [3, 3, 1]
    assert torch.equal(torch.cat(blocks), torch.from_numpy(data))


@pytest.mark.parametrize("kind", ["npy", "h5", "safetensors"])
def test_log_reads_the_natural_log_of_the_raw_values(kind, tmp_path):
    data = _values()
    stack = open_stack(_write(kind, tmp_path, data), log=True)
    assert stack.log
    raw = torch.from_numpy(data)
    torch.testing.assert_close(stack.read(slice(None)), torch.log(raw), rtol=0, atol=0)
    index = torch.tensor([4, 1])
    torch.testing.assert_close(stack.read(index), torch.log(raw[index]), rtol=0, atol=0)


def test_an_unsorted_h5_read_reorders_rows_that_h5py_reads_sorted(tmp_path):
    data = _values(num=20)
    stack = open_stack(_write("h5", tmp_path, data))
    index = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    assert torch.equal(stack.read(index), torch.from_numpy(data[index.numpy()]))
    assert torch.equal(stack.read(torch.tensor([3, 3, 1])), torch.from_numpy(data[[3, 3, 1]]))


def test_a_stack_pickles_without_its_file_open(tmp_path):
    """A DataLoader worker gets the stack by pickling: it carries the path, not an open file."""
    data = _values()
    for kind in ("npy", "h5", "zarr", "safetensors"):
        stack = pickle.loads(pickle.dumps(open_stack(_write(kind, tmp_path, data))))
        assert torch.equal(stack.read(torch.tensor([6, 0])), torch.from_numpy(data[[6, 0]]))


@pytest.mark.parametrize("kind", ["npz", "h5", "zarr", "zip", "safetensors"])
@pytest.mark.parametrize(
    "meta", [{"lx": 2.5, "ly": 1.0}, {"nx": 5, "ny": 4, "dx": 0.5, "dy": 0.25}]
)
def test_the_grid_comes_from_each_formats_metadata(kind, meta, tmp_path):
    stack = open_stack(_write(kind, tmp_path, _values(), meta))
    assert stack.grid == Grid(5, 4, 2.5, 1.0)
    same = Grid(5, 4, 2.5, 1.0, origin=(1.0, 0.0))  # an agreeing argument wins (its origin)
    assert open_stack(_write(kind, tmp_path, _values(), meta), grid=same).grid == same


def test_h5_metadata_falls_back_to_the_file_root_and_keys_are_paths(tmp_path):
    path = tmp_path / "nested.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs.update({"lx": 10.0, "ly": 8.0})
        handle.create_dataset("runs/a/logk", data=_values())
    stack = open_stack(path)  # the only 3-D dataset, found in a subgroup
    assert stack.grid == Grid(5, 4, 10.0, 8.0) and stack.source == f"{path}:runs/a/logk"
    assert open_stack(path, key="/runs/a/logk").shape == (7, 4, 5)


def test_a_grid_argument_is_used_when_the_file_has_none_and_must_agree_with_metadata(tmp_path):
    grid = Grid(5, 4, 3.0, 2.0)
    assert open_stack(_write("npy", tmp_path, _values()), grid=grid).grid == grid
    path = _write("h5", tmp_path, _values(), {"lx": 2.5, "ly": 1.0})
    with pytest.raises(ValueError, match=r"grid argument Grid\(nx=5.*lx=3\.0.*differs.*lx=2\.5"):
        open_stack(path, grid=grid)
    with pytest.raises(ValueError, match=r"does not fit .* 4 x 5 cells"):
        open_stack(_write("npy", tmp_path, _values()), grid=Grid(4, 5))


@pytest.mark.parametrize("kind", ["npz", "h5", "zarr", "safetensors"])
def test_metadata_that_disagrees_with_the_array_shape_raises(kind, tmp_path):
    path = _write(kind, tmp_path, _values(), {"nx": 6, "ny": 4, "lx": 1.0, "ly": 1.0})
    with pytest.raises(ValueError, match=r"nx = 6, but the array has \(7, 4, 5\)"):
        open_stack(path)
    path = _write(kind, tmp_path, _values(), {"lx": 1.0})
    with pytest.raises(ValueError, match=r"grid metadata .*ly must be a positive finite length"):
        open_stack(path)


def test_fingerprint_follows_the_values_and_the_log_flag(tmp_path):
    data = _values()
    path = _write("npy", tmp_path, data)
    first = open_stack(path).fingerprint()
    assert len(first) == 64 and first == open_stack(path).fingerprint()
    assert first == open_stack(_write("h5", tmp_path, data)).fingerprint()  # same values
    assert first != open_stack(path, log=True).fingerprint()
    data[6, 3, 4] += 1.0
    assert first != open_stack(_write("npy", tmp_path, data)).fingerprint()


@pytest.mark.parametrize("log", [False, True])
def test_check_stack_statistics_equal_numpys(log, tmp_path):
    data = _values(num=9)
    stack = open_stack(_write("h5", tmp_path, data), log=log)
    values = stack.read(slice(None)).double().numpy()  # as read: float32, after the log
    np.testing.assert_allclose(values, np.log(data.astype(np.float64)) if log else data, 1e-6)
    for batch_size in (1, 4, 256):  # the streaming merge is exact whatever the batches
        stats = check_stack(stack, batch_size=batch_size)
        assert stats["num"] == 9
        assert (stats["min"], stats["max"]) == (values.min(), values.max())
        assert stats["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert stats["std"] == pytest.approx(values.std(), rel=1e-12)


def test_check_stack_counts_and_places_nan_and_infinite_values(tmp_path):
    data = _values()
    data[2, 1, 3] = np.nan
    data[5, 0, 0] = np.inf
    data[6, 3, 4] = np.nan
    stack = open_stack(_write("npy", tmp_path, data))
    with pytest.raises(ValueError, match=r"3 values NaN or infinite.*\(2, 1, 3\), \(5, 0, 0\)"):
        check_stack(stack, batch_size=2)  # found across batches, positions in the whole stack


def test_check_stack_with_log_rejects_non_positive_raw_values(tmp_path):
    data = _values()
    data[1, 2, 0] = 0.0
    data[4, 0, 1] = -3.0
    stack = open_stack(_write("npy", tmp_path, data), log=True)
    with pytest.raises(ValueError, match=r"2 values <= 0 .*log=True.*\(1, 2, 0\), \(4, 0, 1\)"):
        check_stack(stack)
    stats = check_stack(open_stack(_write("npy", tmp_path, data)))  # fine without the log
    assert stats["min"] == -3.0


def test_check_stack_wants_at_least_as_many_fields_as_latent_dimensions(tmp_path):
    stack = open_stack(_write("npy", tmp_path, _values(num=3)))
    with pytest.raises(ValueError, match="3 fields, fewer than the latent dimension 8"):
        check_stack(stack, min_fields=8)
    assert check_stack(stack, min_fields=3)["num"] == 3


def test_file_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        open_stack(tmp_path / "missing.h5")
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"unknown extension '\.csv'; supported: \.npy, \.npz"):
        open_stack(tmp_path / "data.csv")
    with pytest.raises(ValueError, match="source must be a path or an array"):
        open_stack([[[1.0]]])
    with pytest.raises(ValueError, match=r"holds a single array.*key = 'x'"):
        open_stack(_write("npy", tmp_path, _values()), key="x")


def _write_two(kind, tmp_path):
    """A file of ``kind`` holding two 3-D arrays, ``a`` and ``b`` (under a group in HDF5/zarr)."""
    a, b = _values(), _values(seed=1)
    path = tmp_path / f"two.{kind}"
    if kind == "npz":
        np.savez(path, a=a, b=b, lx=1.0, ly=2.0)  # scalars are metadata
    elif kind == "h5":
        with h5py.File(path, "w") as handle:
            handle["g/a"], handle["g/b"] = a, b
    elif kind == "zarr":
        group = zarr.open_group(str(path), mode="w").create_group("g")
        group.create_array("a", data=a)
        group.create_array("b", data=b)
    else:
        save_file({"a": torch.from_numpy(a), "b": torch.from_numpy(b)}, path)
    return path, "g/" if kind in ("h5", "zarr") else ""


@pytest.mark.parametrize("kind", ["npz", "h5", "zarr", "safetensors"])
def test_several_arrays_need_a_key_and_an_unknown_key_lists_them(kind, tmp_path):
    path, group = _write_two(kind, tmp_path)
    with pytest.raises(ValueError, match=rf"several 3-D arrays \('{group}a' \(7, 4, 5\), "):
        open_stack(path)
    with pytest.raises(ValueError, match=rf"no array 'c'; the arrays there are .*'{group}b'"):
        open_stack(path, key="c")
    stack = open_stack(path, key=f"{group}b")
    assert stack.source == f"{path}:{group}b"
    assert torch.equal(stack.read(slice(None)), torch.from_numpy(_values(seed=1)))


def test_a_zarr_store_that_is_one_array_takes_no_key(tmp_path):
    path = tmp_path / "one.zarr"
    zarr.create_array(str(path), data=_values(), attributes={"dx": 0.5, "dy": 0.5})
    stack = open_stack(path)
    assert stack.source == str(path) and stack.grid == Grid(5, 4, 2.5, 2.0)
    assert torch.equal(stack.read(torch.tensor([1, 0])), torch.from_numpy(_values()[[1, 0]]))
    with pytest.raises(ValueError, match="holds a single array, not named ones; got key = 'a'"):
        open_stack(path, key="a")
    with pytest.raises(ValueError, match="in-memory ndarray> holds a single array"):
        open_stack(_values(), key="a")


@pytest.mark.parametrize("kind", ["npy", "npz", "h5", "safetensors"])
def test_a_2d_array_is_a_single_image_to_cut_into_patches(kind, tmp_path):
    path = _write(kind, tmp_path, _values()[0])
    with pytest.raises(ValueError, match=r"single image \(4, 5\); use patches \(--patches SIZE\)"):
        open_stack(path)


def test_arrays_of_other_ranks_or_dtypes_raise(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(2, 7, 4, 5\); expected a stack of fields"):
        open_stack(np.stack([_values()] * 2))
    np.save(tmp_path / "text.npy", np.full((2, 3, 3), "a"))
    with pytest.raises(ValueError, match="dtype <U1; expected integers, floats or booleans"):
        open_stack(tmp_path / "text.npy")
    with pytest.raises(ValueError, match=r"dtype torch\.complex64"):
        open_stack(torch.zeros(2, 3, 3, dtype=torch.complex64))
    ints = open_stack(np.arange(18).reshape(2, 3, 3))  # integers and booleans are numbers
    assert torch.equal(ints.read(slice(None)), torch.arange(18.0).reshape(2, 3, 3))
    assert open_stack(np.ones((2, 3, 3), dtype=bool)).read(slice(None)).sum() == 18


def test_bad_indices_raise():
    stack = open_stack(_values())
    with pytest.raises(ValueError, match="index 7 is out of range"):
        stack.read(torch.tensor([0, 7]))
    with pytest.raises(ValueError, match=r"index must be a slice or 1-D ints, got torch\.float32"):
        stack.read(torch.tensor([0.0]))
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        next(stack.batches(0))
    with pytest.raises(ValueError, match="is not"):
        FieldStack((3, 4), lambda rows: None)


@pytest.mark.parametrize("kind", ["npy", "h5", "zarr", "numpy"])
def test_open_image_reads_a_2d_array_whole(kind, tmp_path):
    image = _values()[0]
    got = open_image(_write(kind, tmp_path, image))
    assert got.dtype == torch.float32 and torch.equal(got, torch.from_numpy(image))
    assert torch.equal(open_image(_write(kind, tmp_path, image), log=True), torch.log(got))


def test_open_image_errors(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(7, 4, 5\); expected an image \(ny, nx\)"):
        open_image(_values())
    image = _values()[0]
    image[3, 1] = -1.0
    with pytest.raises(ValueError, match=r"1 values <= 0 .* \(iy, ix\) = \(3, 1\)"):
        open_image(image, log=True)
    image[0, 2] = np.nan
    with pytest.raises(
        ValueError, match=r"1 values NaN or infinite .*first at \(iy, ix\) = \(0, 2\)"
    ):
        open_image(image)


def _corners(n, size, stride):
    """The corners along one axis: the lattice, then the far edge if the lattice misses it."""
    lattice = list(range(0, n - size + 1, stride))
    return lattice if lattice[-1] == n - size else [*lattice, n - size]


@pytest.mark.parametrize(
    ("shape", "size", "stride"),
    [((12, 17), 4, 3), ((10, 10), 4, 3), ((9, 13), 5, None), ((6, 6), 6, 2), ((8, 11), 2, 1)],
)
def test_cut_patches_covers_the_image_with_patches_cut_at_their_corners(shape, size, stride):
    ny, nx = shape
    image = torch.arange(ny * nx, dtype=torch.float64).reshape(ny, nx)
    patches = cut_patches(image, size, stride)
    step = max(1, size // 4) if stride is None else stride
    rows, cols = _corners(ny, size, step), _corners(nx, size, step)
    expected = (len(range(0, ny - size + 1, step)) + ((ny - size) % step > 0)) * (
        len(range(0, nx - size + 1, step)) + ((nx - size) % step > 0)
    )
    assert patches.shape == (expected, size, size) == (len(rows) * len(cols), size, size)
    assert patches.dtype == image.dtype
    covered = torch.zeros(ny, nx, dtype=torch.int64)
    for k, (iy, ix) in enumerate((iy, ix) for iy in rows for ix in cols):  # row-major
        assert torch.equal(patches[k], image[iy : iy + size, ix : ix + size])
        covered[iy : iy + size, ix : ix + size] += 1
    assert bool((covered >= 1).all())


def test_cut_patches_errors():
    image = torch.zeros(6, 9)
    with pytest.raises(ValueError, match="a patch of 7 x 7 cells is larger than the 6 x 9 image"):
        cut_patches(image, 7)
    with pytest.raises(ValueError, match="patch size must be an integer >= 2, got 1"):
        cut_patches(image, 1)
    with pytest.raises(ValueError, match="patch stride must be an integer >= 1, got 0"):
        cut_patches(image, 3, 0)
    with pytest.raises(ValueError, match=r"image has shape \(1, 6, 9\); expected a 2-D image"):
        cut_patches(image[None], 3)


def test_stack_from_patches_keeps_the_cells_of_the_images_grid():
    image = torch.rand(12, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    stack = stack_from_patches(image, 8, 4, grid=Grid(16, 12, lx=4.0, ly=6.0))
    assert stack.grid == Grid(8, 8, lx=2.0, ly=4.0)
    assert stack.grid.dx == 0.25 and stack.grid.dy == 0.5
    assert torch.equal(stack.read(slice(None)), cut_patches(image, 8, 4).float())
    assert len(stack) == 2 * 3 and stack_from_patches(image, 8).grid is None
    with pytest.raises(ValueError, match="does not fit the image's 12 x 16 cells"):
        stack_from_patches(image, 8, grid=Grid(12, 16))
    stats = check_stack(stack, min_fields=6)
    assert stats["num"] == 6 and 0.0 <= stats["min"] <= stats["mean"] <= stats["max"] <= 1.0
