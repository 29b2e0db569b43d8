"""References in optical density on the stack's own energies (L edge): used as given, errors name the range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xbeam_bluesky.spectra import aligned_library, load_library, read_spectrum

REFS = Path(__file__).resolve().parents[2] / "data" / "stxm_FeL_71214078" / "references"


def test_l_edge_od_references_are_used_as_given():
    energies = np.loadtxt(REFS.parent / "Energy.txt")
    lib = aligned_library(load_library(REFS), energies)
    assert lib.names == ["oxidized", "reduced"] and lib.normalization == "none" and not lib.dropped
    raw = read_spectrum(REFS / "oxidized.t")
    assert np.allclose(lib.matrix[0], np.interp(energies, raw.energy, raw.mu))
    # the README's L3 maxima: Fe3+ 709.67 eV, Fe2+ 708.25 eV
    l3 = energies < 712
    assert energies[l3][np.argmax(lib.matrix[0][l3])] == pytest.approx(709.67, abs=0.2)
    assert energies[l3][np.argmax(lib.matrix[1][l3])] == pytest.approx(708.25, abs=0.2)


def test_edge_normalisation_is_refused_with_the_reason_and_range():
    energies = np.loadtxt(REFS.parent / "Energy.txt")
    lib = aligned_library(load_library(REFS), energies, normalization="edge")
    assert not lib.names
    assert "10 eV" in lib.dropped["oxidized"] and "range 700.0-730.4 eV" in lib.dropped["oxidized"]


def test_references_not_covering_the_stack_name_both_ranges():
    lib = aligned_library(load_library(REFS), np.linspace(690.0, 720.0, 40))
    assert "measured 700.0-730.4 eV does not cover the requested 690.0-720.0 eV" in lib.dropped["reduced"]
