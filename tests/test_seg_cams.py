"""CAM files: the three formats read alike; validation names the file and the problem."""
import numpy as np
import pytest
import torch

from wsssbench.cams import load_cams, save_cams, validate_cams
from wsssbench.errors import UserError


def test_formats_read_alike_and_planes_sorted_by_key(tmp_path):
    planes = np.random.default_rng(0).random((2, 4, 5)).astype(np.float32)
    save_cams(tmp_path / "a.npz", [7, 2], planes)
    np.save(tmp_path / "irn.npy", {"keys": torch.tensor([7, 2]), "cam": torch.zeros(2, 1, 1),
                                   "high_res": torch.from_numpy(planes)})
    np.save(tmp_path / "seam.npy", {7: planes[0], 2: planes[1]})
    for name in ("a.npz", "irn.npy", "seam.npy"):
        cf = load_cams(tmp_path / name)
        assert cf.keys.tolist() == [2, 7], name
        assert (cf.cams[0] == planes[1]).all() and (cf.cams[1] == planes[0]).all(), name


@pytest.mark.parametrize("problem, match", [
    ("nan", "NaN/Inf"), ("inf", "NaN/Inf"), ("shape", "image resolution"), ("extra", "not labelled"),
    ("missing", "no CAM for labelled"), ("ints", "dtype"),
])
def test_validate(tmp_path, problem, match):
    keys, cams = np.array([0, 3]), np.zeros((2, 4, 5), np.float32)
    labels, shape = [0, 3], (4, 5)
    if problem == "nan":
        cams[1, 2, 3] = np.nan
    if problem == "inf":
        cams[0, 0, 0] = np.inf
    if problem == "shape":
        shape = (5, 4)
    if problem == "extra":
        labels = [0]
    if problem == "missing":
        labels = [0, 3, 5]
    if problem == "ints":
        cams = cams.astype(np.int32)
    save_cams(tmp_path / "x.npz", keys, cams)
    with pytest.raises(UserError, match=match) as err:
        validate_cams(load_cams(tmp_path / "x.npz"), tmp_path / "x.npz", keys=labels, shape=shape)
    assert "x.npz" in str(err.value)


def test_unreadable_and_foreign_files(tmp_path):
    (tmp_path / "t.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(UserError, match="t.npy: unreadable"):
        load_cams(tmp_path / "t.npy")
    np.save(tmp_path / "arr.npy", np.zeros((2, 2)))
    with pytest.raises(UserError, match="not a CAM file"):
        load_cams(tmp_path / "arr.npy")
