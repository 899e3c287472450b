import tracemalloc

import numpy as np
import pytest
import torch

from covergen.nst import ParameterError, photoreal
from covergen.nst.photoreal import (
    MattingLaplacian,
    box_mean,
    check_laplacian_memory,
    estimate_laplacian_bytes,
    guided_filter,
    laplacian_nonzeros,
    local_affine_smooth,
    matting_laplacian,
    photorealism_loss,
)


def levin_dense(image: np.ndarray, eps: float, radius: int = 1) -> np.ndarray:
    """Levin et al.'s formula, one window at a time, in float64: the reference."""
    h, w, _ = image.shape
    size = 2 * radius + 1
    count = size * size
    lap = np.zeros((h * w, h * w))
    for cy in range(radius, h - radius):
        for cx in range(radius, w - radius):
            rows = np.arange(cy - radius, cy + radius + 1)
            cols = np.arange(cx - radius, cx + radius + 1)
            window = image[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
            colours = window.reshape(count, 3).astype(np.float64)
            centred = colours - colours.mean(axis=0)
            cov = centred.T @ centred / count
            inverse = np.linalg.inv(cov + eps / count * np.eye(3))
            affinity = (1 + centred @ inverse @ centred.T) / count
            index = (rows[:, None] * w + cols).ravel()
            lap[np.ix_(index, index)] += np.eye(count) - affinity
    return lap


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


def as_batch(image: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.moveaxis(image, 2, 0).copy()).unsqueeze(0).to(dtype)


# -- matting Laplacian ---------------------------------------------------------------------
@pytest.mark.parametrize(("h", "w", "radius"), [(5, 6, 1), (3, 3, 1), (7, 4, 1), (9, 8, 2)])
@pytest.mark.parametrize("eps", [1e-7, 1e-3])
def test_laplacian_equals_levins_formula(h, w, radius, eps):
    image = random_image(h, w, seed=h * w)
    lap = matting_laplacian(image, eps, radius)
    expected = levin_dense(image, eps, radius)
    assert lap.dtype == np.float32 and lap.shape == (h * w, h * w)
    assert lap.has_sorted_indices
    np.testing.assert_allclose(lap.toarray(), expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert lap.nnz == laplacian_nonzeros(w, h, radius)


def test_laplacian_is_the_same_built_in_row_chunks(monkeypatch):
    image = random_image(11, 7, seed=3)
    whole = matting_laplacian(image).toarray()
    monkeypatch.setattr(photoreal, "CHUNK_PIXELS", 10)  # one row per chunk
    np.testing.assert_allclose(matting_laplacian(image).toarray(), whole, rtol=0, atol=1e-6)


def test_laplacian_is_symmetric_psd_with_zero_row_sums():
    image = random_image(6, 7, seed=1)
    lap = matting_laplacian(image)
    dense = lap.toarray().astype(np.float64)
    assert (abs(lap - lap.T)).max() == 0  # exactly: both halves summed in the same order
    assert np.linalg.eigvalsh(dense).min() >= -1e-6
    np.testing.assert_allclose(dense.sum(axis=1), 0, atol=1e-5)


def test_image_smaller_than_a_window_has_no_laplacian():
    lap = matting_laplacian(random_image(2, 9))
    assert lap.shape == (18, 18) and lap.nnz == 0
    assert laplacian_nonzeros(9, 2) == 0
    x = torch.rand(1, 3, 2, 9)
    assert photorealism_loss(x, [MattingLaplacian.from_photo(as_batch(random_image(2, 9)))]) == 0


def test_laplacian_refuses_8_bit_images():
    with pytest.raises(ValueError, match=r"float image in 0\.\.1"):
        matting_laplacian(np.zeros((4, 4, 3), np.uint8))


def test_affine_recolouring_costs_almost_nothing_and_noise_costs_much():
    photo = random_image(16, 20, seed=2)
    eps = 1e-7
    lap = MattingLaplacian.from_photo(as_batch(photo, torch.float64), eps=eps).to(
        dtype=torch.float64
    )
    a = np.array([[0.2, 0.9, -0.3], [0.5, -0.4, 0.1], [0.0, 0.3, 0.7]])
    recoloured = photo.astype(np.float64) @ a.T + np.array([0.1, 0.0, 0.2])
    noise = np.random.default_rng(5).random(photo.shape)
    affine_loss, noise_loss = lap.apply(
        torch.cat([as_batch(recoloured, torch.float64), as_batch(noise, torch.float64)])
    )
    # x = A·I + b fits every window exactly; only the ε|a|² ridge term remains.
    windows = 14 * 18
    assert affine_loss <= eps * windows * (a**2).sum() * 1.01 + 1e-4
    assert noise_loss > 1.0
    assert noise_loss > 1e4 * affine_loss


def test_loss_value_and_gradient_match_the_matrix():
    photo = random_image(5, 6, seed=4)
    lap = matting_laplacian(photo)
    x = torch.rand(2, 3, 5, 6, requires_grad=True)
    loss = photorealism_loss(x, [MattingLaplacian.from_scipy(lap, 5, 6)] * 2)
    loss.sum().backward()
    flat = x.detach().reshape(2, 3, 30).numpy().astype(np.float64)
    dense = lap.toarray().astype(np.float64)
    expected = np.einsum("bcn,nm,bcm->b", flat, dense, flat)
    np.testing.assert_allclose(loss.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    expected_grad = 2 * np.einsum("nm,bcm->bcn", dense, flat).reshape(2, 3, 5, 6)
    assert x.grad.is_contiguous()  # optimisers view it flat
    np.testing.assert_allclose(x.grad.numpy(), expected_grad, rtol=1e-5, atol=1e-5)


def test_gradcheck_in_float64_with_shared_and_separate_laplacians():
    # Small: each sparse product costs milliseconds of fixed overhead on the CPU.
    first = MattingLaplacian.from_photo(random_image(3, 4, seed=6)).to(dtype=torch.float64)
    second = MattingLaplacian.from_photo(random_image(3, 4, seed=7)).to(dtype=torch.float64)
    x = torch.rand(3, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t: photorealism_loss(t, [first, second, first]), (x,), eps=1e-6, atol=1e-6
    )


def test_batch_items_keep_their_own_laplacian():
    photos = [random_image(6, 5, seed=s) for s in (8, 9)]
    laps = [MattingLaplacian.from_photo(p) for p in photos]
    x = torch.rand(3, 3, 6, 5)
    together = photorealism_loss(x, [laps[0], laps[1], laps[0]])
    alone = torch.cat([photorealism_loss(x[i : i + 1], [laps[k]]) for i, k in enumerate((0, 1, 0))])
    torch.testing.assert_close(together, alone)


def test_loss_converts_a_float32_laplacian_to_the_images_dtype():
    lap = MattingLaplacian.from_photo(random_image(5, 5))
    x = torch.rand(1, 3, 5, 5, dtype=torch.float64)
    assert photorealism_loss(x, [lap]).dtype == torch.float64
    with pytest.raises(ValueError, match="5×5 Laplacian for 6×5"):
        photorealism_loss(torch.rand(1, 3, 5, 6), [lap])


# -- memory --------------------------------------------------------------------------------
def test_estimate_covers_the_measured_build_peak():
    image = random_image(96, 128, seed=10)
    tracemalloc.start()
    lap = matting_laplacian(image)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    estimate = estimate_laplacian_bytes(128, 96)
    assert peak <= estimate <= 3 * peak
    assert lap.data.nbytes + lap.indices.nbytes + lap.indptr.nbytes < estimate


def test_memory_check_refuses_with_the_field_the_sizes_and_a_hint():
    need = estimate_laplacian_bytes(4096, 3072)
    assert need > 2 << 30  # ~200 bytes a pixel
    with pytest.raises(ParameterError) as caught:
        check_laplacian_memory(4096, 3072, budget=2 << 30)
    error = caught.value
    assert error.field == "photorealism"
    assert "4096×3072" in error.message and "2,048 MiB" in error.message
    assert "size" in error.hint and "photorealism to 0" in error.hint
    assert check_laplacian_memory(512, 384, budget=2 << 30) == estimate_laplacian_bytes(512, 384)


# -- guided filter -------------------------------------------------------------------------
def naive_box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    out = torch.empty_like(x)
    for y in range(h):
        for x0 in range(w):
            window = x[
                ..., max(0, y - radius) : y + radius + 1, max(0, x0 - radius) : x0 + radius + 1
            ]
            out[..., y, x0] = window.mean(dim=(-2, -1))
    return out


@pytest.mark.parametrize("radius", [1, 2, 7])
def test_box_mean_averages_windows_clipped_to_the_image(radius):
    x = torch.rand(2, 3, 6, 9, dtype=torch.float64)
    torch.testing.assert_close(box_mean(x, radius), naive_box_mean(x, radius))


def test_guided_filter_with_a_constant_guide_is_a_mean_of_window_means():
    src = torch.rand(1, 2, 7, 8, dtype=torch.float64)
    guide = torch.full((1, 3, 7, 8), 0.4, dtype=torch.float64)
    out = guided_filter(guide, src, radius=2, eps=1e-3)
    # a = 0 everywhere, b = the window mean; each pixel averages the b of its windows.
    torch.testing.assert_close(out, naive_box_mean(naive_box_mean(src, 2), 2))


def test_guided_filter_reproduces_a_channel_of_its_guide_as_eps_vanishes():
    guide = torch.rand(2, 3, 9, 10, dtype=torch.float64)
    out = guided_filter(guide, guide[:, 1:2], radius=1, eps=1e-12)
    torch.testing.assert_close(out, guide[:, 1:2], rtol=0, atol=1e-6)


def test_guided_filter_keeps_shape_dtype_and_device():
    guide = torch.rand(2, 3, 5, 7)
    for src in (torch.rand(2, 1, 5, 7), torch.rand(2, 4, 5, 7, dtype=torch.float64)):
        out = guided_filter(guide, src, radius=2, eps=1e-4)
        assert out.shape == src.shape and out.dtype == src.dtype and out.device == src.device
    with pytest.raises(ValueError):
        guided_filter(guide, torch.rand(2, 1, 5, 6), radius=1, eps=1e-4)


def test_guided_filter_wider_than_the_image_is_one_global_ridge_regression():
    guide = torch.rand(1, 3, 6, 5, dtype=torch.float64)
    src = torch.rand(1, 2, 6, 5, dtype=torch.float64)
    eps = 1e-2
    out = guided_filter(guide, src, radius=50, eps=eps)
    colours = guide[0].reshape(3, -1).T.numpy()
    values = src[0].reshape(2, -1).T.numpy()
    centred = colours - colours.mean(axis=0)
    n = len(colours)
    a = np.linalg.solve(centred.T @ centred / n + eps * np.eye(3), centred.T @ values / n)
    fitted = centred @ a + values.mean(axis=0)
    np.testing.assert_allclose(out[0].reshape(2, -1).T.numpy(), fitted, atol=1e-10)


def test_local_affine_smooth_keeps_a_recolouring_and_removes_noise():
    torch.manual_seed(11)
    photo = torch.zeros(1, 3, 24, 24)
    photo[..., :, 12:] = 0.8  # a hard vertical edge
    photo = photo + 0.05 * torch.rand(1, 3, 24, 24)
    recoloured = photo.flip(1) * 0.7 + 0.1  # a global affine colour change
    torch.testing.assert_close(
        local_affine_smooth(recoloured, photo, radius=3, eps=1e-8), recoloured, atol=1e-4, rtol=0
    )
    noisy = recoloured + 0.1 * torch.randn_like(recoloured)
    smoothed = local_affine_smooth(noisy, photo, radius=3, eps=1e-4)
    before = (noisy - recoloured).square().mean()
    assert (smoothed - recoloured).square().mean() < before / 5
    # the edge stays a step: the columns either side differ as much as in the target
    step = (smoothed[..., 12] - smoothed[..., 11]).mean(dim=-1)
    target = (recoloured[..., 12] - recoloured[..., 11]).mean(dim=-1)
    torch.testing.assert_close(step, target, atol=0.05, rtol=0)
