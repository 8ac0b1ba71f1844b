"""Checkpoints: exact round trip, metadata, tampering, and refusal of pickles and garbage."""

import json

import pytest
import torch

from vaeinv import Grid
from vaeinv.vae import init_vae, load_checkpoint, save_checkpoint

from vae_helpers import tiny_config


@pytest.fixture
def saved(tmp_path):
    vae = init_vae(tiny_config(latent="vector", latent_dim=5, ny=8, nx=12), seed=4)
    path = save_checkpoint(
        tmp_path / "ckpt.safetensors",
        vae,
        grid=Grid(nx=12, ny=8, lx=3.0, ly=2.0),
        generator_config={"kind": "gaussian", "length_scale": 0.2},
        train_config={"epochs": 1},
        losses={"total": 1.5},
    )
    return vae, path


def test_round_trip_decodes_bit_identically(saved, generator):
    vae, path = saved
    ckpt = load_checkpoint(path)
    z = torch.randn(4, 5, generator=generator)
    with torch.no_grad():
        assert torch.equal(vae.eval().decoder(z), ckpt.model.decoder(z))
    assert ckpt.model.config == vae.config
    assert ckpt.grid == Grid(nx=12, ny=8, lx=3.0, ly=2.0)
    assert not ckpt.model.training
    meta = ckpt.metadata
    assert meta["generator_config"]["kind"] == "gaussian"
    assert meta["losses"] == {"total": 1.5}
    assert {"vaeinv", "torch", "safetensors"} <= set(meta["versions"])
    assert meta["weights_sha256"] == ckpt.weights_sha256


def test_the_json_path_and_a_folder_also_load(saved, tmp_path):
    vae, path = saved
    assert load_checkpoint(path.with_suffix(".json")).weights_sha256
    save_checkpoint(tmp_path / "folder", vae)
    assert (tmp_path / "folder" / "model.json").is_file()
    assert load_checkpoint(tmp_path / "folder").grid == Grid(nx=12, ny=8)


def test_tampered_weights_are_detected(saved):
    _, path = saved
    expected = json.loads(path.with_suffix(".json").read_text())["weights_sha256"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        ValueError, match=f"sha256 mismatch .*expected {expected}.*got [0-9a-f]{{64}}"
    ):
        load_checkpoint(path)


def test_a_pickle_is_refused(saved, tmp_path):
    vae, path = saved
    torch.save(vae.state_dict(), path)  # a pickle under the safetensors name, metadata intact
    with pytest.raises(ValueError, match=r"not a safetensors file .*pickle.*never unpickles"):
        load_checkpoint(path)
    torch.save(vae.state_dict(), tmp_path / "model.pt")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_checkpoint(tmp_path / "model.pt")


def test_random_bytes_are_refused(tmp_path, generator):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(bytes(torch.randint(0, 256, (1000,), generator=generator, dtype=torch.uint8)))
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_checkpoint(path)


def test_bad_metadata(saved):
    _, path = saved
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "comment": "hi"}))
    with pytest.raises(ValueError, match=r"missing metadata keys \[\], unknown keys \['comment'\]"):
        load_checkpoint(path)
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "grid"}))
    with pytest.raises(ValueError, match=r"missing metadata keys \['grid'\]"):
        load_checkpoint(path)
    meta_path.write_text(json.dumps({**meta, "format": "other"}))
    with pytest.raises(ValueError, match="format 'other'"):
        load_checkpoint(path)
    meta_path.write_text(json.dumps({**meta, "model_config": {**meta["model_config"], "x": 1}}))
    with pytest.raises(ValueError, match=r"unknown VAEConfig keys \['x'\]"):
        load_checkpoint(path)
    meta_path.write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON checkpoint metadata"):
        load_checkpoint(path)
    meta_path.unlink()
    with pytest.raises(ValueError, match=r"metadata .*ckpt.json is missing"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_architecture(saved):
    _, path = saved
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["model_config"]["latent_dim"] = 6
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not fit its architecture"):
        load_checkpoint(path)


def test_missing_weights_and_grid_mismatch(tmp_path):
    with pytest.raises(ValueError, match=r"weights .*nothing.safetensors not found"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    with pytest.raises(ValueError, match=r"does not match the model's \(ny, nx\)=\(8, 8\)"):
        save_checkpoint(tmp_path / "x.safetensors", init_vae(tiny_config(), 0), grid=Grid(4, 4))
