"""GET /models/{id}/download (issue 13: there was no way to get a trained model out of the service): a
zip of the checkpoint that unpacks into a folder the CLI loads, the same files byte for byte; a
checkpoint changed after registration, or one outside the model root, is a 409; another tenant 404."""
from __future__ import annotations

import io
import zipfile

import pytest

from promptehr.cli.main import main
from promptehr.model.nn import checkpoint
from promptehr.service import store
from tests.conftest import tenant_key

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
    """A tiny checkpoint under a model root of its own."""
    root = tmp_path_factory.mktemp("models")
    out = root / "training-jobs" / "m1"
    assert main(["-q", "train", "--data", str(shared_data / "mimic3-demo"), "--preset", "tiny", "--max-steps", "1",
                 "--device", "cpu", "--out", str(out)]) == 0
    return root, out


def _register(session, root, out, path=None) -> str:
    ds = store.create_dataset(session, name="d", format="mimic3", path="mimic3-demo", stats={})
    return store.create_model(session, name="m", dataset_id=ds.id, checkpoint_path=path or str(out.relative_to(root)),
                              manifest_sha256=checkpoint.sha256_of(out / checkpoint.MANIFEST), config={}).id


def test_a_model_downloads_as_a_loadable_checkpoint(client_for, auth, session, trained, tmp_path):
    root, out = trained
    api = client_for(model_root=root)
    model_id = _register(session, root, out)
    r = api.get(f"/models/{model_id}/download", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert f"model-{model_id}.zip" in r.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = sorted(zf.namelist())
        zf.extractall(tmp_path / "got")
    assert names == sorted(p.name for p in out.iterdir())
    for name in names:
        assert (tmp_path / "got" / name).read_bytes() == (out / name).read_bytes()
    checkpoint.load_checkpoint(tmp_path / "got")  # verifies every file against the manifest
    assert api.get(f"/models/{model_id}/download", headers=auth).content == r.content  # same bytes again

    other = tenant_key(session, "someone-else")
    assert api.get(f"/models/{model_id}/download", headers=other).status_code == 404


def test_a_changed_or_escaped_checkpoint_is_not_sent(client_for, auth, session, trained, tmp_path):
    root, out = trained
    api = client_for(model_root=root)
    registered = _register(session, root, out)
    manifest = out / checkpoint.MANIFEST
    original = manifest.read_bytes()
    try:
        manifest.write_bytes(original.replace(b'"version"', b'"version" ', 1))  # edited after registration
        r = api.get(f"/models/{registered}/download", headers=auth)
        assert r.status_code == 409 and "not the one registered" in r.json()["detail"]
    finally:
        manifest.write_bytes(original)
    outside = _register(session, root, out, path=str(out.resolve()) + "/../../..")
    r = api.get(f"/models/{outside}/download", headers=auth)
    assert r.status_code == 409 and "outside the model root" in r.json()["detail"]
