"""SMPL model files: chumpy pickles read without chumpy or running file code; the convert round trip."""

from __future__ import annotations

import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from animlcm.errors import AnimlcmError
from animlcm.stages.extract.smpl.model import find_model_file, gender_of, load_body_model, load_model_data
from animlcm.stages.extract.smpl.synthetic import make_synthetic_smpl, write_synthetic_smpl


@pytest.fixture()
def fake_chumpy(monkeypatch):
    """Stand-ins registered as ``chumpy.ch.Ch`` and ``scipy.sparse._csc.csc_matrix``, so that a test can
    write a pickle shaped like the official SMPL files (neither package is installed here)."""

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)
            self._cache = {}

    class csc_matrix:  # noqa: N801 - scipy's name
        def __init__(self, dense):
            dense = np.asarray(dense)
            rows, cols = np.nonzero(dense.T)  # column-major order
            self.data = dense.T[rows, cols]
            self.indices = cols.astype(np.int32)
            self.indptr = np.concatenate(
                [[0], np.cumsum(np.bincount(rows, minlength=dense.shape[1]))]
            ).astype(np.int32)
            self._shape = dense.shape
            self.maxprint = 50

    mods = {}
    for name, cls in (("chumpy.ch", Ch), ("scipy.sparse._csc", csc_matrix)):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            mod_name = ".".join(parts[:i])
            mods.setdefault(mod_name, types.ModuleType(mod_name))
            monkeypatch.setitem(sys.modules, mod_name, mods[mod_name])
        cls.__module__, cls.__qualname__ = name, cls.__name__
        setattr(mods[name], cls.__name__, cls)
    return Ch, csc_matrix


def _official_style_pickle(path: Path, data: dict, fake_chumpy) -> None:
    ch, csc = fake_chumpy
    official = dict(data)
    official.pop("landmark_vertex_ids")
    official["shapedirs"] = ch(data["shapedirs"])
    official["posedirs"] = ch(data["posedirs"])
    official["J_regressor"] = csc(data["J_regressor"])
    official["f"] = data["f"].astype(np.uint32)
    official["bs_style"] = "lbs"
    with open(path, "wb") as fh:
        pickle.dump(official, fh, protocol=2)


def test_chumpy_pickle_loads_as_numpy(tmp_path, fake_chumpy):
    data = make_synthetic_smpl()
    src = tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    _official_style_pickle(src, data, fake_chumpy)
    loaded = load_model_data(src)
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f"):
        assert isinstance(loaded[key], np.ndarray)
        np.testing.assert_allclose(loaded[key], data[key], atol=1e-7, err_msg=key)


def test_convert_round_trip_and_smplx_loads_the_result(tmp_path, fake_chumpy):
    from typer.testing import CliRunner

    from animlcm.cli import app

    data = make_synthetic_smpl()
    src = tmp_path / "SMPL_NEUTRAL.pkl"
    _official_style_pickle(src, data, fake_chumpy)
    out = tmp_path / "models"
    result = CliRunner().invoke(app, ["smpl", "convert", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    npz = out / "smpl" / "SMPL_NEUTRAL.npz"
    assert find_model_file(out) == npz
    converted = load_model_data(npz)
    for key in ("v_template", "shapedirs", "J_regressor", "weights", "f"):
        np.testing.assert_allclose(converted[key], data[key], atol=1e-7, err_msg=key)

    # smplx itself loads the plain .pkl from the folder (no chumpy needed) and poses it like our loader.
    import smplx

    ids = {
        n: int(i)
        for n, i in zip(("nose", "reye", "leye", "rear", "lear"), data["landmark_vertex_ids"], strict=True)
    }
    ref = smplx.SMPL(model_path=str(out / "smpl"), vertex_ids=ids, use_hands=False, use_feet_keypoints=False)
    body = load_body_model(out)
    pose = torch.full((1, 69), 0.1)
    with torch.no_grad():
        expected = ref(body_pose=pose).vertices
        ours, _ = body.forward(torch.zeros(1, 10), pose, torch.zeros(1, 3))
    torch.testing.assert_close(ours, expected)


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    src = tmp_path / "SMPL_NEUTRAL.pkl"
    src.write_bytes(pickle.dumps({"v_template": Evil()}, protocol=2))
    with pytest.raises(AnimlcmError, match="system.*refusing"):
        load_model_data(src)
    assert not marker.exists()


def test_bad_model_folders_fail_with_one_line(tmp_path):
    with pytest.raises(AnimlcmError, match="smpl convert"):
        find_model_file(tmp_path)
    bad = tmp_path / "smpl" / "SMPL_NEUTRAL.npz"
    bad.parent.mkdir()
    data = make_synthetic_smpl()
    del data["J_regressor"]
    np.savez(bad, **data)
    with pytest.raises(AnimlcmError, match="missing J_regressor"):
        load_model_data(bad)
    data = make_synthetic_smpl()
    data["posedirs"] = data["posedirs"][:, :, :10]
    np.savez(bad, **data)
    with pytest.raises(AnimlcmError, match="posedirs has shape"):
        load_model_data(bad)


def test_gender_from_official_names():
    assert gender_of(Path("basicModel_f_lbs_10_207_0_v1.0.0.pkl")) == "FEMALE"
    assert gender_of(Path("basicmodel_m_lbs_10_207_0_v1.1.0.pkl")) == "MALE"
    assert gender_of(Path("SMPL_FEMALE.pkl")) == "FEMALE"
    assert gender_of(Path("basicModel_neutral_lbs_10_207_0_v1.0.0.pkl")) == "NEUTRAL"


def test_synthetic_model_is_a_plausible_smpl(tmp_path):
    path = write_synthetic_smpl(tmp_path)
    body = load_body_model(tmp_path)
    assert body.path == path
    assert set(body.parts.unique().tolist()) <= set(range(24))
    verts, joints = body.forward(torch.zeros(1, 10), torch.zeros(1, 69), torch.zeros(1, 3))
    height = verts[0, :, 1].max() - verts[0, :, 1].min()
    assert 1.4 < height < 2.0  # metres, like SMPL
    # the regressed rest joints sit at the skeleton the mesh was built around
    from animlcm.stages.extract.smpl.synthetic import REST_JOINTS

    np.testing.assert_allclose(joints[0].numpy(), REST_JOINTS, atol=1e-5)
