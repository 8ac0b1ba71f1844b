import pytest

from vaeinv.cli import main


def test_forward_writes_a_figure(tmp_path, capsys):
    out = tmp_path / "sub" / "forward.png"
    assert main(["forward", "--nx", "12", "--ny", "10", "--seed", "3", "--out", str(out)]) == 0
    assert out.exists() and out.stat().st_size > 1000
    assert "solved 10 x 12" in capsys.readouterr().out


def test_bad_size_is_a_clear_error(tmp_path, capsys):
    assert main(["forward", "--nx", "-2", "--out", str(tmp_path / "x.png")]) == 2
    assert "nx must be a positive integer, got -2" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert "vaeinv" in capsys.readouterr().out


GENERATOR_TOML = """
kind = "gaussian"
grid = { nx = 12, ny = 10 }
mean = 1.0
std = 0.75
length_scale = [0.1, 0.3]
"""


def test_generate_is_reproducible(tmp_path):
    from vaeinv.fields import load_dataset

    config = tmp_path / "gen.toml"
    config.write_text(GENERATOR_TOML)
    paths = [tmp_path / f"d{i}.safetensors" for i in range(3)]
    for path, seed in zip(paths, (5, 5, 6), strict=True):
        assert (
            main(["generate", str(config), "--num", "4", "--seed", str(seed), "--out", str(path)])
            == 0
        )
    a, b, c = (load_dataset(p) for p in paths)
    assert a.fields.shape == (4, 10, 12)
    assert a.metadata["seed"] == 5 and a.metadata["config"]["kind"] == "gaussian"
    assert bool((a.fields == b.fields).all()) and not bool((a.fields == c.fields).all())


def test_generate_rejects_unknown_keys_and_missing_files(tmp_path, capsys):
    config = tmp_path / "gen.toml"
    config.write_text(GENERATOR_TOML + "colour = 3\n")
    out = str(tmp_path / "d.safetensors")
    assert main(["generate", str(config), "--num", "2", "--seed", "0", "--out", out]) == 2
    assert "unknown GaussianRandomField config key 'colour'" in capsys.readouterr().err
    assert (
        main(["generate", str(tmp_path / "nope.toml"), "--num", "2", "--seed", "0", "--out", out])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
