"""Publishing: send the built site to a git branch (GitHub Pages and the like) or a directory.

Two kinds of target, one plan:

- ``git``: the branch's content is replaced by the site's files plus ``.nojekyll`` (and
  ``CNAME`` when set). The tree is built with git's plumbing in a throw-away bare repository
  (no checkout, no copies), so identical content gives the identical tree hash and an
  unchanged site makes no commit. By default each publish is a parentless commit pushed
  with a lease, so the branch holds one commit however often it is published; with
  ``keep_history`` the commit goes on top of the branch instead. Every covergen commit
  carries trailers naming covergen and the commit's own tree; a branch is replaced only when
  every commit on it carries them (a person does not write a tree id by accident, and a
  copied message names another tree), so no one's history is ever dropped.
- ``dir``: the directory becomes a mirror of the site. Only new and changed files are
  written (each atomically), stale ones are removed, unchanged files are not touched. A
  marker file says the directory is ours, so a non-empty stranger is never wiped. A ``.git``
  entry (folder, file or link, at any depth) is never published, replaced nor removed.

Both publish one version of the site: its files are hard-linked (copied across file systems)
into a private snapshot under the site's lock, which the build holds while it swaps a new
version in, and the lock is released before the (possibly long, networked) publish.
``publish(..., dry_run=True)`` answers "what would change" (``--dry-run``) without changing
anything: a git target is fetched into a temporary repository to compare trees, nothing is
pushed, and the same refusals apply, so a dry run also checks the target is usable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import filecmp
import glob
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .atomic import atomic_writer
from .catalog import DEFAULT_BRANCH, SiteSettings
from .errors import CovergenError
from .locks import Lock, site_lock
from .safetext import counted, redact
from .site.staging import MARKER as SITE_MARKER
from .site.staging import REPLACED_MARKER, STAGING_MARKER, link_or_copy

MARKER = ".covergen-publish"
MARKER_TEXT = (
    "This directory is a covergen publish target: `covergen publish` makes it a mirror of\n"
    "the built site, removing files the site no longer has. Delete this file to stop that.\n"
)
GIT_FILE_MODE = "100644"  # web content: never executable, never a link
# Every commit covergen makes ends with these two trailers, the second naming the commit's
# own tree (see _Commit.ours); a branch holding any other commit is never replaced without --force.
TRAILER = "Published-by: covergen"
TREE_TRAILER = "Covergen-Tree"
KINDS = ("git", "dir")
# A checkout's own entry (a folder, or a file pointing at a separate git dir: a worktree, a
# submodule): never published, never replaced, never removed, at any depth.
GIT_ENTRY = ".git"
# Variables that would point our git commands at some other repository (set inside hooks).
_GIT_REPO_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_COMMON_DIR",
    "GIT_PREFIX",
)
# What a site folder holds that is not the site: covergen's markers, a checkout's .git file.
_NOT_PUBLISHED = (MARKER, SITE_MARKER, STAGING_MARKER, REPLACED_MARKER, GIT_ENTRY)
_DEFAULT_IDENT = {"name": "covergen", "email": "covergen@localhost"}
_BAD_BRANCH = re.compile(r"(^[-/.])|(\.\.)|(@\{)|([\s~^:?*\[\\\x00-\x1f\x7f])|([/.]$)|(\.lock$)|//")
# Refused on top of git's rules: a component starting with "." or ending in ".lock", and
# names git reads as something else (HEAD, @ for HEAD, a full ref name).
_BAD_BRANCH_PARTS = re.compile(r"(/\.)|(\.lock/)")
_SPECIAL_BRANCHES = ("HEAD", "@")
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*$")


@dataclass(frozen=True)
class PublishTarget:
    """Where the site goes, and how.

    ``branch``, ``cname``, ``keep_history`` and ``message`` apply to git targets only.
    """

    kind: str  # "git" or "dir"
    location: str  # a git remote (URL, scp-like address or path) or a directory path
    branch: str = DEFAULT_BRANCH
    cname: str = ""  # custom domain written to CNAME, e.g. gallery.example.org
    keep_history: bool = False
    message: str = ""  # commit message; empty: one naming the build

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CovergenError(
                f"unknown target kind {self.kind!r}",
                field="publish",
                hint="write git:REMOTE or dir:PATH",
            )
        if not self.location.strip():
            raise CovergenError(
                "no target given", field="publish", hint="e.g. git:git@github.com:me/gallery.git"
            )
        if self.location.startswith("-"):
            # git would read it as an option (--upload-pack=… runs a program).
            raise CovergenError(
                f"{self.location!r} looks like an option, not a target",
                field="publish",
                hint="write a relative path as ./NAME",
            )
        if self.kind == "git" and not _is_branch_name(self.branch):
            raise CovergenError(
                f"{self.branch!r} is not a valid branch name",
                field="publish_branch",
                hint=f"give the branch's short name, e.g. {DEFAULT_BRANCH} (not HEAD, @ nor "
                "refs/heads/…)",
            )
        if self.cname and not _HOST.match(self.cname):
            raise CovergenError(
                f"{self.cname!r} is not a host name",
                field="cname",
                hint="give only the domain, e.g. gallery.example.org (no https://, no path)",
            )

    def describe(self) -> str:
        if self.kind == "dir":
            return f"directory {self.location}"
        return f"branch {self.branch} of {redact(self.location)}"


@dataclass(frozen=True)
class PublishPlan:
    """What a publish changes (or changed) at the target, as paths relative to the site.

    ``commit`` is the commit pushed by a git publish; empty for a dry run, a directory
    target, or when nothing changed.
    """

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: int = 0
    commit: str = ""

    @property
    def has_changes(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def lines(self) -> Iterator[str]:
        """One line per changed path, marked + (added), ~ (changed) or - (removed)."""
        for mark, paths in (("+", self.added), ("~", self.changed), ("-", self.removed)):
            for path in paths:
                yield f"{mark} {path}"

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.changed)} changed, "
            f"{len(self.removed)} removed, {self.unchanged} unchanged"
        )


def _is_branch_name(name: str) -> bool:
    """A name ``git check-ref-format --branch`` accepts and that means a branch to git (not
    HEAD, @ nor a full ref name); it is pushed as ``refs/heads/NAME``."""
    return bool(
        name
        and name not in _SPECIAL_BRANCHES
        and not name.startswith("refs/")
        and not _BAD_BRANCH.search(name)
        and not _BAD_BRANCH_PARTS.search(name)
    )


def parse_target(
    text: str,
    *,
    branch: str = DEFAULT_BRANCH,
    cname: str = "",
    keep_history: bool = False,
    message: str = "",
) -> PublishTarget:
    """A target from ``git:REMOTE``, ``dir:PATH`` or a bare remote or path.

    A bare value is a git remote when it is a URL (``https://…``, ``ssh://…``, ``file://…``),
    an scp-like address (``git@github.com:me/gallery.git``) or ends in ``.git``; anything
    else is a directory. The other arguments are PublishTarget's git options.
    """
    text = text.strip()
    kind, sep, rest = text.partition(":")
    if not (sep and kind in KINDS and not rest.startswith("//")):
        kind, rest = ("git" if _looks_like_git_remote(text) else "dir"), text
    return PublishTarget(kind, rest.strip(), branch, cname, keep_history, message)


def _looks_like_git_remote(text: str) -> bool:
    return "://" in text or text.rstrip("/").endswith(".git") or _is_scp_like(text)


def _is_scp_like(text: str) -> bool:
    """``host:path`` or ``user@host:path``: a colon before any slash (git's own rule)."""
    head, sep, _ = text.partition(":")
    return bool(sep) and "/" not in head and len(head) > 1


def target_from_settings(
    text: str | None,
    site: SiteSettings | None,
    *,
    branch: str | None = None,
    cname: str | None = None,
    keep_history: bool | None = None,
    message: str = "",
) -> PublishTarget:
    """The target a publish command means: what it gives, else the catalog's ``site`` block
    (``publish``, ``publish_branch``, ``cname``, ``publish_keep_history``)."""
    site = site or SiteSettings()
    chosen = text or site.publish
    if not chosen:
        raise CovergenError(
            "no publish target",
            field="publish",
            hint="give one (git:REMOTE or dir:PATH) or set site.publish in the catalog",
        )
    return parse_target(
        chosen,
        branch=branch or site.publish_branch,
        cname=site.cname if cname is None else cname,
        keep_history=site.publish_keep_history if keep_history is None else keep_history,
        message=message,
    )


def publish(
    site_dir: Path,
    target: PublishTarget,
    *,
    force: bool = False,
    protected: Sequence[tuple[Path, str]] = (),
    dry_run: bool = False,
) -> PublishPlan:
    """Send the site at ``site_dir`` to ``target``; return what changed (``dry_run``: what
    would change, changing nothing).

    ``force`` lets covergen replace what it did not make: a non-empty directory not marked
    as a previous publish (its other files are removed), or a git branch holding commits
    covergen did not make (its history is replaced, unless ``keep_history``).
    What is published is one version of the site, snapshot under the site's lock.
    """
    if target.kind == "dir":
        dest = _checked_dir_target(site_dir, target, force, protected)
        with _site_snapshot(site_dir) as files:
            return _plan_dir(files, dest) if dry_run else _mirror_dir(files, dest)
    with _site_snapshot(site_dir) as files:
        return _git_publish(files, target, push=not dry_run, force=force)


def site_files(site_dir: Path) -> dict[str, Path]:
    """The built site's files, by POSIX path relative to ``site_dir``, sorted.

    Links to files publish the file they point to; a linked folder is refused rather than
    followed (it could loop, or reach outside the site). A ``.git`` entry is left out.
    """
    site_dir = Path(site_dir)
    _check_site(site_dir)
    files: dict[str, Path] = {}
    for folder, dirnames, filenames in os.walk(site_dir):
        base = Path(folder)
        # A site (or a folder in it) that is a git checkout must not publish its .git.
        dirnames[:] = sorted(d for d in dirnames if d != GIT_ENTRY)
        for name in dirnames:
            if (base / name).is_symlink():
                raise CovergenError(
                    f"{base / name} is a link to a folder",
                    field="site",
                    hint="copy the folder into the site instead of linking it",
                )
        for name in filenames:
            path = base / name
            if name not in _NOT_PUBLISHED and path.is_file():
                files[path.relative_to(site_dir).as_posix()] = path
    return dict(sorted(files.items()))


def _check_site(site_dir: Path) -> None:
    if not site_dir.is_dir():
        raise CovergenError(
            f"no site at {site_dir}", field="site", hint="build it first: `covergen build`"
        )
    if not (site_dir / "index.html").is_file():
        raise CovergenError(
            f"{site_dir} has no index.html",
            field="site",
            hint="build the site first (`covergen build`), or pass the folder that holds it",
        )


@contextlib.contextmanager
def _site_snapshot(site_dir: Path) -> Iterator[dict[str, Path]]:
    """The site's files as they are at one moment, like ``site_files`` but in a private
    snapshot folder that is removed when the block ends.

    The build swaps a new version in under the site's lock; taking the snapshot under the
    same lock means a publish sends one version, never a mix, without holding the lock for
    the publish itself. Files are hard-linked (the build never writes a site file in place,
    so a link keeps the version's bytes), copied where links fail. The snapshot lies beside
    the site, where links work; a snapshot left by a killed publish is swept by the next.
    """
    site_dir = Path(site_dir)
    _check_site(site_dir)  # before the lock, which would create a missing site's parents
    with contextlib.ExitStack() as cleanup:
        with site_lock(site_dir):
            files = site_files(site_dir)
            snapshot = _snapshot_folder(site_dir, cleanup)
            for rel, path in files.items():
                (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
                link_or_copy(path, snapshot / rel)
        yield {rel: snapshot / rel for rel in files}


def _snapshot_folder(site_dir: Path, cleanup: contextlib.ExitStack) -> Path:
    """A new private folder beside the site, locked while in use (so that only a dead
    publish's is swept), or in the temporary folder where the site's parent is read-only;
    ``cleanup`` removes it.

    First, snapshots left by publishes that were killed (their folder's lock died with
    them) are removed: this runs under the site's lock, under which every snapshot is made
    and locked."""
    site = Path(site_dir).resolve()
    prefix = f".{site.name}.publish-"
    for old in site.parent.glob(f"{glob.escape(prefix)}*"):
        if old.is_dir() and not old.is_symlink():
            with contextlib.suppress(CovergenError), _snapshot_lock(old):  # busy: in use
                shutil.rmtree(old, ignore_errors=True)
    try:
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=site.parent))
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="covergen-publish-snapshot-"))
        cleanup.callback(shutil.rmtree, folder, ignore_errors=True)
        return folder
    cleanup.callback(shutil.rmtree, folder, ignore_errors=True)
    cleanup.enter_context(_snapshot_lock(folder))
    return folder


def _snapshot_lock(folder: Path) -> Lock:
    return Lock(
        folder,
        busy=f"{folder} is in use by another publish",
        field="publish",
        hint="let it finish",
        folder=True,
    )


# --- directory target -----------------------------------------------------------------------


def _checked_dir_target(
    site_dir: Path,
    target: PublishTarget,
    force: bool,
    protected: Sequence[tuple[Path, str]] = (),
) -> Path:
    """The target directory, resolved, once it is known to be safe to mirror into.

    ``protected``: (path, what it is) of things a mirror must never remove, even with
    ``--force`` (the catalog, its cache, its images): a target holding one is refused."""
    raw = Path(target.location).expanduser()
    dest = raw.resolve()
    site = Path(site_dir).resolve()
    home = Path.home().resolve()

    def refuse(message: str, hint: str) -> CovergenError:
        return CovergenError(message, field="publish", hint=hint)

    if dest == Path(dest.anchor):
        raise refuse(f"refusing to publish into {dest}", "name a folder of its own")
    if home.is_relative_to(dest):
        raise refuse(
            f"refusing to publish into {dest}: it holds the home directory",
            "name a folder of its own",
        )
    if dest == site:
        raise refuse(f"{raw} is the site itself", "publish to another folder")
    if site.is_relative_to(dest):
        raise refuse(
            f"{raw} contains the site ({site_dir})",
            "mirroring would delete the site; publish to a folder outside it",
        )
    if dest.is_relative_to(site):
        raise refuse(
            f"{raw} is inside the site ({site_dir})",
            "the next build would publish the copy too; publish to a folder outside the site",
        )
    for path, what in protected:
        if Path(path).resolve().is_relative_to(dest):
            raise refuse(
                f"{raw} holds {what} ({path}); mirroring the site there would delete it",
                "publish to a folder of its own, outside the catalog's folder (--force "
                "does not change this)",
            )
    if dest.exists() and not dest.is_dir():
        raise refuse(f"{raw} is a file, not a folder", "name a folder")
    ours = (dest / MARKER).is_file()
    # A folder holding only a .git (a fresh clone of an empty repository) loses nothing.
    holds_files = dest.is_dir() and any(p.name != GIT_ENTRY for p in dest.iterdir())
    if holds_files and not ours and not force:
        looks_git = (dest / "HEAD").is_file() and (dest / "objects").is_dir()
        raise refuse(
            f"{raw} is not empty and was not published by covergen "
            f"(no {MARKER} file); mirroring would delete its files",
            f"if it is a git repository, write git:{target.location}"
            if looks_git
            else "choose an empty folder, or pass --force to replace its content",
        )
    return dest


def _target_entries(dest: Path) -> dict[str, Path]:
    """What the target holds now: files and links (never followed), but the marker and any
    ``.git`` entry (a checkout, a worktree or a submodule keeps its history)."""
    entries: dict[str, Path] = {}
    for folder, dirnames, filenames in os.walk(dest):  # nothing when dest does not exist
        base = Path(folder)
        dirnames[:] = [d for d in dirnames if d != GIT_ENTRY]
        filenames = [f for f in filenames if f != GIT_ENTRY and (base != dest or f != MARKER)]
        linked = [d for d in dirnames if (base / d).is_symlink()]
        dirnames[:] = [d for d in dirnames if d not in linked]
        for name in [*filenames, *linked]:
            path = base / name
            entries[path.relative_to(dest).as_posix()] = path
    return entries


def _plan_dir(files: Mapping[str, Path], dest: Path) -> PublishPlan:
    current = _target_entries(dest)
    added, changed, unchanged = [], [], 0
    for rel, source in files.items():
        existing = current.get(rel)
        if existing is None:
            _check_no_git_in_the_way(dest, rel)
            added.append(rel)
        elif existing.is_symlink() or not filecmp.cmp(source, existing, shallow=False):
            changed.append(rel)
        else:
            unchanged += 1
    removed = sorted(set(current) - set(files))
    return PublishPlan(tuple(added), tuple(changed), tuple(removed), unchanged)


def _mirror_dir(files: Mapping[str, Path], dest: Path) -> PublishPlan:
    plan = _plan_dir(files, dest)
    dest.mkdir(parents=True, exist_ok=True)
    marker = dest / MARKER
    # The marker first: a publish cut short still leaves a folder we may mirror into again.
    if not marker.is_file() or marker.read_text(errors="replace") != MARKER_TEXT:
        with atomic_writer(marker) as handle:
            handle.write(MARKER_TEXT.encode())
    # New files before removals, so a visitor mid-publish never meets a page whose
    # images are already gone.
    for rel in (*plan.added, *plan.changed):
        out = dest / rel
        _clear_way(dest, out)
        with files[rel].open("rb") as source, atomic_writer(out) as handle:
            shutil.copyfileobj(source, handle, 1 << 20)
    for rel in plan.removed:
        path = dest / rel
        if path.is_symlink() or path.is_file():
            path.unlink()
    _remove_empty_folders(dest)
    return plan


def _check_no_git_in_the_way(dest: Path, rel: str) -> None:
    """Refuse a site file whose place is taken by a folder holding a ``.git`` entry: making
    way for it would delete a repository."""
    if GIT_ENTRY in PurePosixPath(rel).parts:
        raise ValueError(f"a site path with a .git part: {rel!r}")  # site_files leaves them out
    out = dest / rel
    if out.is_dir() and not out.is_symlink() and _holds_git(out):
        raise CovergenError(
            f"the site has a file {rel} where {dest} has a folder holding a .git entry",
            field="publish",
            hint="covergen never deletes a .git: move that folder out of the target",
        )


def _holds_git(folder: Path) -> bool:
    return any(GIT_ENTRY in dirnames + filenames for _, dirnames, filenames in os.walk(folder))


def _clear_way(dest: Path, out: Path) -> None:
    """Remove what stands where ``out`` must go: a file where a folder is needed, a folder
    where the file goes (both are stale: the site has neither). Never a ``.git`` entry."""
    _check_no_git_in_the_way(dest, out.relative_to(dest).as_posix())
    for parent in reversed(out.relative_to(dest).parents[:-1]):
        path = dest / parent
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()
    if out.is_dir() and not out.is_symlink():
        shutil.rmtree(out)


def _remove_empty_folders(dest: Path) -> None:
    """Remove folders left empty, deepest first; never one named ``.git`` nor anything in
    one (an empty ``refs/tags`` belongs to the repository)."""
    folders = []
    for folder, names, _ in os.walk(dest):
        names[:] = [n for n in names if n != GIT_ENTRY]  # a repository is not walked
        folders.append(Path(folder))
    for folder in reversed(folders[1:]):  # deepest first: emptied parents go too; not dest
        if not any(folder.iterdir()):
            folder.rmdir()


# --- git target ------------------------------------------------------------------------------


@dataclass
class _Git:
    """Runs git in one throw-away bare repository, turning failures into CovergenErrors."""

    repo: Path
    remote: str
    env: dict[str, str] = field(default_factory=dict)

    def __call__(
        self, *args: str, input: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            done = subprocess.run(
                ["git", *args],
                cwd=self.repo,
                env=self.env,
                input=input,
                capture_output=True,
                check=False,
            )
        except FileNotFoundError:
            raise CovergenError(
                "git is not installed (or not on PATH)",
                field="publish",
                hint="install git, or publish to a directory (dir:PATH)",
            ) from None
        if check and done.returncode != 0:
            raise CovergenError(
                f"git {args[0]} failed: {_summarise(done.stderr)}",
                field="publish",
                hint=_hint_for(args[0], self.remote),
            )
        return done

    def text(self, *args: str, input: bytes | None = None) -> str:
        return self(*args, input=input).stdout.decode().strip()


def _summarise(stderr: bytes) -> str:
    """git's stderr in a line or three: its fatal/error lines, else its last lines."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line and not line.startswith("hint:")]
    key = [line for line in lines if line.startswith(("fatal:", "error:", "remote:", "!"))]
    chosen = (key or lines)[-3:]
    return redact("; ".join(chosen)) or "no message"


def _hint_for(command: str, remote: str) -> str:
    if command in ("ls-remote", "fetch"):
        return f"check that the remote exists and you can read it: git ls-remote {redact(remote)}"
    if command == "push":
        return (
            "check that you may push to the remote; if someone else published meanwhile, "
            "publish again"
        )
    return ""


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_REPO_ENV}
    env["LC_ALL"] = "C"  # git's messages in English, so summaries read the same everywhere
    return env


def _remote_location(location: str) -> str:
    """What git is given: URLs and scp-like addresses as written, a remote name of the
    current repository (``origin``) as its URL, a local path made absolute (git runs in a
    temporary folder)."""
    path = Path(location).expanduser()
    if "://" in location or (_is_scp_like(location) and not path.exists()):
        return location
    if not path.exists() and re.fullmatch(r"[\w.-]+", location):
        here = _Git(repo=Path("."), remote=location, env=_git_env())
        named = here("remote", "get-url", "--", location, check=False)
        if named.returncode == 0 and named.stdout.strip():
            return _remote_location(os.fsdecode(named.stdout.strip()))
    return str(path.resolve())


def _git_publish(
    files: Mapping[str, Path], target: PublishTarget, *, push: bool, force: bool = False
) -> PublishPlan:
    remote = _remote_location(target.location)
    ref = f"refs/heads/{target.branch}"
    with tempfile.TemporaryDirectory(prefix="covergen-publish-") as tmp:
        repo = Path(tmp) / "repo.git"
        git = _Git(repo=Path(tmp), remote=remote, env=_git_env())
        git("init", "-q", "--bare", str(repo))
        git.repo = repo

        old_commit = _remote_head(git, remote, ref)
        old_entries: dict[str, tuple[str, str]] = {}
        if old_commit:
            # One commit deep is enough to compare (its tree) and to add on top (its id); a
            # replacing publish reads the whole history when there is more (below).
            git("fetch", "-q", "--no-tags", "--depth=1", remote, ref)
            # What was fetched is what we compare with and lease against, even if the
            # branch moved since ls-remote.
            old_commit = git.text("rev-parse", "FETCH_HEAD")
            if not target.keep_history and not force:
                _refuse_foreign_history(git, remote, ref, old_commit, target)
            old_entries = _tree_entries(git, old_commit)

        new_entries = _site_entries(git, files, target.cname)
        plan = _compare(old_entries, new_entries)
        if not push or not plan.has_changes:
            return plan

        tree = _write_tree(git, new_entries, Path(tmp) / "index")
        subject = target.message or (
            f"covergen: publish {len(new_entries)} files, site {tree[:12]}"
        )
        message = f"{subject.rstrip()}\n\n{TRAILER}\n{TREE_TRAILER}: {tree}\n"
        parents = ["-p", old_commit] if target.keep_history and old_commit else []
        _fill_identity(git)
        commit = git.text("commit-tree", tree, *parents, "-m", message)
        # Replacing the branch: only if it is still what we compared against.
        lease = [] if target.keep_history else [f"--force-with-lease={ref}:{old_commit}"]
        git("push", "-q", *lease, remote, f"{commit}:{ref}")
        return dataclasses.replace(plan, commit=commit)


@dataclass(frozen=True)
class _Commit:
    id: str
    tree: str
    parents: tuple[str, ...]
    message: str

    @property
    def subject(self) -> str:
        return self.message.strip().partition("\n")[0]

    @property
    def ours(self) -> bool:
        """Made by covergen: its last paragraph holds our trailer and one naming this very
        commit's tree (nobody types a tree id by accident; a copied message or a squash
        names another tree)."""
        last = re.split(r"\n[ \t]*\n", self.message.strip())[-1]
        trailers = {line.strip() for line in last.splitlines()}
        return TRAILER in trailers and f"{TREE_TRAILER}: {self.tree}" in trailers


def _refuse_foreign_history(
    git: _Git, remote: str, ref: str, tip: str, target: PublishTarget
) -> None:
    """Refuse to replace a branch holding any commit covergen did not make: replacing drops
    the whole history (someone's `main`, a hand-made pages branch, the commits below a
    --keep-history publish). ``tip`` was fetched one commit deep; the rest is fetched when
    it has parents."""
    last = _commits(git, [tip])[0]
    if not last.ours:
        raise _foreign_branch_error(
            target,
            f"was not published by covergen (its last commit is {last.id[:12]} "
            f"{last.subject[:60]!r}); publishing would replace its history",
        )
    if not last.parents:
        return
    git("fetch", "-q", "--no-tags", "--unshallow", remote, ref)
    if git.text("rev-parse", "FETCH_HEAD") != tip:
        raise CovergenError(
            f"{target.describe()} changed while covergen was reading it",
            field="publish",
            hint="someone else published meanwhile: publish again",
        )
    history = _commits(git, git.text("rev-list", tip).split())
    foreign = [commit for commit in history if not commit.ours]
    if foreign:
        first = foreign[0]
        raise _foreign_branch_error(
            target,
            f"holds {counted(len(foreign), 'commit')} covergen did not make (such as "
            f"{first.id[:12]} {first.subject[:60]!r}); publishing would drop them",
        )


def _foreign_branch_error(target: PublishTarget, what: str) -> CovergenError:
    other = "gh-pages" if target.branch != DEFAULT_BRANCH else "NAME"
    return CovergenError(
        f"branch {target.branch} of {redact(target.location)} {what}",
        field="publish",
        hint=f"add on top of it with --keep-history (or site.publish_keep_history: true), "
        f"publish to another branch (--branch {other}), or pass --force to replace "
        f"{target.branch}; a branch published by an older covergen needs --force once",
    )


def _commits(git: _Git, ids: list[str]) -> list[_Commit]:
    """The commits ``ids``, read raw with ``cat-file`` (plumbing: no log configuration,
    signature display or re-encoding can change what is parsed)."""
    out = git("cat-file", "--batch", input="".join(f"{i}\n" for i in ids).encode()).stdout
    commits, pos = [], 0
    for wanted in ids:
        header_end = out.index(b"\n", pos)
        sha, kind, size = out[pos:header_end].decode().split()
        if kind != "commit" or sha != wanted:
            raise CovergenError(
                f"{wanted[:12]} is a {kind}, not a commit",
                field="publish",
                hint="pass --force to replace the branch",
            )
        body = out[header_end + 1 : header_end + 1 + int(size)]
        pos = header_end + 1 + int(size) + 1  # the object, then a newline
        headers, _, message = body.partition(b"\n\n")
        fields = [line.split(b" ", 1) for line in headers.split(b"\n") if line[:1] != b" "]
        tree = next(value for key, value in fields if key == b"tree").decode()
        parents = tuple(value.decode() for key, value in fields if key == b"parent")
        commits.append(_Commit(sha, tree, parents, message.decode(errors="replace")))
    return commits


def _remote_head(git: _Git, remote: str, ref: str) -> str:
    done = git("ls-remote", "--exit-code", remote, ref, check=False)
    if done.returncode == 2:  # reachable, no such branch yet
        return ""
    if done.returncode != 0:
        raise CovergenError(
            f"cannot read the remote {redact(remote)}: {_summarise(done.stderr)}",
            field="publish",
            hint=_hint_for("ls-remote", remote),
        )
    for line in done.stdout.decode().splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:
            return sha
    return ""


def _tree_entries(git: _Git, commit: str) -> dict[str, tuple[str, str]]:
    """The branch's files as {path: (mode, object id)}."""
    out = os.fsdecode(git("ls-tree", "-r", "-z", "--full-tree", commit).stdout)
    entries = {}
    for meta, _, path in (record.partition("\t") for record in out.split("\0") if record):
        mode, _kind, sha = meta.split()
        entries[path] = (mode, sha)
    return entries


def _site_entries(git: _Git, files: Mapping[str, Path], cname: str) -> dict[str, tuple[str, str]]:
    """The site's files stored as blobs, plus .nojekyll and CNAME: {path: (mode, id)}."""
    entries: dict[str, tuple[str, str]] = {}
    # One git process for all files; --stdin-paths is line-based, so odd names go alone.
    plain = [p for p in files if b"\n" not in os.fsencode(files[p].resolve())]
    if plain:
        listing = b"".join(os.fsencode(files[p].resolve()) + b"\n" for p in plain)
        # --no-filters: the bytes as they are, whatever core.autocrlf the user has set.
        shas = git.text("hash-object", "-w", "--no-filters", "--stdin-paths", input=listing)
        for path, sha in zip(plain, shas.split(), strict=True):
            entries[path] = (GIT_FILE_MODE, sha)
    for path in files:
        if path not in entries:
            entries[path] = (GIT_FILE_MODE, _blob(git, files[path].read_bytes()))
    # Without it GitHub Pages runs Jekyll, which drops files whose names start with _ or .
    entries[".nojekyll"] = (GIT_FILE_MODE, _blob(git, b""))
    if cname:
        entries["CNAME"] = (GIT_FILE_MODE, _blob(git, cname.encode() + b"\n"))
    return dict(sorted(entries.items()))


def _blob(git: _Git, data: bytes) -> str:
    return git.text("hash-object", "-w", "--no-filters", "--stdin", input=data)


def _write_tree(git: _Git, entries: Mapping[str, tuple[str, str]], index: Path) -> str:
    records = "".join(f"{mode} {sha}\t{path}\0" for path, (mode, sha) in entries.items())
    indexed = dataclasses.replace(git, env={**git.env, "GIT_INDEX_FILE": str(index)})
    indexed("update-index", "--add", "-z", "--index-info", input=os.fsencode(records))
    return indexed.text("write-tree")


def _compare(old: Mapping[str, tuple[str, str]], new: Mapping[str, tuple[str, str]]) -> PublishPlan:
    added = tuple(p for p in new if p not in old)
    changed = tuple(p for p in new if p in old and old[p] != new[p])
    removed = tuple(sorted(p for p in old if p not in new))
    unchanged = sum(1 for p in new if old.get(p) == new[p])
    return PublishPlan(added, changed, removed, unchanged)


def _fill_identity(git: _Git) -> None:
    """Keep the user's git identity where there is one; else commit as covergen, so a
    fresh machine (CI) can publish without configuring git."""
    for key in ("name", "email"):
        configured = git("config", f"user.{key}", check=False).stdout.strip()
        for role in ("AUTHOR", "COMMITTER"):
            var = f"GIT_{role}_{key.upper()}"
            if not configured and not git.env.get(var):
                git.env[var] = _DEFAULT_IDENT[key]
