import errno

import pytest
import torch

from rundir.atomic import replaced
from tests.exits import small_disk


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "record.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="mid-write"), replaced(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("mid-write")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]
    with replaced(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and oct(path.stat().st_mode & 0o777) != "0o600"


def test_a_folder_replaces_the_one_in_its_place(tmp_path):
    folder = tmp_path / "step8"
    (folder / "stale").mkdir(parents=True)
    with replaced(folder, folder=True) as tmp:
        (tmp / "weights").write_text("w")
    assert sorted(p.name for p in folder.iterdir()) == ["weights"] and [p.name for p in tmp_path.iterdir()] == ["step8"]


def test_a_full_disk_is_named_whatever_the_writer_says(tmp_path):
    """torch.save reports a full disk as a RuntimeError about zip positions; it comes out as ENOSPC
    naming the file, with nothing left behind."""
    with small_disk(tmp_path / "disk", kib=16) as disk:
        path = disk.path / "state.pt"
        with pytest.raises(OSError) as raised, replaced(path) as tmp:
            torch.save(torch.zeros(64 * 1024), tmp)
        assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
        assert list(disk.path.iterdir()) == []
