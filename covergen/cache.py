"""Where things live in the cache folder (``cache/`` unless --cache-dir says otherwise)."""

from __future__ import annotations

from pathlib import Path


def cache_paths(cache_dir: Path) -> dict[str, Path]:
    """The cache's parts: fetched images, results, engine features, the site's derived
    images, the run log and the build lock (converted weights live in ``weights/``)."""
    cache_dir = Path(cache_dir)
    return {
        "images": cache_dir / "images",
        "results": cache_dir / "results",
        "features": cache_dir / "features",
        "derived": cache_dir / "derived",
        "runlog": cache_dir / "runs.sqlite",
        "lock": cache_dir / "build.lock",  # see locks.cache_lock
    }
