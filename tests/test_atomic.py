"""edlm.atomic: the one atomic writer behind weights, configs, checkpoints, samples and results."""

import os

import pytest

from edlm.atomic import atomic_write, atomic_write_text


def test_writes_whole_readable_files_and_creates_the_folder(tmp_path):
    path = atomic_write_text(tmp_path / "new" / "a.txt", "first\n")
    assert path.read_text() == "first\n" and oct(path.stat().st_mode & 0o777) == oct(0o644)
    atomic_write_text(path, "second\n")
    assert path.read_text() == "second\n" and os.listdir(path.parent) == ["a.txt"]


def test_a_failing_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = atomic_write_text(tmp_path / "a.txt", "old")

    def dies(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]
