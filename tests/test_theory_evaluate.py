"""`linearcnn.theory.evaluate.profile_table` against the closed form written out in numpy."""

import json

import numpy as np
import pytest

from linearcnn.cli import main
from linearcnn.errors import LinearCNNInputError
from linearcnn.theory.evaluate import profile_table


def test_steps_match_the_closed_form_and_sort_the_eigenvalues():
    mu = np.array([0.25, 4.0, 1.0])
    table = profile_table(mu, lr=0.1, steps=[1, 10, 100], normalize=False)
    sorted_mu = np.array([4.0, 1.0, 0.25])
    expected = np.stack([(1 - (1 - 0.1 * sorted_mu) ** t) / np.sqrt(sorted_mu) for t in (1, 10, 100)])  # (3, 3)
    np.testing.assert_array_equal(table.eigenvalues, sorted_mu)
    np.testing.assert_allclose(table.profiles, expected, rtol=1e-12)
    np.testing.assert_allclose(table.whitening_limit, 1 / np.sqrt(sorted_mu), rtol=1e-12)


def test_tau_raw_and_normalised():
    mu = np.array([4.0, 1.0, 0.25])
    r, tau = 0.3, 2.0
    table = profile_table(mu, tau=[tau], init_ratio=r)
    flow = (1 - np.exp(-tau * mu)) / np.sqrt(mu)
    raw = np.sqrt(flow**2 + r**2)
    np.testing.assert_allclose(table.profiles[0], raw / raw.max(), rtol=1e-12)
    assert table.to_dict()["tau"] == [tau] and table.to_dict()["lr"] is None


@pytest.mark.parametrize("bad", [float("nan"), -1.0, float("inf"), 1e300])
def test_bad_init_ratio_is_refused(bad):
    with pytest.raises(LinearCNNInputError, match="init_ratio") as info:
        profile_table([1.0], lr=0.1, steps=[1], init_ratio=bad)
    assert info.value.parameter == "init_ratio"


def test_cli_names_the_flag(capsys):
    assert main(["derive", "-e", "4,1", "--init-ratio", "nan"]) == 2
    assert "--init-ratio must be a finite number" in capsys.readouterr().err
    assert main(["derive", "-e", "4,1", "--lr", "0.1", "--steps", "5", "--json", "--no-normalize"]) == 0
    payload = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(payload["profiles"][0], (1 - (1 - 0.1 * np.array([4.0, 1.0])) ** 5) / np.sqrt([4.0, 1.0]), rtol=1e-12)
