"""Download, checksum and unpacking rules, with local files served through file:// addresses."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import warnings
import zipfile

import pytest

from gksparse.data import DataError, DataWarning
from gksparse.data.download import Checksum, check_local, fetch, safe_extract

HINT = "put x.bin in /somewhere"


def md5(data: bytes) -> Checksum:
    return Checksum("md5", hashlib.md5(data).hexdigest())


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_tar(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            add_file(tar, name, data)


def test_fetch_verifies_and_renames(tmp_path):
    source = tmp_path / "served.bin"
    source.write_bytes(b"official bytes")
    dest = tmp_path / "root" / "x.bin"
    got = fetch([source.as_uri()], dest, md5(b"official bytes"), hint=HINT, progress=False)
    assert got == dest and dest.read_bytes() == b"official bytes"
    assert [p.name for p in dest.parent.iterdir()] == ["x.bin"]  # no .part left


def test_a_download_that_does_not_match_is_deleted_and_rejected(tmp_path):
    source = tmp_path / "served.bin"
    source.write_bytes(b"tampered bytes")
    dest = tmp_path / "root" / "x.bin"
    with pytest.raises(DataError, match=r"does not match: md5 .* so it was deleted.*put x\.bin"):
        fetch([source.as_uri()], dest, md5(b"official bytes"), hint=HINT, progress=False)
    assert list(dest.parent.iterdir()) == []


def test_the_next_mirror_is_tried(tmp_path):
    good = tmp_path / "good.bin"
    good.write_bytes(b"official bytes")
    missing = (tmp_path / "nowhere.bin").as_uri()
    dest = tmp_path / "root" / "x.bin"
    fetch([missing, good.as_uri()], dest, md5(b"official bytes"), hint=HINT, progress=False)
    assert dest.read_bytes() == b"official bytes"


def test_decompressed_content_and_size_checks(tmp_path):
    source = tmp_path / "served.gz"
    source.write_bytes(gzip.compress(b"content", mtime=0))
    fetch(
        [source.as_uri()],
        tmp_path / "a.gz",
        md5(b"content"),
        hint=HINT,
        gunzip=True,
        progress=False,
    )
    with pytest.raises(DataError, match="7 bytes instead of 8"):
        source.write_bytes(b"content")
        fetch([source.as_uri()], tmp_path / "b.bin", None, hint=HINT, size=8, progress=False)
    assert not (tmp_path / "b.bin").exists()


def test_offline_is_one_sentence_saying_what_to_put_where(tmp_path):
    with pytest.raises(DataError) as info:
        fetch(
            [(tmp_path / "offline").as_uri()], tmp_path / "x.bin", None, hint=HINT, progress=False
        )
    message = str(info.value)
    assert message.startswith("could not download x.bin (") and message.endswith(HINT)
    assert "\n" not in message


def test_a_local_copy_that_differs_is_used_with_one_warning(tmp_path):
    (tmp_path / "a").write_bytes(b"re-encoded")
    (tmp_path / "b").write_bytes(b"official")
    files = [(tmp_path / "a", md5(b"official")), (tmp_path / "b", md5(b"official"))]
    with pytest.warns(DataWarning, match=r"Thing files in .* differ .*\(a\); using them") as got:
        assert check_local(files, "Thing") == ["a"]
        assert check_local(files, "Thing") == ["a"]
    assert len([w for w in got if issubclass(w.category, DataWarning)]) == 1


def test_safe_extract_unpacks_tar_and_zip(tmp_path):
    write_tar(tmp_path / "a.tar.gz", {"top/one.txt": b"1", "top/sub/two.txt": b"2"})
    safe_extract(tmp_path / "a.tar.gz", tmp_path / "out", progress=False)
    assert (tmp_path / "out/top/sub/two.txt").read_bytes() == b"2"
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as zf:
        zf.writestr("pics/", b"")
        zf.writestr("pics/p.png", b"png")
    safe_extract(tmp_path / "b.zip", tmp_path / "out", progress=False)
    assert (tmp_path / "out/pics/p.png").read_bytes() == b"png"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pics", "top"]  # no staging


@pytest.mark.parametrize("name", ["../evil.txt", "top/../../evil.txt", "/tmp/gksparse-evil.txt"])
def test_a_path_escaping_tar_member_is_rejected(tmp_path, name):
    write_tar(tmp_path / "bad.tar.gz", {"top/fine.txt": b"ok", name: b"evil"})
    target = tmp_path / "out"
    with pytest.raises(DataError, match="would be written outside .* not unpacked"):
        safe_extract(tmp_path / "bad.tar.gz", target, progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert list(target.iterdir()) == []  # nothing unpacked, not even the harmless member


def test_a_path_escaping_zip_member_is_rejected(tmp_path):
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zf:
        zf.writestr("coil-100/obj1__0.png", b"fine")
        zf.writestr("../evil.png", b"evil")
    with pytest.raises(DataError, match="'../evil.png' that would be written outside"):
        safe_extract(tmp_path / "bad.zip", tmp_path / "out", progress=False)
    assert not (tmp_path / "evil.png").exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_links_in_archives_are_rejected(tmp_path):
    with tarfile.open(tmp_path / "link.tar", "w") as tar:
        link = tarfile.TarInfo("top/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(DataError, match="link or special member 'top/link'"):
        safe_extract(tmp_path / "link.tar", tmp_path / "out", progress=False)


def test_a_corrupt_archive_is_reported(tmp_path):
    write_tar(tmp_path / "a.tar.gz", {"top/one.txt": b"1" * 10000})
    data = (tmp_path / "a.tar.gz").read_bytes()
    (tmp_path / "a.tar.gz").write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="a.tar.gz is corrupt or truncated"):
            safe_extract(tmp_path / "a.tar.gz", tmp_path / "out", progress=False)


def test_nothing_is_written_into_a_read_only_folder(tmp_path):
    source = tmp_path / "served.bin"
    source.write_bytes(b"official bytes")
    shared = tmp_path / "shared"
    shared.mkdir()
    write_tar(tmp_path / "a.tar.gz", {"top/one.txt": b"1"})
    shared.chmod(0o555)  # no write bits: read-only even for root
    try:
        with pytest.raises(DataError, match="shared is read-only, so x.bin cannot be downloaded"):
            fetch([source.as_uri()], shared / "x.bin", None, hint=HINT, progress=False)
        with pytest.raises(
            DataError, match="shared is read-only, so .*a.tar.gz cannot be unpacked"
        ):
            safe_extract(tmp_path / "a.tar.gz", shared, progress=False)
        assert list(shared.iterdir()) == []
    finally:
        shared.chmod(0o755)
