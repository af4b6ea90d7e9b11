"""Unit tier: passwords are hashed with argon2id at its smallest cost unless a test asks for the production
parameters (``@pytest.mark.production_password_hashing``).

Every web spec's site creates users and signs in; at the production cost (64 MiB, 3 passes, 4 lanes: about
0.13 s and four threads per hash) that was a large share of the tier's CPU while saying nothing the specs
check. The hashing is still real argon2id; tests/unit/test_auth.py pins the production parameters, and the
integration and browser tiers run the service as deployed.
"""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher, Type

from updater.services.accounts import auth

QUICK_HASHER = PasswordHasher(
    time_cost=1, memory_cost=1024, parallelism=1, hash_len=32, salt_len=16, type=Type.ID
)


@pytest.fixture(autouse=True)
def quick_password_hashing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("production_password_hashing") is None:
        monkeypatch.setattr(auth, "_HASHER", QUICK_HASHER)
