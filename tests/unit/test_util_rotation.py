"""Finding a log file's rotated copies (harness.util.rotation), oldest first."""

from __future__ import annotations

from pathlib import Path

from harness.util.rotation import rotated_files, rotation_key


def touch(directory: Path, *names: str) -> None:
    for name in names:
        (directory / name).write_text(name)


def test_supervisord_numbers_higher_is_older(tmp_path: Path) -> None:
    touch(tmp_path, "x.log", "x.log.1", "x.log.10", "x.log.2", "x.log.3.gz", "xx.log.1", "x.logger")
    assert [p.name for p in rotated_files(tmp_path / "x.log")] == ["x.log.10", "x.log.2", "x.log.1"]
    assert [p.name for p in rotated_files(str(tmp_path / "x.log"), compressed=True)] == [
        "x.log.10", "x.log.2", "x.log.1", "x.log.3.gz"]


def test_runtime_timestamps_sort_as_text(tmp_path: Path) -> None:
    touch(tmp_path, "0.log", "0.log.20260102-000000.000001", "0.log.20260101-235959.999999",
          "0.log.20260101-000000.5.gz", "10.log.20250101-000000")
    assert [p.name for p in rotated_files(tmp_path / "0.log")] == [
        "0.log.20260101-235959.999999", "0.log.20260102-000000.000001"]
    assert rotated_files(tmp_path / "0.log", compressed=True)[0].name == "0.log.20260101-000000.5.gz"
    assert rotation_key("3") < rotation_key("1") < rotation_key("20260101-000000")


def test_no_directory_no_files(tmp_path: Path) -> None:
    assert rotated_files(tmp_path / "missing" / "x.log") == []
    assert rotated_files(tmp_path / "x.log") == []
