import json
import subprocess
import sys
from pathlib import Path

import pytest

from bonsai.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bonsai.cli", *args], capture_output=True, text=True
    )


def test_search_writes_all_files(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli(
        "search", "--preset", "tiny", "--device", "cpu", "--epochs", "3", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    for name in ("genotype.json", "checkpoint.pt", "state.pt", "events.jsonl"):
        assert (out / name).is_file()
    lines = result.stdout.splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 3
    assert all("deadheaded" in line for line in epoch_lines)
    assert lines[-1].startswith("done: test accuracy")


def test_show_train_and_evaluate(
    tiny_search, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    genotype = tiny_search.workdir / "genotype.json"
    assert main(["show", str(genotype)]) == 0
    shown = capsys.readouterr().out
    assert "cell 0 (normal" in shown
    assert "parameters" in shown
    assert "compression" in shown
    out = tmp_path / "retrained"
    assert (
        main(
            [
                "train-genotype",
                str(genotype),
                "--dataset",
                "digits",
                "--epochs",
                "1",
                "--out",
                str(out),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    assert (out / "checkpoint.pt").is_file()
    capsys.readouterr()
    assert (
        main(["evaluate", str(out / "checkpoint.pt"), "--dataset", "digits", "--device", "cpu"])
        == 0
    )
    line = capsys.readouterr().out.strip()
    assert line.startswith("test accuracy: ")
    assert line.endswith("%")


def test_show_into_closed_pipe(tiny_search) -> None:
    genotype = tiny_search.workdir / "genotype.json"
    show = subprocess.Popen(
        [sys.executable, "-m", "bonsai.cli", "show", str(genotype)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    assert show.stdout is not None and show.stderr is not None
    # Closed before the command prints anything (it imports torch first), as `| head`
    # closes it after its first lines.
    show.stdout.close()
    error = show.stderr.read().decode()
    assert show.wait(timeout=60) in (0, 141)
    assert "Traceback" not in error


def test_invalid_option_names_it(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["search", "--preset", "tiny", "--epochs", "zero", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "invalid --epochs" in error


def test_budget_too_small_rejected_before_training(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    assert (
        main(
            [
                "search",
                "--preset",
                "tiny",
                "--device",
                "cpu",
                "--budget",
                "64KiB",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "does not fit" in capsys.readouterr().err
    assert not (tmp_path / "events.jsonl").exists()


def test_missing_dataset_says_where(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code = main(
        [
            "search",
            "--dataset",
            "cifar10",
            "--data-dir",
            str(tmp_path / "none"),
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert str(tmp_path / "none") in error


def test_estimate_json(capsys: pytest.CaptureFixture) -> None:
    assert main(["estimate", "--preset", "tiny", "--device", "cpu", "--json"]) == 0
    estimate = json.loads(capsys.readouterr().out)
    assert [s["section"] for s in estimate["sections"]] == [0, 1, 2]
    assert estimate["fits"] is True


def test_help_gives_units() -> None:
    result = run_cli("search", "--help")
    assert result.returncode == 0
    assert "[bytes]" in result.stdout
    assert "[images]" in result.stdout
    assert "--batch-size" in result.stdout
