"""Photorealism: Levin's matting Laplacian as a regulariser, and He's guided filter.

Deep Photo Style Transfer (Luan et al. 2017) keeps a stylised photo looking like a photo
by penalising, per colour channel c, ``x_cᵀ L x_c`` where ``L`` is the matting Laplacian of
the photo (Levin, Lischinski & Weiss 2008): the cost is small exactly when, in every
small window, the result is an affine function of the photo's colours, so it may recolour
the photo but not repaint its edges. The guided filter (He, Sun & Tang) is the cheap
relative: it fits the same local affine models in closed form and is used here as a
post-process that re-imposes the photo's edges on a result.

Written from the papers; no code is taken from the authors' (non-commercial) releases.

Memory: ``L`` has about (4r + 1)² non-zeros per pixel (25 for 3×3 windows), stored as
float32 values with int32 column indices: 8 bytes each, 200 bytes a pixel, 204 MiB at
1024×1024. ``estimate_laplacian_bytes`` gives the peak while building and
``check_laplacian_memory`` refuses sizes over a budget before any work is done.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch

from .errors import ParameterError

# Pixels of the image processed at once while building L (whole rows): bounds the
# float64 window statistics, about 1 kB per pixel of a chunk, whatever the image size.
CHUNK_PIXELS = 1 << 16

# 2 GiB: a Laplacian of up to about 3000×3000 pixels (at 200 bytes a pixel).
DEFAULT_LAPLACIAN_BUDGET = 2 << 30

# The (i, j) entries, i ≤ j, that hold a symmetric 3×3 matrix (colour covariances).
_UPPER = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


# -- matting Laplacian ---------------------------------------------------------------------
def matting_laplacian(
    image: np.ndarray, eps: float = 1e-7, radius: int = 1
) -> scipy.sparse.csr_matrix:
    """Levin's matting Laplacian of an (H, W, 3) image in 0..1, as an N×N float32 CSR matrix.

    Pixels are numbered row-major (N = H·W), the order of ``x.reshape(N)`` for a (H, W)
    channel. For each (2r+1)² window k with colour mean μ_k and covariance Σ_k, and |w| its
    pixel count,

        L_ij = Σ_{k ∋ i, j} δ_ij - (1 + (I_i - μ_k)ᵀ (Σ_k + ε/|w| I₃)⁻¹ (I_j - μ_k)) / |w|.

    Only windows lying wholly inside the image are used, as in Levin's paper and code:
    border pixels simply belong to fewer windows (a corner to one). Padding the image
    instead would invent colours and tie edge pixels to copies of themselves. An image
    smaller than one window has no windows and gets the zero matrix.

    Every pixel pair less than 2r + 1 apart (in both directions) shares a window, so
    each row holds exactly the neighbours within a (4r+1)² square, already sorted by
    column. The matrix is therefore built band by band, row chunk by row chunk, straight
    into CSR arrays of the final size: no COO triplets, no duplicate summing, and the
    float64 window statistics (needed: the 3×3 inverse is ill-conditioned where a window
    is nearly one colour) only ever exist for one chunk. The result is exactly symmetric.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        # ε is in squared 0..1 units: 8-bit values would make it 65025 times weaker.
        raise ValueError(f"expected a float image in 0..1, got {image.dtype}")
    if radius < 1:
        raise ValueError(f"radius must be at least 1, got {radius}")
    height, width = image.shape[:2]
    n = height * width
    size = 2 * radius + 1
    if height < size or width < size:
        return scipy.sparse.csr_matrix((n, n), dtype=np.float32)
    reach = 2 * radius
    indptr = _row_pointers(height, width, reach)
    nnz = int(indptr[-1])
    index_dtype = np.int32 if max(nnz, n) < np.iinfo(np.int32).max else np.int64
    indptr = indptr.astype(index_dtype)
    data = np.empty(nnz, np.float32)
    indices = np.empty(nnz, index_dtype)
    dys, dxs = np.divmod(np.arange((2 * reach + 1) ** 2), 2 * reach + 1)
    dys, dxs = dys - reach, dxs - reach
    column_offsets = (dys * width + dxs).astype(index_dtype)
    valid_x = (np.arange(width)[:, None] + dxs >= 0) & (np.arange(width)[:, None] + dxs < width)
    channels_first = np.moveaxis(image, 2, 0)
    rows_per_chunk = max(1, CHUNK_PIXELS // width)
    for top in range(0, height, rows_per_chunk):
        bottom = min(height, top + rows_per_chunk)
        bands = _chunk_bands(channels_first, top, bottom, eps, radius)  # (K, R, W)
        ys = np.arange(top, bottom)[:, None] + dys
        valid = ((ys >= 0) & (ys < height))[:, None, :] & valid_x[None, :, :]  # (R, W, K)
        start, stop = indptr[top * width], indptr[bottom * width]
        data[start:stop] = np.moveaxis(bands, 0, 2)[valid]
        pixels = np.arange(top * width, bottom * width, dtype=index_dtype)
        indices[start:stop] = (pixels.reshape(-1, width, 1) + column_offsets)[valid]
    return scipy.sparse.csr_matrix((data, indices, indptr), shape=(n, n))


def _row_pointers(height: int, width: int, reach: int) -> np.ndarray:
    """CSR row pointers (int64) when each pixel is linked to all pixels within ``reach``."""
    per_pixel = np.outer(_neighbours(height, reach), _neighbours(width, reach)).ravel()
    return np.concatenate([[0], np.cumsum(per_pixel, dtype=np.int64)])


def _neighbours(length: int, reach: int) -> np.ndarray:
    """For each position on a line of ``length``, the positions within ``reach`` (itself too)."""
    i = np.arange(length)
    return np.minimum(length - 1, i + reach) - np.maximum(0, i - reach) + 1


def _chunk_bands(image: np.ndarray, top: int, bottom: int, eps: float, radius: int) -> np.ndarray:
    """Band values (K, bottom - top, W) of L's rows ``top:bottom``, K = (4r+1)² offsets.

    ``image`` is (3, H, W). Band k of row i holds L[i, i + offset_k], offsets ordered
    (dy, dx) row-major. Windows near the chunk's edges are shared with the neighbouring
    chunk and computed twice, a small price for independent chunks.
    """
    _, height, width = image.shape
    size = 2 * radius + 1
    reach = 2 * radius
    span = 2 * reach + 1
    count = size * size
    # Window centres whose windows touch rows top..bottom-1, and the pixel rows they cover.
    first = max(radius, top - radius)
    last = min(height - 1 - radius, bottom - 1 + radius)
    p0 = first - radius
    pixels = image[:, p0 : last + radius + 1].astype(np.float64)
    hc, wc = last - first + 1, width - 2 * radius

    def patch(a: int) -> np.ndarray:
        ay, ax = divmod(a, size)
        return pixels[:, ay : ay + hc, ax : ax + wc]

    mean = sum(patch(a) for a in range(count)) / count
    deviations = [patch(a) - mean for a in range(count)]  # u_a = I_a - μ, each (3, hc, wc)
    cov = {(i, j): sum(u[i] * u[j] for u in deviations) / count for i, j in _UPPER}
    for i in range(3):
        cov[i, i] = cov[i, i] + eps / count
    inverse = _symmetric_inverse_3x3(cov)
    # w_a = (Σ + ε/|w|)⁻¹ u_a / |w|: the pair products below are then plain dot products,
    # done in float32 as the inverse is done: they are bounded (|u_aᵀ M u_b| ≤ |w|), and on
    # photos the result differs from an all-float64 build by < 1e-5 relative.
    weighted = [(_solve(inverse, u) / count).astype(np.float32) for u in deviations]
    deviations = [u.astype(np.float32) for u in deviations]
    bands = np.zeros((span * span, pixels.shape[1], width), np.float32)
    for a in range(count):
        ay, ax = divmod(a, size)
        wa = weighted[a]
        for b in range(a, count):
            by, bx = divmod(b, size)
            ub = deviations[b]
            value = wa[0] * ub[0]
            value += wa[1] * ub[1]
            value += wa[2] * ub[2]
            value += 1.0 / count
            if a == b:
                value -= 1.0
            # value = -(L contribution); the pair (a, b) links pixel a to b and b to a
            forward = (by - ay + reach) * span + (bx - ax + reach)
            bands[forward, ay : ay + hc, ax : ax + wc] -= value
            if a != b:
                backward = (ay - by + reach) * span + (ax - bx + reach)
                bands[backward, by : by + hc, bx : bx + wc] -= value
    return bands[:, top - p0 : bottom - p0]


def _symmetric_inverse_3x3(m: dict[tuple[int, int], np.ndarray | torch.Tensor]) -> dict:
    """Inverse of per-pixel symmetric 3×3 matrices given by their upper triangles.

    ``m`` maps (i, j), i ≤ j, to arrays or tensors of one shape; the result has the same
    keys. The adjugate over the determinant, vectorised: far faster than a batched
    ``inv`` on millions of 3×3 systems, and the same code serves numpy and torch.
    """
    a, b, c, d, e, f = m[0, 0], m[0, 1], m[0, 2], m[1, 1], m[1, 2], m[2, 2]
    c00 = d * f - e * e
    c01 = c * e - b * f
    c02 = b * e - c * d
    c11 = a * f - c * c
    c12 = b * c - a * e
    c22 = a * d - b * b
    det = a * c00 + b * c01 + c * c02
    cofactors = (c00, c01, c02, c11, c12, c22)
    return {key: cofactor / det for key, cofactor in zip(_UPPER, cofactors, strict=True)}


def _solve(inverse: dict, u: np.ndarray) -> np.ndarray:
    """M u for per-pixel symmetric M (upper triangle ``inverse``) and u of shape (3, ...)."""
    return np.stack([sum(inverse[min(i, j), max(i, j)] * u[j] for j in range(3)) for i in range(3)])


def laplacian_nonzeros(width: int, height: int, radius: int = 1) -> int:
    """Stored entries of the matting Laplacian of a ``width``×``height`` image."""
    if min(width, height) < 2 * radius + 1:
        return 0
    reach = 2 * radius
    return int(_neighbours(height, reach).sum()) * int(_neighbours(width, reach).sum())


def estimate_laplacian_bytes(width: int, height: int, radius: int = 1) -> int:
    """Peak host memory of building the matting Laplacian of a ``width``×``height`` image.

    The finished matrix (float32 values, int32 columns and row pointers) plus the build's
    per-chunk working set; the image itself and Python's own footprint are not counted.
    A copy on the GPU needs the matrix part again (``laplacian_nonzeros`` · 8 bytes).
    """
    n = width * height
    nnz = laplacian_nonzeros(width, height, radius)
    index_bytes = 4 if max(nnz, n) < np.iinfo(np.int32).max else 8
    matrix = nnz * (4 + index_bytes) + (n + 1) * index_bytes
    chunk_rows = max(1, CHUNK_PIXELS // max(width, 1))
    chunk_pixels = (min(height, chunk_rows) + 4 * radius) * width
    window_area = (2 * radius + 1) ** 2
    bands = (4 * radius + 1) ** 2
    # Per chunk pixel: the |w| colour deviations and their weighted copies (float64, then
    # float32); per band, the float32 accumulator, the mask, and the gathered columns
    # and values. Measured peaks (tracemalloc) are 65-90% of this.
    working = chunk_pixels * (2 * window_area * 3 * 8 + bands * (4 + 1 + 8 + 4 + 4))
    return matrix + working


def check_laplacian_memory(
    width: int, height: int, budget: int = DEFAULT_LAPLACIAN_BUDGET, radius: int = 1
) -> int:
    """Estimated bytes of a ``width``×``height`` Laplacian; ParameterError over ``budget``."""
    need = estimate_laplacian_bytes(width, height, radius)
    if need > budget:
        raise ParameterError(
            "photorealism",
            f"the matting Laplacian of a {width}×{height} image needs about "
            f"{_mib(need)} of memory, more than the {_mib(budget)} allowed",
            "lower size, or set photorealism to 0 to turn the regulariser off",
        )
    return need


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


# -- the regulariser in torch --------------------------------------------------------------
@dataclass(frozen=True)
class MattingLaplacian:
    """One photo's matting Laplacian as a torch sparse CSR matrix, ready for the loss.

    ``matrix`` is (N, N) with N = height · width, pixels row-major. Build it once per
    photo and scale, move it with ``to`` to the engine's device and dtype once, then call
    ``apply`` (or ``photorealism_loss`` for a batch) every iteration.
    """

    matrix: torch.Tensor
    height: int
    width: int

    @classmethod
    def from_photo(
        cls, photo: torch.Tensor | np.ndarray, eps: float = 1e-7, radius: int = 1
    ) -> MattingLaplacian:
        """Build from a (1, 3, H, W) or (3, H, W) tensor, or an (H, W, 3) array, in 0..1."""
        if isinstance(photo, torch.Tensor):
            array = photo.detach().reshape(-1, *photo.shape[-2:]).cpu().numpy()
            if array.shape[0] != 3:
                raise ValueError(f"expected one RGB photo, got shape {tuple(photo.shape)}")
            array = np.moveaxis(array, 0, 2)
        else:
            array = np.asarray(photo)
        height, width = array.shape[:2]
        return cls.from_scipy(matting_laplacian(array, eps, radius), height, width)

    @classmethod
    def from_scipy(
        cls, matrix: scipy.sparse.csr_matrix, height: int, width: int
    ) -> MattingLaplacian:
        """Wrap a CSR matrix (e.g. one loaded from a cache); shares its arrays, no copy."""
        n = height * width
        if matrix.shape != (n, n):
            raise ValueError(
                f"a {width}×{height} image needs an {n}×{n} matrix, got {matrix.shape}"
            )
        indices = matrix.indices
        indptr = matrix.indptr.astype(indices.dtype, copy=False)
        with warnings.catch_warnings():
            # torch warns that sparse CSR is "beta" on every construction.
            warnings.simplefilter("ignore", UserWarning)
            tensor = torch.sparse_csr_tensor(
                torch.from_numpy(indptr),
                torch.from_numpy(indices),
                torch.from_numpy(np.asarray(matrix.data, np.float32)),
                size=(n, n),
                check_invariants=False,  # built by matting_laplacian, valid by construction
            )
        return cls(tensor, height, width)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> MattingLaplacian:
        """The same matrix on ``device`` in ``dtype`` (values only; indices keep theirs).

        For MPS images pass ``sparse_device(device)``: the CPU.
        """
        return MattingLaplacian(self.matrix.to(device=device, dtype=dtype), self.height, self.width)

    @property
    def nbytes(self) -> int:
        """Bytes the matrix occupies where it lives."""
        m = self.matrix
        return sum(
            t.numel() * t.element_size() for t in (m.crow_indices(), m.col_indices(), m.values())
        )

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_c x_cᵀ L x_c of (B, C, H, W) images, per batch item: (B,)."""
        return photorealism_loss(x, [self] * x.shape[0])


class _LaplacianQuadratic(torch.autograd.Function):
    """loss_b = Σ_c x_bcᵀ L_b x_bc, with the products L_b x_bc kept for the backward.

    L is symmetric, so the gradient is 2 L x: the forward's own product, saved, makes the
    backward free of sparse work. Items sharing one matrix are multiplied together, as
    one (N, B·C) product.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        matrices: tuple[torch.Tensor, ...],
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        columns = x.detach().reshape(b, c, h * w).to(matrices[0].device)
        groups: dict[int, list[int]] = {}
        for i, matrix in enumerate(matrices):
            groups.setdefault(id(matrix), []).append(i)
        if len(groups) == 1:  # the usual batch: one photo, several covers
            product = matrices[0] @ columns.reshape(b * c, h * w).t()  # (N, B·C)
            # contiguous: optimisers (torch's L-BFGS among them) view gradients flat
            products = product.t().contiguous().reshape(b, c, h * w)
        else:
            products = torch.empty_like(columns)
            for items in groups.values():
                stacked = columns[items].reshape(len(items) * c, h * w)
                product = (matrices[items[0]] @ stacked.t()).t()  # (items · C, N)
                products[items] = product.reshape(len(items), c, h * w)
        loss = (columns * products).sum(dim=(1, 2)).to(x.device)
        ctx.save_for_backward(products.to(x.device))
        ctx.image_shape = x.shape  # type: ignore[attr-defined]
        return loss

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        (products,) = ctx.saved_tensors  # type: ignore[attr-defined]
        shape = ctx.image_shape  # type: ignore[attr-defined]
        return (2 * grad[:, None, None] * products).reshape(shape), None


def photorealism_loss(x: torch.Tensor, laplacians: Sequence[MattingLaplacian]) -> torch.Tensor:
    """Σ_c x_bcᵀ L_b x_bc per batch item of (B, C, H, W) images: (B,).

    Zero for a result that is, in every window, an affine function of its photo's
    colours (up to the ε term); the gradient is 2 L_b x_bc. The sum grows with the pixel
    count, like Luan et al.'s: divide by C·H·W for a mean, under which pixel-scale
    texture costs the same at every size.

    The matrices must be on ``x``'s device in its dtype (``MattingLaplacian.to``), else
    they are converted on every call. On MPS, which has no sparse matrix products, they
    stay on the CPU and the images travel there and back.
    """
    b, _, h, w = x.shape
    if len(laplacians) != b:
        raise ValueError(f"{len(laplacians)} Laplacians for a batch of {b}")
    device = sparse_device(x.device)
    matrices = []
    converted: dict[int, torch.Tensor] = {}
    for lap in laplacians:
        if (lap.height, lap.width) != (h, w):
            raise ValueError(f"a {lap.width}×{lap.height} Laplacian for {w}×{h} images")
        m = lap.matrix
        if m.dtype != x.dtype or m.device != device:
            if id(m) not in converted:
                converted[id(m)] = m.to(device=device, dtype=x.dtype)
            m = converted[id(m)]
        matrices.append(m)
    return _LaplacianQuadratic.apply(x, tuple(matrices))


def sparse_device(device: torch.device) -> torch.device:
    """Where the Laplacian of images on ``device`` should live: there, or the CPU for MPS."""
    return torch.device("cpu") if device.type == "mps" else device


# -- guided filter -------------------------------------------------------------------------
def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean of (B, C, H, W) over (2r+1)² windows clipped to the image, in O(N) whatever r.

    Border windows average only the pixels they hold, as He et al. do. Cumulative sums
    along each axis in turn, so each running sum spans one row or column at most.
    """
    _, _, h, w = x.shape
    out = _box_sum(_box_sum(x, radius, 2), radius, 3)
    return out / (_window_counts(h, radius, x)[:, None] * _window_counts(w, radius, x))


def _box_sum(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Sums over ``x[i - r : i + r + 1]`` along ``dim``, the window clipped to the line.

    With C the cumulative sum, the sum is C[min(n-1, i+r)] - C[i-r-1], the second term
    only where i > r. Written as slice copies: an index gather, or a cat of expanded
    slices, is several times slower on the CPU.
    """
    n = x.shape[dim]
    r = min(radius, n - 1)  # a window past both ends is the whole line
    sums = x.cumsum(dim)
    out = torch.empty_like(x)
    out.narrow(dim, 0, n - r).copy_(sums.narrow(dim, r, n - r))
    out.narrow(dim, n - r, r).copy_(sums.narrow(dim, n - 1, 1).expand_as(out.narrow(dim, n - r, r)))
    out.narrow(dim, r + 1, n - r - 1).sub_(sums.narrow(dim, 0, n - r - 1))
    return out


def _window_counts(n: int, radius: int, like: torch.Tensor) -> torch.Tensor:
    """Pixels in each window along a line of ``n``, on ``like``'s device in its dtype."""
    i = torch.arange(n, device=like.device)
    return ((i + radius).clamp(max=n - 1) - (i - radius).clamp(min=0) + 1).to(like.dtype)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter: ``src`` (B, C, H, W) smoothed along the edges of ``guide``.

    ``guide`` is (B, 3, H, W) colour. In every (2r+1)² window each channel of ``src`` is
    fitted by an affine function of the guide's colours, a·I + b, by ridge regression with
    penalty ``eps`` · |a|² per pixel (He's ε; Levin's ε/|w|); the output is the average
    of the fits of all windows covering a pixel. eps is in squared intensity units
    (0..1 images): guide edges of contrast well above √eps (0.01 for 1e-4) are kept,
    weaker detail is smoothed over.

    The window statistics are differences of cumulative sums and need float64: in
    float32 the variances of flat windows are rounding noise, and at eps 1e-6 outputs
    were off by whole intensity units. So the work is done in float64 on ``src``'s
    device, or on the CPU for MPS (no float64 there); the result has ``src``'s dtype
    and device.
    """
    if guide.shape[1] != 3 or guide.shape[0] != src.shape[0] or guide.shape[2:] != src.shape[2:]:
        raise ValueError(f"guide {tuple(guide.shape)} does not fit src {tuple(src.shape)}")
    work = torch.device("cpu") if src.device.type == "mps" else src.device
    guide = guide.to(work, torch.float64)
    src_work = src.to(work, torch.float64)
    # The filter commutes with shifting either input: centring costs nothing and keeps
    # the cumulative sums small.
    guide = guide - guide.mean(dim=(2, 3), keepdim=True)
    src_mean = src_work.mean(dim=(2, 3), keepdim=True)
    p = src_work - src_mean
    b, c, h, w = p.shape
    products = torch.cat(
        [
            guide,
            p,
            *(guide[:, i : i + 1] * guide[:, j : j + 1] for i, j in _UPPER),
            *(guide[:, i : i + 1] * p for i in range(3)),
        ],
        dim=1,
    )
    means = box_mean(products, radius)
    mean_i, mean_p = means[:, :3], means[:, 3 : 3 + c]
    second = means[:, 3 + c : 9 + c]
    cross = means[:, 9 + c :].reshape(b, 3, c, h, w)
    cov = {
        (i, j): second[:, k] - mean_i[:, i] * mean_i[:, j] + (eps if i == j else 0.0)
        for k, (i, j) in enumerate(_UPPER)
    }
    inverse = _symmetric_inverse_3x3(cov)
    cov_ip = cross - mean_i[:, :, None] * mean_p[:, None]  # (B, 3, C, H, W)
    a = torch.stack(
        [
            sum(inverse[min(i, j), max(i, j)][:, None] * cov_ip[:, j] for j in range(3))
            for i in range(3)
        ],
        dim=1,
    )  # (B, 3, C, H, W)
    offset = mean_p - (a * mean_i[:, :, None]).sum(dim=1)
    smoothed = box_mean(torch.cat([a.reshape(b, 3 * c, h, w), offset], dim=1), radius)
    mean_a = smoothed[:, : 3 * c].reshape(b, 3, c, h, w)
    q = (mean_a * guide[:, :, None]).sum(dim=1) + smoothed[:, 3 * c :]
    return (q + src_mean).to(src.device, src.dtype)


def local_affine_smooth(
    result: torch.Tensor, photo: torch.Tensor, radius: int = 8, eps: float = 1e-3
) -> torch.Tensor:
    """Re-impose the photo's edges on a stylised result: ``result`` guided-filtered by ``photo``.

    Each output window is an affine recolouring of the photo that best fits the result's
    colours there, so painted strokes that cross the photo's edges are smoothed away
    while its colours stay. Both (B, 3, H, W), same size. The window must be wider than
    the strokes to remove them, and narrower than the regions that should keep their own
    colours: scale ``radius`` with the image (the default suits 512 px, size / 64).
    """
    return guided_filter(photo, result, radius, eps)
