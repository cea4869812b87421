"""The options a choice prompt offers, scored on validation from other users' labels only (evals.plan_options)."""

from __future__ import annotations

import numpy as np

from evals.plan_options import option_points, per_user_mean


def test_options_come_from_other_users_and_are_shown_best_or_nearest_last():
    rng = np.random.default_rng(1)
    users = np.array([f"u{n % 8}" for n in range(24)])  # 8 users x 3 fidelity levels
    vectors = rng.normal(size=(24, 6)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = rng.random((24, 9))
    options = option_points(scores, vectors, users, k=5)
    assert options["plan_exemplars@3"].shape == options["plan_exemplars@4"].shape == (24, 3)
    for u in (0, 7, 23):
        others = np.flatnonzero(users != users[u])
        nearest = others[np.argsort(-(vectors[others] @ vectors[u]), kind="stable")[:5]]
        means = scores[nearest].mean(axis=0)
        assert options["plan_exemplars@4"][u].tolist() == np.argsort(-means, kind="stable")[:3][::-1].tolist()
        # @3's nearest exemplar (shown last): its target, derived without this user's rows nor its own user's
        first = nearest[0]
        pool = np.flatnonzero((users != users[u]) & (users != users[first]))
        theirs = pool[np.argsort(-(vectors[pool] @ vectors[first]), kind="stable")[:5]]
        assert options["plan_exemplars@3"][u][-1] == int(np.argmax(scores[theirs].mean(axis=0)))


def test_a_users_fidelity_levels_count_once():
    users = np.array(["b", "a", "b", "a"])
    assert per_user_mean(np.array([1.0, 0.0, 3.0, 1.0]), users).tolist() == [0.5, 2.0]
