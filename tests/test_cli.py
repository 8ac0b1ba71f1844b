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
