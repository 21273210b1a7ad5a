"""Source preparation and config checks on small fake trees, with the real patch/rsync/git."""
import json
import os
import subprocess
import textwrap
import time

import pytest

from harness import cache
from harness.errors import ConfigError, SourceError
from harness.kernel import config, source

pytestmark = pytest.mark.unit

MIGRATE_C = "int migrate_pages(void)\n{\n\treturn 0;\n}\n"
MARKER_PATCH = textwrap.dedent("""\
    --- a/mm/migrate.c
    +++ b/mm/migrate.c
    @@ -1,4 +1,5 @@
     int migrate_pages(void)
     {
    +\tpr_info("marker");
     \treturn 0;
     }
    """)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.setenv("MIGRATE_HARNESS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "linux"
    (root / "mm").mkdir(parents=True)
    (root / "arch/x86").mkdir(parents=True)
    (root / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 99\nEXTRAVERSION = -rc1\n")
    (root / "mm/migrate.c").write_text(MIGRATE_C)
    (root / "mm/Kconfig").write_text("config MIGRATION\n\tbool \"Page migration\"\n")
    return root


def test_builds_use_one_private_tree_whatever_the_series(tree, tmp_path):
    src = source.prepare(str(tree), None, ())
    assert src.tree != tree and src.version == "6.1.99-rc1" and src.commit is None
    assert (src.tree / "mm/migrate.c").read_text() == MIGRATE_C
    patch = tmp_path / "marker.patch"
    patch.write_text(MARKER_PATCH)
    assert source.prepare(str(tree), None, (patch,)).tree == src.tree


def test_patches_go_to_a_private_copy(tree, tmp_path):
    patch = tmp_path / "marker.patch"
    patch.write_text(MARKER_PATCH)
    src = source.prepare(str(tree), None, (patch,))
    assert src.tree != tree
    assert "marker" in (src.tree / "mm/migrate.c").read_text()
    assert (tree / "mm/migrate.c").read_text() == MIGRATE_C  # the user's tree is untouched
    mtime = (src.tree / "mm/migrate.c").stat().st_mtime_ns
    again = source.prepare(str(tree), None, (patch,))  # same series: nothing re-applied or re-stamped
    assert (again.tree / "mm/migrate.c").stat().st_mtime_ns == mtime
    plain = source.prepare(str(tree), None, ())
    assert "marker" not in (plain.tree / "mm/migrate.c").read_text()


def test_changed_series_restores_and_restamps_files(tree, tmp_path):
    patch = tmp_path / "marker.patch"
    patch.write_text(MARKER_PATCH)
    src = source.prepare(str(tree), None, (patch,))
    first = (src.tree / "mm/migrate.c").stat().st_mtime_ns
    other = tmp_path / "other.patch"
    other.write_text("--- a/Makefile\n+++ b/Makefile\n@@ -4 +4 @@\n-EXTRAVERSION = -rc1\n+EXTRAVERSION = -rc2\n")
    src = source.prepare(str(tree), None, (other,))
    restored = src.tree / "mm/migrate.c"
    assert restored.read_text() == MIGRATE_C and restored.stat().st_mtime_ns > first
    assert src.version == "6.1.99-rc2"


def test_a_file_restored_after_other_series_is_newer_than_any_build_of_the_patched_one(tree, tmp_path):
    """Build directories (one per config) share the private tree: one that last
    compiled the marker version must see migrate.c change when it comes back,
    whatever series other build directories used in between."""
    patch = tmp_path / "marker.patch"
    patch.write_text(MARKER_PATCH)
    src = source.prepare(str(tree), None, (patch,))
    built_marker = (src.tree / "mm/migrate.c").stat().st_mtime_ns  # a build dir compiles it now
    other = tmp_path / "other.patch"
    other.write_text("--- a/Makefile\n+++ b/Makefile\n@@ -4 +4 @@\n-EXTRAVERSION = -rc1\n+EXTRAVERSION = -rc2\n")
    source.prepare(str(tree), None, (other,))  # another config's run
    plain = source.prepare(str(tree), None, ())
    assert (plain.tree / "mm/migrate.c").read_text() == MIGRATE_C
    assert (plain.tree / "mm/migrate.c").stat().st_mtime_ns > built_marker


def test_patch_that_does_not_apply_names_file_and_hunk(tree, tmp_path):
    bad = tmp_path / "bad.patch"
    bad.write_text(MARKER_PATCH.replace("return 0;", "return 1;"))
    with pytest.raises(SourceError, match=r"bad.patch does not apply: mm/migrate.c: hunk #1 failed"):
        source.prepare(str(tree), None, (bad,))


def test_patch_for_a_missing_file(tree, tmp_path):
    bad = tmp_path / "missing.patch"
    bad.write_text(MARKER_PATCH.replace("mm/migrate.c", "mm/nothere.c"))
    with pytest.raises(SourceError, match="missing.patch does not apply: mm/nothere.c: the file does not exist"):
        source.prepare(str(tree), None, (bad,))


def test_an_empty_patch_is_refused(tree, tmp_path):
    empty = tmp_path / "empty.patch"
    empty.write_text("")
    with pytest.raises(SourceError, match="empty.patch changes no file: it is empty or holds no diff"):
        source.prepare(str(tree), None, (empty,))


@pytest.mark.parametrize("path, message", [("/does/not/exist", "does not exist"), ("/tmp", "not a Linux kernel tree")])
def test_bad_source_paths(path, message):
    with pytest.raises(SourceError, match=message):
        source.prepare(path, None, ())


def test_git_revision_in_a_private_worktree(tree, tmp_path):
    git = ["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "one"], check=True)
    first = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (tree / "mm/migrate.c").write_text("changed\n")
    subprocess.run(git + ["commit", "-qam", "two"], check=True)
    src = source.prepare(str(tree), first, ())
    assert src.commit == first and (src.tree / "mm/migrate.c").read_text() == MIGRATE_C
    assert subprocess.run(git + ["rev-parse", "--abbrev-ref", "HEAD"], capture_output=True,
                          text=True).stdout.strip() in ("main", "master")  # the user's branch stays
    with pytest.raises(SourceError, match="revision 'nope' does not exist"):
        source.prepare(str(tree), "nope", ())


def test_fragment_lines_and_errors(tmp_path):
    frag = tmp_path / "x.config"
    frag.write_text("# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"s\"\n")
    assert [(r.symbol, r.value, r.line) for r in config.read_fragment(frag)] == [
        ("CONFIG_A", "y", 2), ("CONFIG_B", "n", 3), ("CONFIG_C", '"s"', 4)]
    frag.write_text("CONFIG_A=y\nA=y\n")
    with pytest.raises(ConfigError, match=r"x.config, line 2: not a config line"):
        config.read_fragment(frag)


def test_check_names_dropped_and_unsatisfied_symbols(tree, tmp_path):
    frag = tmp_path / "user.config"
    frag.write_text("CONFIG_MIGRATION=y\nCONFIG_DOES_NOT_EXIST=y\n# CONFIG_GONE is not set\n")
    final = tmp_path / ".config"
    final.write_text("# CONFIG_MIGRATION is not set\n")
    with pytest.raises(ConfigError) as err:
        config.check(final, config.read_fragment(frag), tree)
    text = str(err.value)
    assert "CONFIG_DOES_NOT_EXIST=y (user.config, line 2): this kernel has no such option" in text
    assert "CONFIG_MIGRATION=y (user.config, line 1): the final .config has CONFIG_MIGRATION=n" in text
    assert "GONE" not in text  # asked off, is off
    final.write_text("CONFIG_MIGRATION=y\nCONFIG_DOES_NOT_EXIST=y\n")
    config.check(final, config.read_fragment(frag), tree)


def test_an_optional_option_a_kernel_lacks_is_no_error(tree, tmp_path):
    """`# harness: optional` (with comments between) covers the next option only: a kernel
    that has no such option is fine; one that has it must set it."""
    frag = tmp_path / "opt.config"
    frag.write_text("# harness: optional\n# why\nCONFIG_DOES_NOT_EXIST=y\nCONFIG_ALSO_MISSING=y\n"
                    "# harness: optional\nCONFIG_MIGRATION=y\n")
    requests = config.read_fragment(frag)
    assert [(r.symbol, r.optional) for r in requests] == [
        ("CONFIG_DOES_NOT_EXIST", True), ("CONFIG_ALSO_MISSING", False), ("CONFIG_MIGRATION", True)]
    final = tmp_path / ".config"
    final.write_text("# CONFIG_MIGRATION is not set\n")
    with pytest.raises(ConfigError) as err:
        config.check(final, requests, tree)
    text = str(err.value)
    assert "CONFIG_ALSO_MISSING=y (opt.config, line 4): this kernel has no such option" in text
    assert "CONFIG_MIGRATION=y (opt.config, line 6): the final .config has CONFIG_MIGRATION=n" in text
    assert "DOES_NOT_EXIST" not in text


def test_a_users_fragment_that_undoes_a_needed_option_is_named(tree, tmp_path):
    ours, user = tmp_path / "numa.config", tmp_path / "mine.config"
    ours.write_text("CONFIG_MIGRATION=y\n")
    user.write_text("CONFIG_A=y\n# CONFIG_MIGRATION is not set\n")
    final = tmp_path / ".config"
    final.write_text("CONFIG_A=y\n# CONFIG_MIGRATION is not set\n")  # merge_config.sh: the last fragment wins
    with pytest.raises(ConfigError) as err:
        config.check(final, config.read_fragment(ours) + config.read_fragment(user), tree)
    assert f"{user}, line 2: CONFIG_MIGRATION=n undoes CONFIG_MIGRATION=y (numa.config, line 1)" in str(err.value)


def test_a_failed_series_still_restamps_what_the_last_one_touched(tree, tmp_path):
    good, bad = tmp_path / "good.patch", tmp_path / "bad.patch"
    good.write_text(MARKER_PATCH)
    bad.write_text(MARKER_PATCH.replace("return 0;", "return 1;"))
    patched = source.prepare(str(tree), None, (good,)).tree / "mm/migrate.c"
    built_at = patched.stat().st_mtime_ns  # as if make had compiled it now
    with pytest.raises(SourceError):
        source.prepare(str(tree), None, (bad,))
    plain = source.prepare(str(tree), None, ()).tree / "mm/migrate.c"
    assert plain.read_text() == MIGRATE_C
    assert plain.stat().st_mtime_ns > built_at  # newer than any object built from the patched file


def test_a_source_edit_undone_with_its_old_mtime_is_rebuilt(tree):
    """Someone edits the source (a mutant, say), a build compiles the edit, and the
    edit is undone with the file's old mtime (cp -p, tar): the private copy must
    come back newer than the object built from the edit, or make keeps it."""
    original = tree / "mm/migrate.c"
    old_times = (original.stat().st_atime_ns, original.stat().st_mtime_ns)
    source.prepare(str(tree), None, ())
    original.write_text(MIGRATE_C.replace("return 0;", "return -1;"))
    edited = source.prepare(str(tree), None, ()).tree / "mm/migrate.c"
    assert "return -1;" in edited.read_text()
    built_at = edited.stat().st_mtime_ns + 1  # an object compiled from the edit, just after
    original.write_text(MIGRATE_C)
    os.utime(original, ns=old_times)
    again = source.prepare(str(tree), None, ())
    restored = again.tree / "mm/migrate.c"
    assert restored.read_text() == MIGRATE_C
    assert restored.stat().st_mtime_ns > built_at
    # and later runs leave it alone: nothing to rebuild
    fresh = restored.stat().st_mtime_ns
    assert source.prepare(str(tree), None, ()).generation == again.generation
    assert restored.stat().st_mtime_ns == fresh


def test_generation_moves_only_when_a_file_changed(tree):
    first = source.prepare(str(tree), None, ()).generation
    assert source.prepare(str(tree), None, ()).generation == first
    (tree / "mm/migrate.c").write_text(MIGRATE_C + "/* edited */\n")
    assert source.prepare(str(tree), None, ()).generation == first + 1


def test_a_restored_file_stays_newer_than_objects_built_from_the_patch(tree, tmp_path):
    """Two build directories share the tree: one built the patched file, the other
    rebuilt the restored one. The next runs must not set the file's time back to
    the source's, or make keeps the first directory's object of the patched file."""
    os.utime(tree / "mm/migrate.c", (1e9, 1e9))  # a source file unpacked long ago
    patch = tmp_path / "marker.patch"
    patch.write_text(MARKER_PATCH)
    patched = source.prepare(str(tree), None, (patch,)).tree / "mm/migrate.c"
    built_at = patched.stat().st_mtime_ns  # build dir 1 compiles the patched file
    source.prepare(str(tree), None, ())  # restored and restamped; build dir 2 compiles it
    again = source.prepare(str(tree), None, ()).tree / "mm/migrate.c"  # then build dir 1 builds
    assert again.read_text() == MIGRATE_C
    assert again.stat().st_mtime_ns > built_at, "the restored file went back to the source's time"
    assert source.prepare(str(tree), None, ()).generation == source.prepare(str(tree), None, ()).generation


def test_extracting_a_tarball_logs_its_progress(tmp_path, caplog):
    """Real tar and xz: progress in MiB of the size xz's index gives."""
    data = tmp_path / "pkg"
    data.mkdir()
    (data / "blob").write_bytes(bytes(range(256)) * (25 << 12))
    tarball = tmp_path / "pkg.tar.xz"
    subprocess.run(["tar", "-cJf", str(tarball), "-C", str(tmp_path), "pkg"], check=True,
                   env={**os.environ, "XZ_OPT": "-0"})
    into = tmp_path / "into"
    into.mkdir()
    with caplog.at_level("INFO", logger="harness"):
        source._extract(tarball, into)
    assert (into / "pkg" / "blob").read_bytes() == (data / "blob").read_bytes()
    lines = [r.getMessage() for r in caplog.records]
    assert lines and all(line.startswith("extracting pkg.tar.xz: ") for line in lines)
    assert "/25 MiB (" in lines[0]


def test_an_edit_of_a_once_patched_file_restamps_only_that_file(tree, tmp_path):
    """After a patched run, editing one source file the series had touched syncs that
    file alone: the others keep their mtimes (no rebuild of every file ever patched)."""
    (tree / "mm/compaction.c").write_text("int compact(void);\n")
    patch = tmp_path / "two.patch"
    patch.write_text(MARKER_PATCH + textwrap.dedent("""\
        --- a/mm/compaction.c
        +++ b/mm/compaction.c
        @@ -1 +1,2 @@
         int compact(void);
        +int more(void);
        """))
    source.prepare(str(tree), None, (patch,))
    private = source.prepare(str(tree), None, ()).tree
    before = {f: (private / f).stat().st_mtime_ns for f in ("mm/migrate.c", "mm/compaction.c")}
    (tree / "mm/migrate.c").write_text(MIGRATE_C.replace("return 0;", "return 22;"))
    again = source.prepare(str(tree), None, ())
    assert "return 22;" in (again.tree / "mm/migrate.c").read_text()
    assert (again.tree / "mm/migrate.c").stat().st_mtime_ns > before["mm/migrate.c"]
    assert (again.tree / "mm/compaction.c").stat().st_mtime_ns == before["mm/compaction.c"]
    assert (again.tree / "mm/compaction.c").read_text() == "int compact(void);\n"



def test_a_tree_of_many_files_syncs_again_after_an_edit(tree):
    """A new tree keeps the source's mtimes, so a later sync keeps no file out but the
    ones it restamps: before, every file of a first copy was restamped and kept out
    (a bisect's second step failed with "Argument list too long"; through a file,
    rsync took ~50 s to match 78,580 of them)."""
    many = tree / "many"
    many.mkdir()
    for i in range(20000):  # 20,000 arguments of 160 bytes: past the kernel's 2 MiB
        (many / f"{i:05}-{'x' * 140}.c").write_text("")
    stale = cache.subdir("build") / f"{tree.name}-{cache.digest(str(tree))}-0123456789ab"
    stale.mkdir(parents=True)  # a build of an earlier tree of that name
    first = source.prepare(str(tree), None, ()).tree
    assert not stale.exists()
    (tree / "mm/migrate.c").write_text(MIGRATE_C.replace("return 0;", "return 33;"))  # within the second: size
    again = source.prepare(str(tree), None, ())
    assert again.tree == first
    assert "return 33;" in (again.tree / "mm/migrate.c").read_text()
    assert len(list((again.tree / "many").iterdir())) == 20000
    state = json.loads((first.parent / f"{first.name}.patched.json").read_text())
    assert state["touched"] == ["mm/migrate.c"]


def test_a_sync_keeps_out_a_list_longer_than_a_command_line(tree, tmp_path):
    """Files kept out of a sync (restamped ones) may be many: the list goes to rsync on stdin."""
    copy = tmp_path / "copy"
    keep_out = [f"mm/{i:05}-{'x' * 140}.c" for i in range(20000)] + ["mm/migrate.c"]
    written, changed = source._sync(tree, copy, exclude=keep_out)
    assert changed and "Makefile" in written and not (copy / "mm/migrate.c").exists()


def test_an_unchanged_source_is_not_synced_again(tree):
    """Nothing changed in the source since the last sync: no rsync (seen by a change made
    to the private copy alone, which a sync would undo), and nothing to rebuild."""
    source.prepare(str(tree), None, ())  # a new tree: a copy; the next prepare syncs and notes the newest change
    time.sleep(2 * source.TICK_S)  # a change within a clock tick of the look is synced again (see _settled)
    first = source.prepare(str(tree), None, ())
    (first.tree / "Makefile").write_text("changed in the copy only\n")
    again = source.prepare(str(tree), None, ())
    assert (again.tree / "Makefile").read_text() == "changed in the copy only\n"
    assert again.generation == first.generation


@pytest.mark.parametrize("change", ["write with an old mtime", "delete", "create", "rename"])
def test_any_change_of_the_source_is_synced(tree, change):
    """Whatever changed in the source (even with its mtime set back, as `cp -p` or
    `touch -d` do) shows in its ctime: the sync runs and the copy follows."""
    first = source.prepare(str(tree), None, ())
    migrate_c = tree / "mm/migrate.c"
    if change == "write with an old mtime":
        old = migrate_c.stat().st_mtime_ns
        migrate_c.write_text(MIGRATE_C.replace("return 0;", "return 44;"))
        os.utime(migrate_c, ns=(old, old))
    elif change == "delete":
        (tree / "mm/Kconfig").unlink()
    elif change == "create":
        (tree / "mm/new.c").write_text("int new;\n")
    else:
        (tree / "mm/Kconfig").rename(tree / "mm/Kconfig.old")
    again = source.prepare(str(tree), None, ())
    assert again.generation == first.generation + 1
    result = subprocess.run(["diff", "-r", str(tree), str(again.tree)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _settled_copy(tree, patches=()):
    """A private copy whose last sync saw the source settled: the next prepare syncs
    only what changed after it. A file only the copy has, in a directory no change
    below touches, shows whether a sync walked all of it (it would be deleted)."""
    (tree / "mm/sub").mkdir()
    (tree / "mm/sub/s.c").write_text("int s;\n")
    source.prepare(str(tree), None, patches)  # a new tree: a copy
    time.sleep(2 * source.TICK_S)
    copy = source.prepare(str(tree), None, patches)  # a sync that notes the newest change
    (copy.tree / "arch/x86/only-in-the-copy").write_text("")
    return copy


def _rename_a_directory_with_a_subtree(tree):
    (tree / "drivers/foo/sub").mkdir(parents=True)
    (tree / "drivers/foo/sub/x.c").write_text("int x;\n")
    first = source.prepare(str(tree), None, ())  # the subtree is in the copy, unchanged since
    time.sleep(2 * source.TICK_S)
    source.prepare(str(tree), None, ())
    (tree / "drivers/foo").rename(tree / "drivers/bar")  # the files below keep their ctimes
    return first


EDITS = {
    "write with an old mtime": lambda t: (t / "mm/migrate.c").write_text(MIGRATE_C.replace("0;", "44;")) or os.utime(
        t / "mm/migrate.c", ns=(0, 0)),
    "delete": lambda t: (t / "mm/Kconfig").unlink(),
    "create in a new directory": lambda t: (t / "mm/new/deeper").mkdir(parents=True) or (
        t / "mm/new/deeper/n.c").write_text("int n;\n"),
    "rename": lambda t: (t / "mm/Kconfig").rename(t / "mm/Kconfig.old"),
    "delete a directory": lambda t: subprocess.run(["rm", "-r", str(t / "mm/sub")], check=True),
    "chmod": lambda t: (t / "mm/migrate.c").chmod(0o600),
}


@pytest.mark.parametrize("edit", EDITS)
def test_after_a_settled_sync_only_the_changes_are_synced(tree, edit):
    """Each change after the last sync is synced, and only it: the rest of the copy is
    not walked (~0.05 s for an edit of the 6.1 tree, against ~1.1 s for rsync's walk)."""
    copy = _settled_copy(tree)
    EDITS[edit](tree)
    again = source.prepare(str(tree), None, ())
    assert again.generation == copy.generation + 1
    result = subprocess.run(["diff", "-r", "--no-dereference", str(tree), str(again.tree)], capture_output=True,
                            text=True)
    assert result.stdout == f"Only in {again.tree}/arch/x86: only-in-the-copy\n"
    assert _modes(again.tree) == _modes(tree) | {"arch/x86/only-in-the-copy": 0o100644}


def _modes(root):
    return {str(p.relative_to(root)): p.lstat().st_mode for p in root.rglob("*")}


def test_a_directory_renamed_with_its_subtree_is_synced_whole(tree):
    """Files below a renamed directory keep their ctimes: the directory it moved in is
    synced whole, not only what changed in it."""
    _rename_a_directory_with_a_subtree(tree)
    again = source.prepare(str(tree), None, ())
    assert (again.tree / "drivers/bar/sub/x.c").read_text() == "int x;\n"
    assert not (again.tree / "drivers/foo").exists()


def test_a_sync_of_a_changed_directory_keeps_the_patched_files(tree, tmp_path):
    """A directory synced whole keeps out the files a series patched (the source's are older)."""
    patch = tmp_path / "marker.patch"
    patch.write_text(MARKER_PATCH)
    copy = _settled_copy(tree, (patch,))
    (tree / "mm/new.c").write_text("int new;\n")  # mm's ctime moves: mm is synced whole
    again = source.prepare(str(tree), None, (patch,))
    assert (again.tree / "mm/new.c").read_text() == "int new;\n"
    assert "marker" in (again.tree / "mm/migrate.c").read_text()
    assert (again.tree / "arch/x86/only-in-the-copy").exists()
    assert again.generation == copy.generation + 1


def test_a_sync_cut_short_runs_again(tree, monkeypatch):
    """The mark of a sync is kept only when the sync ended well."""
    first = source.prepare(str(tree), None, ())
    (tree / "mm/migrate.c").write_text(MIGRATE_C.replace("return 0;", "return 55;"))
    real_run = source.run

    def rsync_fails(argv, **kwargs):
        if argv[0] == "rsync":
            raise SourceError("rsync: interrupted")
        return real_run(argv, **kwargs)

    monkeypatch.setattr(source, "run", rsync_fails)
    with pytest.raises(SourceError):
        source.prepare(str(tree), None, ())
    monkeypatch.setattr(source, "run", real_run)
    again = source.prepare(str(tree), None, ())
    assert "return 55;" in (again.tree / "mm/migrate.c").read_text()
    assert again.generation > first.generation


def test_a_comment_edited_in_a_fragment_is_no_new_build(tree, tmp_path):
    from harness.kernel import build
    src = source.prepare(str(tree), None, ())
    frag = tmp_path / "f.config"
    frag.write_text("# why\nCONFIG_A=y\n")
    first = build.build_dir_for(src, [frag])
    frag.write_text("# why, said better\n# harness: optional\nCONFIG_A=y\n")
    assert build.build_dir_for(src, [frag]) == first
    frag.write_text("CONFIG_A=m\n")
    assert build.build_dir_for(src, [frag]) != first
