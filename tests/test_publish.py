"""Publishing: to a local bare git repository (as GitHub Pages would get it) and to a folder."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from covergen.errors import CovergenError
from covergen.publish import (
    MARKER,
    PublishPlan,
    PublishTarget,
    parse_target,
    plan_publish,
    publish,
)

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


# --- targets ---------------------------------------------------------------------------------


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
        plan_publish(tmp_path / "cache", PublishTarget("dir", str(tmp_path / "out")))


def test_the_site_marker_is_not_published(site: Path, tmp_path: Path):
    (site / ".covergen-site").write_text("generated")
    plan = plan_publish(site, PublishTarget("dir", str(tmp_path / "out")))
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
    first = plan_publish(site, target)
    assert set(first.added) == {*SITE, ".nojekyll"}
    assert git("--git-dir", str(remote), "branch", "--list") == ""
    publish(site, target)
    before = git("--git-dir", str(remote), "rev-parse", "gh-pages").strip()
    (site / "index.html").write_text("changed")
    (site / "404.html").unlink()
    (site / "about.html").write_text("about")
    plan = plan_publish(site, target)
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
    for attempt in (plan_publish, publish):  # the dry run refuses too
        with pytest.raises(CovergenError, match="not published by covergen") as info:
            attempt(site, target)
        assert info.value.field == "publish"
        assert "--force" in info.value.hint and "--keep-history" in info.value.hint
    assert git("--git-dir", str(remote), "rev-parse", "main").strip() == head

    # On top of it is not a loss: allowed, and the old history stays.
    publish(site, parse_target(f"git:{remote}", branch="main", keep_history=True))
    assert commit_count(remote, "main") == 2
    # Our commit is now the tip, so a later replacing publish is ours to make.
    make_site(site, {"index.html": "<h1>v2</h1>"})
    publish(site, parse_target(f"git:{remote}", branch="main"))
    assert commit_count(remote, "main") == 1


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
        plan_publish(site, target)
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

    plan = plan_publish(site, target)
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


def test_dir_refuses_a_non_empty_folder_it_did_not_publish(site, tmp_path):
    out = make_site(tmp_path / "docs", {"thesis.tex": "years of work"})
    target = PublishTarget("dir", str(out))
    for attempt in (plan_publish, publish):
        with pytest.raises(CovergenError, match="not empty") as info:
            attempt(site, target)
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
