"""The image-check policy (torch-free): resample seeded rows deterministically, blank what cannot be redrawn."""

from __future__ import annotations

import numpy as np
import pytest

from feature_unlearn.serve.policy import MAX_TRIES, NEUTRAL, RowSource, check_policy, enforce


def _graph(z: np.ndarray) -> list[np.ndarray]:
    """A stand-in graph: the image check flags latents whose first coordinate is above 0.5."""
    image = np.repeat((z[:, :1, None, None] * 10 + 60).astype(np.uint8), 4, axis=1)
    flag = z[:, 0] > 0.5
    return [image, np.zeros(len(z), bool), z[:, 1].copy(), flag, z[:, 0].copy()]


def test_resample_redraws_seeded_rows_the_same_way_and_blanks_given_latents() -> None:
    z = np.array([[2.0, 0], [0.0, 0], [3.0, 0]], dtype=np.float32)
    sources = [RowSource(7, 0), RowSource(7, 1), None]
    used, out, actions = enforce("resample", _graph, z, _graph(z), sources)
    assert actions.tolist() == ["resampled", "pass", "blanked"]
    assert used[0, 0] <= 0.5 and not out[3][0] and (used[1] == z[1]).all()
    assert (out[0][2] == NEUTRAL).all() and out[3][2]  # the check's flag is still reported
    again, _, _ = enforce("resample", _graph, z, _graph(z), sources)
    assert np.array_equal(used, again)  # a seeded request stays reproducible
    assert z[0, 0] == 2.0  # the caller's arrays are not touched


def test_a_row_still_flagged_after_the_last_try_is_blanked() -> None:
    always = lambda z: [*_graph(z)[:3], np.ones(len(z), bool), np.ones(len(z), np.float32)]  # noqa: E731
    calls: list[int] = []

    def counting(z: np.ndarray) -> list[np.ndarray]:
        calls.append(len(z))
        return always(z)

    z = np.zeros((2, 2), np.float32)
    _, out, actions = enforce("resample", counting, z, always(z), [RowSource(None, 0), RowSource(None, 1)])
    assert actions.tolist() == ["blanked", "blanked"] and len(calls) == MAX_TRIES
    assert (out[0] == NEUTRAL).all()


@pytest.mark.parametrize("policy, action", [("blank", "blanked"), ("reject", "rejected")])
def test_blank_and_reject_never_redraw(policy: str, action: str) -> None:
    z = np.array([[2.0, 0], [0.0, 0]], dtype=np.float32)
    used, out, actions = enforce(policy, _graph, z, _graph(z), [RowSource(1, 0), RowSource(1, 1)])
    assert actions.tolist() == [action, "pass"] and np.array_equal(used, z)
    assert (out[0][0] == NEUTRAL).all() and not (out[0][1] == NEUTRAL).all()
    with pytest.raises(ValueError, match="--on-flagged 'maybe': choose from resample, blank, reject"):
        check_policy("maybe")
