"""``xbeam cluster`` on an HDF5 stack: outputs, bad input, and the same maps on a Dask LocalCluster."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from xbeam_bluesky.cli import main

REFS = "Fe2O3_rt_01,Fe3O4_rt_01,FeS2_rt_01,Fe_metal_rt_01"


@pytest.fixture(scope="module")
def stack_file(tmp_path_factory, library, energies, noise, noisy_absorbance):
    truth = np.ones((48, 40), np.int32)
    truth[:, 20:] = 2
    truth[10:22, 5:15] = 3  # a block of pyrite
    names = ["Fe2O3_rt_01", "Fe3O4_rt_01", "FeS2_rt_01"]
    mu = 1.2 * (0.3 + np.vstack([library[n] for n in names]))[truth - 1].transpose(2, 0, 1)
    stack = noisy_absorbance(mu, 5e4, noise, seed=4).astype(np.float32)
    stack[:, 0, 0] = np.nan  # a bad pixel
    path = tmp_path_factory.mktemp("cli") / "stack.h5"
    with h5py.File(path, "w") as f:
        f["stack"] = stack
        f["stack"].attrs["i0_counts"] = 5e4
        f["energy"] = energies
    return path, truth


def _cluster(path, out, *extra) -> dict:
    code = main(["cluster", str(path), "--references", REFS, "--out", str(out), *extra])
    assert code == 0
    return out


def test_cluster_hdf5(stack_file, tmp_path, capsys) -> None:
    path, truth = stack_file
    out = _cluster(path, tmp_path / "out.h5", "--memory-mb", "0.1")
    summary = json.loads(capsys.readouterr().out)
    with h5py.File(out, "r") as f:
        labels, conf, spectra = f["labels"][()], f["confidence"][()], f["spectra"][()]
        names = [n.decode() for n in f["cluster_names"][()]]
        assert f["energy"].shape == (spectra.shape[1],)
    assert labels.dtype == np.int32 and labels.shape == truth.shape
    assert labels[0, 0] == 0 and summary["masked_pixels"] == 1
    for phase, name in ((1, "Fe2O3_rt_01"), (2, "Fe3O4_rt_01"), (3, "FeS2_rt_01")):
        label = names.index(name) + 1
        assert np.mean(labels[truth == phase] == label) > 0.99
    assert conf[labels > 0].min() > 0
    pyrite = next(c for c in summary["clusters"] if c["name"] == "FeS2_rt_01")
    assert pyrite["area_fraction"] == pytest.approx(120 / (48 * 40 - 1), abs=0.002)


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_maps(stack_file, tmp_path, capsys) -> None:
    from dask.distributed import LocalCluster

    path, _ = stack_file
    local = _cluster(path, tmp_path / "local.h5", "--memory-mb", "0.1")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = _cluster(
            path, tmp_path / "dask.h5", "--memory-mb", "0.1", "--dask", cluster.scheduler_address
        )
    capsys.readouterr()
    with h5py.File(local) as a, h5py.File(remote) as b:
        assert np.array_equal(a["labels"][()], b["labels"][()])
        assert np.allclose(a["confidence"][()], b["confidence"][()])
        assert np.allclose(a["spectra"][()], b["spectra"][()], equal_nan=True)


def test_bad_inputs_exit_2_with_a_message(stack_file, tmp_path, capsys) -> None:
    path, _ = stack_file
    no_energy = tmp_path / "noenergy.h5"
    with h5py.File(no_energy, "w") as f:
        f["stack"] = np.zeros((5, 4, 4), np.float32)
    assert main(["cluster", str(no_energy), "--i0", "1e4", "--out", str(tmp_path / "o.h5")]) == 2
    assert "no dataset /energy" in capsys.readouterr().err
    assert main(["cluster", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "o.h5")]) == 2
    assert "HDF5 file not found" in capsys.readouterr().err
    code = main(["cluster", str(path), "--references", "nonsense", "--out", str(tmp_path / "o.h5")])
    assert code == 2 and "nonsense" in capsys.readouterr().err
    assert main(["cluster", str(path), "--i0", "-3", "--out", str(tmp_path / "o.h5")]) == 2
    assert "--i0" in capsys.readouterr().err


def test_i0_per_energy(stack_file, tmp_path, capsys, energies) -> None:
    path, _ = stack_file
    per_energy = ",".join(["5e4"] * energies.size)
    out = _cluster(path, tmp_path / "per_energy.h5", "--i0", per_energy)
    summary = json.loads(capsys.readouterr().out)
    assert summary["i0_model"] == "--i0"
    scalar = _cluster(path, tmp_path / "scalar.h5", "--i0", "5e4")
    capsys.readouterr()
    with h5py.File(out) as a, h5py.File(scalar) as b:
        assert np.allclose(a["i0_counts"][()], 5e4) and a["i0_counts"].shape == (energies.size,)
        assert json.loads(a.attrs["i0_model"])["source"] == "--i0"
        assert np.array_equal(a["labels"][()], b["labels"][()])  # equal values per energy = the scalar
        assert np.allclose(a["confidence"][()], b["confidence"][()], rtol=1e-6)
    wrong = ",".join(["5e4"] * 7)
    assert main(["cluster", str(path), "--i0", wrong, "--out", str(tmp_path / "o.h5")]) == 2
    assert f"7 values for {energies.size} energies" in capsys.readouterr().err
    assert main(["cluster", str(path), "--i0", "5e4,0,5e4", "--out", str(tmp_path / "o.h5")]) == 2
    assert "--i0 value 2 0.0" in capsys.readouterr().err


@pytest.mark.slow
def test_dask_with_i0_per_energy_gives_the_same_maps(stack_file, tmp_path, capsys, energies) -> None:
    from dask.distributed import LocalCluster

    path, _ = stack_file
    i0 = ",".join(str(v) for v in np.where(np.arange(energies.size) % 2 == 0, 2e4, 8e4))
    local = _cluster(path, tmp_path / "local.h5", "--memory-mb", "0.1", "--i0", i0)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = _cluster(
            path, tmp_path / "dask.h5", "--memory-mb", "0.1", "--i0", i0, "--dask", cluster.scheduler_address
        )
    capsys.readouterr()
    with h5py.File(local) as a, h5py.File(remote) as b:
        assert a["i0_counts"].shape == (energies.size,)
        assert np.array_equal(a["labels"][()], b["labels"][()])
        assert np.allclose(a["confidence"][()], b["confidence"][()])
