"""The archive rules both sides of the sandbox boundary apply (`lllm.sandbox._tarsafe`): what packing refuses,
and what unpacking refuses, including links already waiting in the destination (the container's side, where
code of the sandbox can plant them) and names that climb out through PAX headers."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from lllm.sandbox._tarsafe import ArchiveError, TooLarge, extract, pack, scan


def _tar(*members: tuple[str, bytes | None], pax: dict[str, str] | None = None) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if pax:
                info.pax_headers = dict(pax)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_pack_and_extract_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f.bin").write_bytes(bytes(range(256)) * 50)
    (src / "run.sh").write_text("echo hi\n")
    os.chmod(src / "run.sh", 0o4755)
    entries, size = scan(str(src), limit=1 << 20)
    assert entries == [("a", "d"), ("run.sh", "f"), ("a/b", "d"), ("a/b/f.bin", "f")]
    buf = io.BytesIO()
    pack(str(src), entries, buf)
    assert size >= len(buf.getvalue()) - 10240  # the estimate covers the archive (less the record padding)
    buf.seek(0)
    written = extract(buf, str(tmp_path / "out"), fresh=True, max_bytes=1 << 20)
    assert sorted(written) == ["a/b/f.bin", "run.sh"]
    assert (tmp_path / "out" / "a" / "b" / "f.bin").read_bytes() == (src / "a" / "b" / "f.bin").read_bytes()
    assert os.stat(tmp_path / "out" / "run.sh").st_mode & 0o7777 == 0o755  # no setuid comes through


def test_scan_refuses_links_special_files_and_too_much(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    os.symlink("/etc", tmp_path / "d" / "etc")
    with pytest.raises(ArchiveError, match="'etc' is a symlink"):
        scan(str(tmp_path / "d"), limit=1 << 20)
    os.unlink(tmp_path / "d" / "etc")
    os.mkfifo(tmp_path / "d" / "p")
    with pytest.raises(ArchiveError, match="'p' is not a regular file"):
        scan(str(tmp_path / "d"), limit=1 << 20)
    os.unlink(tmp_path / "d" / "p")
    (tmp_path / "d" / "big").write_bytes(b"x" * 5000)
    with pytest.raises(TooLarge):
        scan(str(tmp_path / "d"), limit=4096)


@pytest.mark.parametrize("name", ["../up.txt", "a/../../up.txt", "./../up.txt", "/abs.txt", ""])
def test_names_that_leave_the_destination_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises((ArchiveError, ValueError)):
        extract(_tar((name, b"x")), str(tmp_path / "out"), fresh=True, max_bytes=1 << 20)
    assert not (tmp_path / "up.txt").exists()


def test_a_pax_path_header_cannot_smuggle_a_name_out(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="'..' leaves"):
        extract(_tar(("innocent.txt", b"x"), pax={"path": "../smuggled.txt"}), str(tmp_path / "out"), fresh=True,
                max_bytes=1 << 20)
    assert not (tmp_path / "smuggled.txt").exists()


def test_links_planted_in_the_destination_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "sub")  # a folder on the way is a link
    os.symlink(outside / "target.txt", dest / "file.txt")  # the file itself is a link
    with pytest.raises(ArchiveError, match="not a folder"):
        extract(_tar(("sub/evil.txt", b"x")), str(dest), fresh=False, max_bytes=1 << 20)
    with pytest.raises(ArchiveError, match="cannot write 'file.txt'"):
        extract(_tar(("file.txt", b"x")), str(dest), fresh=False, max_bytes=1 << 20)
    assert list(outside.iterdir()) == []


def test_budgets_duplicates_and_a_non_empty_fresh_destination(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="pass 10 bytes"):
        extract(_tar(("a", b"x" * 6), ("b", b"y" * 6)), str(tmp_path / "o1"), fresh=True, max_bytes=10)
    with pytest.raises(ArchiveError, match="more than 2 members"):
        extract(_tar(("a", b""), ("b", b""), ("c", b"")), str(tmp_path / "o2"), fresh=True, max_bytes=10,
                max_members=2)
    with pytest.raises(ArchiveError, match="comes twice"):
        extract(_tar(("a", b"1"), ("a", b"2")), str(tmp_path / "o3"), fresh=True, max_bytes=10)
    (tmp_path / "o4").mkdir()
    (tmp_path / "o4" / "there").write_text("x")
    with pytest.raises(ArchiveError, match="not empty"):
        extract(_tar(("a", b"1")), str(tmp_path / "o4"), fresh=True, max_bytes=10)
    with pytest.raises(ArchiveError, match="not a tar|malformed"):
        extract(io.BytesIO(b"\x01" * 2048), str(tmp_path / "o5"), fresh=True, max_bytes=10)
