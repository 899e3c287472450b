"""Publishing: to a local bare git repository (as GitHub Pages would get it) and to a folder."""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from covergen import locks
from covergen import publish as publishing
from covergen.errors import CovergenError
from covergen.locks import site_lock
from covergen.publish import (
    MARKER,
    PublishPlan,
    PublishTarget,
    parse_target,
    publish,
    site_files,
)
from covergen.site.staging import StagedSite

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture(autouse=True)
def _git_identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The user's ~/.gitconfig (signing, hooks, identity) must not change what tests see.
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for role in ("AUTHOR", "COMMITTER"):
        for key in ("NAME", "EMAIL"):
            monkeypatch.delenv(f"GIT_{role}_{key}", raising=False)


def make_site(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        path.write_bytes(data)
    return root


SITE = {
    "index.html": "<h1>gallery</h1>",
    "404.html": "not here",
    "pairs/joy-division/index.html": "<img src='a.webp'>",
    "pairs/joy-division/a.webp": b"RIFF\x00webp",
    "_assets/style.css": "body{}",
}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return make_site(tmp_path / "site", SITE)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "remote.git"
    git("init", "-q", "--bare", str(path))
    return path


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout


def branch_files(remote: Path, branch: str = "gh-pages") -> dict[str, str]:
    names = git("--git-dir", str(remote), "ls-tree", "-r", "--name-only", branch).split("\n")
    return {
        name: git("--git-dir", str(remote), "show", f"{branch}:{name}") for name in names if name
    }


def commit_count(remote: Path, branch: str = "gh-pages") -> int:
    return int(git("--git-dir", str(remote), "rev-list", "--count", branch))


def tip(remote: Path, branch: str = "gh-pages") -> str:
    return git("--git-dir", str(remote), "rev-parse", branch).strip()


def push_human_commit(
    work: Path, remote: Path, branch: str, message: str, files: dict[str, str | bytes]
) -> str:
    """A commit made by a person (git commit, the message as given) pushed to ``branch``."""
    if not work.exists():
        git("init", "-q", "-b", branch, str(work))
    make_site(work, files)
    git("add", "-A", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--cleanup=verbatim",
        "-m", message, cwd=work)  # fmt: skip
    git("push", "-q", str(remote), f"HEAD:refs/heads/{branch}", cwd=work)
    return git("rev-parse", "HEAD", cwd=work).strip()


def render(site: Path, files: dict[str, str]) -> None:
    """Swap a new version of the site in, as the build does (staged beside, under its lock)."""
    with site_lock(site), StagedSite(site) as staged:
        for rel, text in files.items():
            staged.write(rel, text.encode())
        staged.commit()


def leftovers(site: Path, tmpdir: Path | None = None) -> list[Path]:
    """Snapshots and temporary repositories a publish left behind."""
    found = list(site.parent.glob(f".{site.name}.publish-*"))
    if tmpdir is not None:
        found += list(tmpdir.glob("covergen-publish-*"))
    return found


# --- targets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "branch",
    ["HEAD", "@", "refs/heads/pages", "-pages", "", "pages/.hidden", "a.lock/b", "gh pages"],
)
def test_branch_names_git_refuses_or_reads_as_something_else_are_refused(branch):
    with pytest.raises(CovergenError, match="not a valid branch name") as info:
        parse_target("git:x.git", branch=branch)
    assert info.value.field == "publish_branch" and "gh-pages" in info.value.hint


def git_accepts_branch(name: str) -> bool:
    done = subprocess.run(
        ["git", "check-ref-format", "--branch", name], capture_output=True, check=False
    )
    return done.returncode == 0


def accepts_branch(name: str) -> bool:
    try:
        parse_target("git:x.git", branch=name)
    except CovergenError:
        return False
    return True


BRANCH_PIECES = st.lists(
    st.sampled_from([*"ab/.@{}-~^:*[\\\x7f\t é", "..", "lock", ".lock", "HEAD", "refs/"]),
    max_size=8,
).map("".join)


@needs_git
@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=12), BRANCH_PIECES))
def test_every_branch_name_accepted_is_one_git_accepts(name: str):
    if accepts_branch(name):
        assert git_accepts_branch(name)


@needs_git
@settings(max_examples=200, deadline=None)
@given(BRANCH_PIECES)
def test_every_branch_name_git_accepts_is_accepted_but_those_git_reads_otherwise(name: str):
    # @{…} is expanded by git against the repository it runs in: no branch name either way.
    special = name in ("HEAD", "@") or name.startswith("refs/") or "@{" in name
    if git_accepts_branch(name) and not special:
        assert accepts_branch(name)


@pytest.mark.parametrize(
    ("text", "kind", "location"),
    [
        ("git:git@github.com:me/gallery.git", "git", "git@github.com:me/gallery.git"),
        ("git@github.com:me/gallery.git", "git", "git@github.com:me/gallery.git"),
        ("https://github.com/me/gallery", "git", "https://github.com/me/gallery"),
        ("git://example.org/gallery", "git", "git://example.org/gallery"),
        ("../pages.git", "git", "../pages.git"),
        ("git:/srv/pages", "git", "/srv/pages"),
        ("dir:/var/www/gallery", "dir", "/var/www/gallery"),
        ("/var/www/gallery", "dir", "/var/www/gallery"),
        ("public", "dir", "public"),
    ],
)
def test_parse_target_reads_prefixes_urls_and_paths(text, kind, location):
    target = parse_target(text)
    assert (target.kind, target.location) == (kind, location)


def test_parse_target_takes_options_and_rejects_bad_ones():
    target = parse_target("git:x.git", branch="pages", cname="gallery.example.org")
    assert (target.branch, target.cname, target.keep_history) == (
        "pages",
        "gallery.example.org",
        False,
    )
    with pytest.raises(CovergenError, match="not a host name") as info:
        parse_target("git:x.git", cname="https://gallery.example.org/")
    assert info.value.field == "cname"
    with pytest.raises(CovergenError, match="not a valid branch"):
        parse_target("git:x.git", branch="gh pages")
    with pytest.raises(CovergenError, match="looks like an option"):
        parse_target("--upload-pack=touch x")
    with pytest.raises(CovergenError, match="no target"):
        parse_target("dir:")


def test_plan_lines_and_summary():
    plan = PublishPlan(("a",), ("b",), ("c",), 4)
    assert list(plan.lines()) == ["+ a", "~ b", "- c"]
    assert plan.summary() == "1 added, 1 changed, 1 removed, 4 unchanged"
    assert not PublishPlan(unchanged=3).has_changes


def test_a_folder_without_index_html_is_not_published(tmp_path: Path):
    make_site(tmp_path / "cache", {"x.png": b"x"})
    with pytest.raises(CovergenError, match=r"no index\.html"):
        publish(tmp_path / "cache", PublishTarget("dir", str(tmp_path / "out")), dry_run=True)


def test_the_site_marker_is_not_published(site: Path, tmp_path: Path):
    (site / ".covergen-site").write_text("generated")
    plan = publish(site, PublishTarget("dir", str(tmp_path / "out")), dry_run=True)
    assert ".covergen-site" not in plan.added


# --- git target ------------------------------------------------------------------------------


@needs_git
def test_git_publish_puts_the_site_on_the_branch_with_nojekyll_and_cname(site, remote):
    target = PublishTarget("git", str(remote), cname="gallery.example.org")
    result = publish(site, target)
    files = branch_files(remote)
    assert set(files) == {*SITE, ".nojekyll", "CNAME"}
    assert files["index.html"] == SITE["index.html"]
    assert files[".nojekyll"] == ""
    assert files["CNAME"] == "gallery.example.org\n"
    assert result.commit == git("--git-dir", str(remote), "rev-parse", "gh-pages").strip()
    assert set(result.added) == set(files) and not result.changed and not result.removed
    message = git("--git-dir", str(remote), "log", "-1", "--format=%s", "gh-pages")
    assert message.startswith(f"covergen: publish {len(files)} files, site ")
    author = git("--git-dir", str(remote), "log", "-1", "--format=%an <%ae>", "gh-pages")
    assert author.strip() == "covergen <covergen@localhost>"  # no identity configured


@needs_git
def test_git_republish_replaces_content_and_keeps_one_commit(site, remote, tmp_path):
    target = PublishTarget("git", str(remote))
    publish(site, target)
    (site / "index.html").write_text("<h1>gallery, again</h1>")
    (site / "_assets/style.css").unlink()
    result = publish(site, target)
    files = branch_files(remote)
    assert files["index.html"] == "<h1>gallery, again</h1>"
    assert "_assets/style.css" not in files
    assert result.changed == ("index.html",)
    assert result.removed == ("_assets/style.css",)
    assert result.added == ()
    assert commit_count(remote) == 1


@needs_git
def test_git_keep_history_adds_a_commit_on_top(site, remote):
    publish(site, PublishTarget("git", str(remote)))
    first = git("--git-dir", str(remote), "rev-parse", "gh-pages").strip()
    (site / "new.html").write_text("new")
    result = publish(site, PublishTarget("git", str(remote), keep_history=True, message="two"))
    assert commit_count(remote) == 2
    assert git("--git-dir", str(remote), "rev-parse", "gh-pages^").strip() == first
    assert git("--git-dir", str(remote), "log", "-1", "--format=%s", "gh-pages").strip() == "two"
    assert result.added == ("new.html",)


@needs_git
def test_git_unchanged_republish_makes_no_commit(site, remote):
    target = PublishTarget("git", str(remote), keep_history=True)
    publish(site, target)
    before = git("--git-dir", str(remote), "rev-parse", "gh-pages").strip()
    result = publish(site, target)
    assert not result.has_changes and result.commit == ""
    assert result.unchanged == len(SITE) + 1  # .nojekyll
    assert git("--git-dir", str(remote), "rev-parse", "gh-pages").strip() == before


@needs_git
def test_git_dry_run_lists_changes_and_pushes_nothing(site, remote):
    target = PublishTarget("git", str(remote))
    first = publish(site, target, dry_run=True)
    assert set(first.added) == {*SITE, ".nojekyll"}
    assert git("--git-dir", str(remote), "branch", "--list") == ""
    publish(site, target)
    before = git("--git-dir", str(remote), "rev-parse", "gh-pages").strip()
    (site / "index.html").write_text("changed")
    (site / "404.html").unlink()
    (site / "about.html").write_text("about")
    plan = publish(site, target, dry_run=True)
    assert (plan.added, plan.changed, plan.removed) == (
        ("about.html",),
        ("index.html",),
        ("404.html",),
    )
    assert plan.unchanged == len(SITE) - 2 + 1
    assert git("--git-dir", str(remote), "rev-parse", "gh-pages").strip() == before


@needs_git
def test_git_publish_to_another_branch_leaves_main_alone(site, remote, tmp_path):
    work = tmp_path / "work"
    git("init", "-q", "-b", "main", str(work))
    (work / "README").write_text("source")
    git("add", "README", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "src", cwd=work)
    git("push", "-q", str(remote), "main", cwd=work)
    publish(site, parse_target(f"git:{remote}", branch="pages"))
    assert set(branch_files(remote, "pages")) == {*SITE, ".nojekyll"}
    assert set(branch_files(remote, "main")) == {"README"}


@needs_git
def test_git_never_replaces_a_branch_covergen_did_not_make(site, remote, tmp_path):
    work = tmp_path / "work"
    git("init", "-q", "-b", "main", str(work))
    (work / "README").write_text("source")
    git("add", "README", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "src", cwd=work)
    git("push", "-q", str(remote), "main", cwd=work)
    head = git("--git-dir", str(remote), "rev-parse", "main").strip()
    target = parse_target(f"git:{remote}", branch="main")
    for dry_run in (True, False):  # the dry run refuses too
        with pytest.raises(CovergenError, match="not published by covergen") as info:
            publish(site, target, dry_run=dry_run)
        assert info.value.field == "publish"
        assert "--force" in info.value.hint and "--keep-history" in info.value.hint
    assert git("--git-dir", str(remote), "rev-parse", "main").strip() == head

    # On top of it is not a loss: allowed, and the old history stays.
    publish(site, parse_target(f"git:{remote}", branch="main", keep_history=True))
    assert commit_count(remote, "main") == 2


@needs_git
def test_git_force_replaces_a_foreign_branch(site, remote, tmp_path):
    work = tmp_path / "work"
    git("init", "-q", "-b", "main", str(work))
    (work / "README").write_text("source")
    git("add", "README", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "src", cwd=work)
    git("push", "-q", str(remote), "main", cwd=work)
    publish(site, parse_target(f"git:{remote}", branch="main"), force=True)
    assert set(branch_files(remote, "main")) == {*SITE, ".nojekyll"}
    message = git("--git-dir", str(remote), "log", "-1", "--format=%B", "main")
    assert "Published-by: covergen" in message


@needs_git
def test_git_a_commit_is_covergens_only_when_its_trailer_names_its_own_tree(site, remote, tmp_path):
    target = parse_target(f"git:{remote}", branch="main")
    # A person's commit whose subject reads like ours (what earlier releases relied on).
    lookalike = "covergen: publish 3 files, site 3f9c2a81b7de"
    head = push_human_commit(tmp_path / "work", remote, "main", lookalike, {"README": "source"})
    with pytest.raises(CovergenError, match="not published by covergen") as info:
        publish(site, target)
    assert "older covergen needs --force once" in info.value.hint
    assert tip(remote, "main") == head

    # A real covergen message, trailers and all, copied onto a commit of another tree.
    publish(site, PublishTarget("git", str(remote), branch="pages"))
    copied = git("--git-dir", str(remote), "log", "-1", "--format=%B", "pages")
    assert "Published-by: covergen" in copied and "Covergen-Tree: " in copied
    head = push_human_commit(tmp_path / "work", remote, "main", copied, {"README": "changed"})
    for dry_run in (True, False):
        with pytest.raises(CovergenError, match="not published by covergen"):
            publish(site, target, dry_run=dry_run)
    assert tip(remote, "main") == head


@needs_git
def test_git_a_replacing_publish_never_drops_older_commits_covergen_did_not_make(
    site, remote, tmp_path
):
    human = push_human_commit(tmp_path / "work", remote, "main", "src", {"README": "source"})
    publish(site, parse_target(f"git:{remote}", branch="main", keep_history=True))
    assert commit_count(remote, "main") == 2  # our commit is the tip, the person's below it
    make_site(site, {"index.html": "<h1>v2</h1>"})
    ours = tip(remote, "main")
    target = parse_target(f"git:{remote}", branch="main")
    for dry_run in (True, False):
        with pytest.raises(CovergenError, match="1 commit covergen did not make") as info:
            publish(site, target, dry_run=dry_run)
        assert info.value.field == "publish"
        assert "--keep-history" in info.value.hint and "publish_keep_history" in info.value.hint
        assert "--force" in info.value.hint
    assert tip(remote, "main") == ours
    git("--git-dir", str(remote), "merge-base", "--is-ancestor", human, "main")

    publish(site, parse_target(f"git:{remote}", branch="main", keep_history=True))
    assert commit_count(remote, "main") == 3  # on top is still fine
    make_site(site, {"index.html": "<h1>v3</h1>"})
    publish(site, target, force=True)
    assert commit_count(remote, "main") == 1


@needs_git
def test_git_replaces_a_branch_whose_every_commit_covergen_made(site, remote):
    publish(site, PublishTarget("git", str(remote)))
    for version in range(3):
        make_site(site, {"index.html": f"<h1>v{version}</h1>"})
        publish(site, PublishTarget("git", str(remote), keep_history=True, message=f"v{version}"))
    assert commit_count(remote) == 4
    make_site(site, {"index.html": "<h1>last</h1>"})
    result = publish(site, PublishTarget("git", str(remote)))
    assert commit_count(remote) == 1 and result.changed == ("index.html",)
    assert branch_files(remote)["index.html"] == "<h1>last</h1>"


@needs_git
def test_git_errors_name_the_remote_problem(site, tmp_path):
    with pytest.raises(CovergenError, match="cannot read the remote") as info:
        publish(site, PublishTarget("git", str(tmp_path / "missing.git")))
    assert info.value.field == "publish"
    assert "git ls-remote" in info.value.hint


@needs_git
def test_git_relative_remote_path_is_taken_from_the_working_directory(site, remote, monkeypatch):
    monkeypatch.chdir(site)
    publish(site, parse_target("../remote.git"))
    assert "index.html" in branch_files(remote)


@needs_git
def test_git_remote_name_of_the_current_repository(site, remote, tmp_path, monkeypatch):
    work = tmp_path / "work"
    git("init", "-q", str(work))
    git("remote", "add", "origin", str(remote), cwd=work)
    monkeypatch.chdir(work)
    publish(site, parse_target("git:origin"))
    assert "index.html" in branch_files(remote)


@needs_git
def test_git_error_messages_hide_passwords_in_urls(site):
    target = PublishTarget("git", "https://me:s3cret@127.0.0.1:9/gallery.git")
    with pytest.raises(CovergenError) as info:
        publish(site, target, dry_run=True)
    assert "s3cret" not in info.value.describe()
    assert "s3cret" not in target.describe()
    assert "ghp_x" not in PublishTarget("git", "https://ghp_x@github.com/me/g.git").describe()


# --- directory target ------------------------------------------------------------------------


def test_dir_publish_mirrors_the_site(site, tmp_path):
    out = tmp_path / "www"
    result = publish(site, PublishTarget("dir", str(out)))
    assert set(result.added) == set(SITE)
    for rel, content in SITE.items():
        data = content.encode() if isinstance(content, str) else content
        assert (out / rel).read_bytes() == data
    assert (out / MARKER).is_file()
    assert not list(out.rglob("*.tmp"))


def test_dir_republish_copies_changes_removes_stale_and_leaves_the_rest(site, tmp_path):
    out = tmp_path / "www"
    target = PublishTarget("dir", str(out))
    publish(site, target)
    past = 1_000_000_000
    for path in out.rglob("*"):
        os.utime(path, (past, past))
    (site / "index.html").write_text("changed")
    shutil.rmtree(site / "pairs")
    (site / "about.html").write_text("about")

    plan = publish(site, target, dry_run=True)
    assert (plan.added, plan.changed) == (("about.html",), ("index.html",))
    assert set(plan.removed) == {"pairs/joy-division/index.html", "pairs/joy-division/a.webp"}
    assert (out / "pairs/joy-division/a.webp").exists()  # the dry run changed nothing

    assert publish(site, target) == plan
    assert (out / "index.html").read_text() == "changed"
    assert (out / "about.html").read_text() == "about"
    assert not (out / "pairs").exists()  # emptied folders go too
    assert (out / "404.html").stat().st_mtime == past  # unchanged: not touched
    assert (out / "_assets/style.css").stat().st_mtime == past


def test_dir_publish_replaces_a_file_by_a_folder_and_back(site, tmp_path):
    out = tmp_path / "www"
    target = PublishTarget("dir", str(out))
    publish(site, target)
    shutil.rmtree(site / "pairs")
    (site / "pairs").write_text("now a file")
    publish(site, target)
    assert (out / "pairs").read_text() == "now a file"
    (site / "pairs").unlink()
    make_site(site, {"pairs/x.html": "x"})
    publish(site, target)
    assert (out / "pairs/x.html").read_text() == "x"


def test_dir_publish_keeps_a_git_checkout_in_the_target(site, tmp_path):
    out = make_site(tmp_path / "www", {".git/HEAD": "ref", MARKER: ""})
    publish(site, PublishTarget("dir", str(out)))
    assert (out / ".git/HEAD").read_text() == "ref"


def test_dir_publish_never_publishes_replaces_nor_removes_a_git_entry(site, tmp_path):
    # The site is a worktree (a .git file) holding a submodule.
    make_site(site, {".git": "gitdir: /srv/site.git/worktrees/site", "pairs/.git": "gitdir: x"})
    assert not [rel for rel in site_files(site) if ".git" in rel.split("/")]
    out = make_site(tmp_path / "www", {
        MARKER: "",
        ".git": "gitdir: /srv/www.git/worktrees/www",  # a worktree
        "old/.git": "gitdir: ../.git/modules/old",  # a submodule the site no longer has
        "old/page.html": "stale",
        "vendor/.git/HEAD": "ref: refs/heads/main",  # a nested checkout
    })  # fmt: skip
    (out / "vendor/.git/refs/tags").mkdir(parents=True)  # empty, and the repository's
    target = PublishTarget("dir", str(out))

    plan = publish(site, target, dry_run=True)
    assert plan.removed == ("old/page.html",)
    assert not [rel for rel in plan.added if ".git" in rel.split("/")]
    publish(site, target)
    assert (out / ".git").read_text() == "gitdir: /srv/www.git/worktrees/www"
    assert (out / "old/.git").read_text() == "gitdir: ../.git/modules/old"
    assert not (out / "old/page.html").exists()
    assert (out / "vendor/.git/HEAD").is_file() and (out / "vendor/.git/refs/tags").is_dir()


def test_dir_refuses_to_replace_a_folder_holding_a_git_entry_by_a_file(site, tmp_path):
    out = make_site(tmp_path / "www", {MARKER: "", "pairs/.git": "gitdir: x", "pairs/a": "a"})
    shutil.rmtree(site / "pairs")
    (site / "pairs").write_text("now a file")
    for dry_run in (True, False):
        with pytest.raises(CovergenError, match=r"holding a \.git entry") as info:
            publish(site, PublishTarget("dir", str(out)), dry_run=dry_run)
        assert info.value.field == "publish" and info.value.hint
    assert (out / "pairs/.git").read_text() == "gitdir: x"
    assert not (out / "index.html").exists()  # refused before anything was written


def test_dir_publishes_into_a_folder_holding_only_a_git_entry(site, tmp_path):
    out = make_site(tmp_path / "clone", {".git": "gitdir: /srv/pages.git"})
    publish(site, PublishTarget("dir", str(out)))
    assert (out / "index.html").is_file() and (out / ".git").is_file()


def test_dir_refuses_a_non_empty_folder_it_did_not_publish(site, tmp_path):
    out = make_site(tmp_path / "docs", {"thesis.tex": "years of work"})
    target = PublishTarget("dir", str(out))
    for dry_run in (True, False):
        with pytest.raises(CovergenError, match="not empty") as info:
            publish(site, target, dry_run=dry_run)
        assert "--force" in info.value.hint
    assert (out / "thesis.tex").exists()
    publish(site, target, force=True)
    assert not (out / "thesis.tex").exists()
    assert (out / "index.html").exists()


def test_dir_refusal_suggests_git_for_a_bare_repository(site, remote):
    with pytest.raises(CovergenError) as info:
        publish(site, PublishTarget("dir", str(remote)))
    assert f"git:{remote}" in info.value.hint


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("root", "refusing to publish into /"),
        ("home", "holds the home directory"),
        ("above-home", "holds the home directory"),
        ("site", "the site itself"),
        ("parent", "contains the site"),
        ("inside", "inside the site"),
        ("file", "is a file"),
    ],
)
def test_dir_refuses_dangerous_targets(
    site, tmp_path, tmp_path_factory, monkeypatch, where, message
):
    home = tmp_path_factory.mktemp("above") / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "a-file").write_text("x")
    location = {
        "root": "/",
        "home": "~",
        "above-home": str(home.parent),
        "site": str(site),
        "parent": str(tmp_path),
        "inside": str(site / "copy"),
        "file": str(tmp_path / "a-file"),
    }[where]
    with pytest.raises(CovergenError, match=message) as info:
        publish(site, PublishTarget("dir", location), force=True)
    assert info.value.field == "publish" and info.value.hint


# --- one version of the site -----------------------------------------------------------------

V1 = {"index.html": "<h1>one</h1>", "a.html": "a one", "b.html": "b one"}
V2 = {"index.html": "<h1>two</h1>", "a.html": "a two", "b.html": "b two"}


def test_publish_sends_one_version_while_a_build_swaps_in_another(tmp_path, monkeypatch):
    site = tmp_path / "site"
    render(site, V1)
    writes: list[Path] = []
    real_writer = publishing.atomic_writer

    @contextlib.contextmanager
    def writer(path: Path, **options):
        if path.name != MARKER:
            writes.append(path)
            if len(writes) == 2:  # one file of the site is copied: a build swaps in v2 now
                render(site, V2)
        with real_writer(path, **options) as handle:
            yield handle

    monkeypatch.setattr(publishing, "atomic_writer", writer)
    out = tmp_path / "www"
    publish(site, PublishTarget("dir", str(out)))
    assert len(writes) == len(V1)
    assert {rel: (out / rel).read_text() for rel in V1} == V1
    assert {rel: (site / rel).read_text() for rel in V2} == V2  # the build did swap
    assert not leftovers(site)


def test_publish_waits_while_a_build_holds_the_site_lock(tmp_path, monkeypatch):
    site = tmp_path / "site"
    render(site, V1)
    waiting, finished, either = threading.Event(), threading.Event(), threading.Event()

    class PollingClock:  # the lock's clock: tells the test the publish is waiting for it
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def sleep(seconds: float) -> None:
            waiting.set()
            either.set()
            time.sleep(seconds)

    monkeypatch.setattr(locks, "time", PollingClock)
    out = tmp_path / "www"
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["plan"] = publish(site, PublishTarget("dir", str(out)))
        except BaseException as error:  # reported by the assertions below
            outcome["error"] = error
        finally:
            finished.set()
            either.set()

    thread = threading.Thread(target=run)
    with site_lock(site):
        thread.start()
        assert either.wait(60)
        assert waiting.is_set() and not finished.is_set(), outcome
        assert not out.exists()
    thread.join(60)
    assert "plan" in outcome, outcome
    assert {rel: (out / rel).read_text() for rel in V1} == V1


def test_a_snapshot_left_by_a_killed_publish_is_removed_by_the_next(tmp_path):
    site = tmp_path / "site"
    render(site, V1)
    dead = make_site(tmp_path / ".site.publish-dead", {"index.html": "old"})
    running = make_site(tmp_path / ".site.publish-running", {"index.html": "in use"})
    with publishing._snapshot_lock(running):
        publish(site, PublishTarget("dir", str(tmp_path / "www")))
        assert not dead.exists()
        assert (running / "index.html").read_text() == "in use"


# --- interrupted -----------------------------------------------------------------------------

# Runs the command with the directory writer held half-way through index.html: it tells the
# test through one FIFO, then waits on another for a signal to arrive.
HELD_WRITER = """
import contextlib, sys
import covergen.publish as publishing
from covergen.cli import main

ready, block = sys.argv[1], sys.argv[2]
real_writer = publishing.atomic_writer

@contextlib.contextmanager
def held(path, **options):
    with real_writer(path, **options) as handle:
        if path.name == "index.html":
            handle.write(b"<h1>half")
            handle.flush()
            with open(ready, "w") as out:
                out.write("writing")
            with open(block) as wait:
                wait.read()
        yield handle

publishing.atomic_writer = held
sys.exit(main(sys.argv[3:]))
"""


def terminated(command: list[str], env: dict[str, str], ready: Path, block: Path):
    """Run ``command``, send it SIGTERM once it writes to the FIFO ``ready`` (it then waits
    on the FIFO ``block``); its (status, stdout, stderr)."""
    child = subprocess.Popen(
        command, env=env, cwd=ready.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        fd = os.open(ready, os.O_RDONLY | os.O_NONBLOCK)
        try:
            # A bound, not a synchronisation: the FIFO says when the child is there.
            readable, _, _ = select.select([fd], [], [], 120)
        finally:
            os.close(fd)
        assert readable, f"the publish never got there: {child.stderr.read1().decode()}"
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        with contextlib.suppress(OSError):  # let a reader still blocked on it (if any) go
            os.close(os.open(block, os.O_WRONLY | os.O_NONBLOCK))
    return child.returncode, out.decode(), err.decode()


@pytest.fixture
def fifos(tmp_path: Path) -> tuple[Path, Path]:
    ready, block = tmp_path / "ready", tmp_path / "block"
    os.mkfifo(ready)
    os.mkfifo(block)
    return ready, block


@needs_git
def test_sigterm_during_a_git_publish_exits_130_and_leaves_no_temporary_files(
    site, remote, tmp_path, fifos
):
    ready, block = fifos
    # git, but a push says it has started, then hangs as a slow network would.
    fake = tmp_path / "bin/git"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = push ]; then\n'
        f"  echo pushing > {shlex.quote(str(ready))}\n"
        f"  exec cat {shlex.quote(str(block))}\n"
        "fi\n"
        f'exec {shlex.quote(shutil.which("git") or "git")} "$@"\n'
    )
    fake.chmod(0o755)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    path = f"{fake.parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "TMPDIR": str(tmpdir), "PATH": path}
    command = [sys.executable, "-m", "covergen", "publish", f"git:{remote}",
               "--site-dir", str(site)]  # fmt: skip
    code, out, err = terminated(command, env, ready, block)
    assert code == 130 and "interrupted" in err and "Traceback" not in err, (code, out, err)
    assert not leftovers(site, tmpdir)
    assert git("--git-dir", str(remote), "branch", "--list") == ""  # nothing was published


def test_sigterm_during_a_dir_publish_exits_130_and_leaves_no_partial_file(site, tmp_path, fifos):
    ready, block = fifos
    out_dir = tmp_path / "www"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    command = [sys.executable, "-c", HELD_WRITER, str(ready), str(block),
               "publish", f"dir:{out_dir}", "--site-dir", str(site)]  # fmt: skip
    code, out, err = terminated(command, {**os.environ, "TMPDIR": str(tmpdir)}, ready, block)
    assert code == 130 and "interrupted" in err and "Traceback" not in err, (code, out, err)
    assert not [p for p in out_dir.rglob("*") if p.name.endswith(".tmp")]
    assert not (out_dir / "index.html").exists()  # never half a file
    assert not leftovers(site, tmpdir)


def test_dir_publish_never_mirrors_over_the_catalog_its_cache_or_images(project, capsys):
    from covergen import cli

    site = project.parent / f"{project.name}-site"  # built elsewhere (--site-dir)
    site.mkdir()
    (site / "index.html").write_text("<p>site</p>")
    (project / "cache").mkdir()
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    for force in ([], ["--force"]):
        code = cli.main(["publish", f"dir:{project}", "--catalog", str(project / "catalog.yaml"),
                         "--site-dir", str(site), *force])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and "would delete it" in err, err
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before
