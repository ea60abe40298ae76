"""ADVISE checked against its authors' code: their relevance and maps next to vqi's on the same input.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/advise_reference.py

The authors' MATLAB (github.com/dehshibi/ADVISE, commit ee8a60572d1f0ea0c1f2b31fc577714b3ecdb245,
GPL-3.0) cannot run here, so the functions below are line-by-line NumPy translations of
`ADVISEkernel.m` (the adaptive-bandwidth KDE, with its `CostFunction`, `fftkernel`, `Gauss`,
`logexp`, `ilogexp`), of the relevance loop and the per-group maps of `imADVISE.m` with
`iComputeSum.m`, plus MATLAB's documented `histc`, `findpeaks` and `interp1` behaviour. As a
translation of GPL-3.0 code, this file is under GPL-3.0. vqi's own code (`vqi.xai.adaptive_kde`,
`vqi.xai.advise`) is batched torch and is what the pipeline runs; this script only compares.

Prints, on random channels of 1 to 4 value clusters (and on the same channels scaled by 10), with
vqi set as the authors (`domain=clip`): the largest density difference, how often the peak counts
(the relevance) agree and their rank correlation, also over the channels without a value in the
top half bin (the one place vqi departs from the authors' kernel); whether a scaling changes the
authors' and vqi's default (`domain=minmax`) relevance; the authors' kernel on min-max scaled
channels against vqi's default; then, for random A and dS/dA, the authors' map of the group vqi
chooses against vqi's map. docs/metrics.md ("ADVISE") explains the differences.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr

from vqi.xai.adaptive_kde import adaptive_kde, count_peaks
from vqi.xai.advise import AdviseCAM, channel_samples


# ---- translated from ADVISEkernel.m (GPL-3.0, dehshibi/ADVISE @ ee8a605) ----
def _logexp(x):
    return np.where(x < 1e2, np.log(1 + np.exp(np.minimum(x, 1e2))), x)


def _ilogexp(x):
    return np.where(x < 1e2, np.log(np.exp(np.minimum(x, 1e2)) - 1), x)


def _gauss(x, w):
    return 1 / np.sqrt(2 * np.pi) / w * np.exp(-x ** 2 / 2 / w ** 2)


def _fftkernel(x, w):
    length = len(x)
    n = int(2 ** np.ceil(np.log2(length + 3 * w)))
    spectrum = np.fft.fft(x, n)
    f = np.concatenate([-np.arange(0, n // 2 + 1), np.arange(n // 2 - 1, 0, -1)]) / n
    kernel = np.exp(-0.5 * (w * 2 * np.pi * f) ** 2)
    return np.real(np.fft.ifft(spectrum * kernel, n))[:length]


def _histc(x, edges):
    """MATLAB histc: bin k counts edges[k] <= x < edges[k+1]; the last bin only x == edges[-1]."""
    counts = np.zeros(len(edges))
    for value in x:
        k = np.searchsorted(edges, value, side="right") - 1
        if 0 <= k < len(edges) - 1 or (k == len(edges) - 1 and value == edges[-1]):
            counts[k] += 1
    return counts


def _cost_function(y_hist, n_count, t, dt, optws, win, g):
    length = len(y_hist)
    optwv = np.zeros(length)
    for k in range(length):
        gs = optws[:, k] / win
        if g > gs.max():
            optwv[k] = win.min()
        elif g < gs.min():
            optwv[k] = win.max()
        else:
            idx = np.nonzero(gs >= g)[0][-1]
            optwv[k] = g * win[idx]
    optwp = np.zeros(length)
    for k in range(length):
        z = _gauss(t[k] - t, optwv / g)
        optwp[k] = np.sum(optwv * z) / np.sum(z)
    nz = np.nonzero(y_hist != 0)[0]
    yv = np.zeros(length)
    for k in range(length):
        yv[k] = np.sum(y_hist[nz] * dt * _gauss(t[k] - t[nz], optwp[k]))
    yv = yv * n_count / np.sum(yv * dt)
    cg = yv ** 2 - 2 * yv * y_hist + 2 / np.sqrt(2 * np.pi) / optwp * y_hist
    return np.sum(cg * dt), yv, optwp


def advise_kernel(x, tin, m):
    """ADVISEkernel(x, tin, M): the density at `tin`, or None where MATLAB's `try` fails (NaN
    where it runs on no counted value, as MATLAB's 0/0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return _advise_kernel(x, tin, m)


def _grid(x, tin):
    """(values counted, the grid estimated on): coarser than tin where the values are sparser."""
    x = np.ravel(x)
    x_ab = x[(x >= tin.min()) & (x <= tin.max())]
    gaps = np.sort(np.diff(np.sort(x_ab)))
    gaps = gaps[gaps != 0]
    if len(gaps) and gaps[0] > np.diff(tin).min():
        return x_ab, np.linspace(tin.min(), tin.max(), int(min(np.ceil((tin.max() - tin.min()) / gaps[0]), 1e3)))
    return x_ab, tin


def _advise_kernel(x, tin, m):
    t_range = tin.max() - tin.min()
    x_ab, t = _grid(x, tin)
    if len(t) < 2:
        return None   # `min(diff(t))` is empty: the MATLAB code errors and returns []
    dt = np.diff(t).min()
    y_hist = _histc(x_ab, t - dt / 2) / dt
    length = len(y_hist)
    n_count = np.sum(y_hist * dt)
    win = _logexp(np.linspace(_ilogexp(5 * dt), _ilogexp(1 * t_range), m))
    c = np.zeros((m, length))
    for j in range(m):
        yh = _fftkernel(y_hist, win[j] / dt)
        c[j] = yh ** 2 - 2 * yh * y_hist + 2 / np.sqrt(2 * np.pi) / win[j] * y_hist
    optws = np.zeros((m, length))
    for i in range(m):
        c_local = np.stack([_fftkernel(c[j], win[i] / dt) for j in range(m)])
        optws[i] = win[np.argmin(c_local, axis=0)]
    tol, a, b, phi = 1e-5, 1e-12, 1.0, (np.sqrt(5) + 1) / 2
    c1, c2 = (phi - 1) * a + (2 - phi) * b, (2 - phi) * a + (phi - 1) * b
    f1 = _cost_function(y_hist, n_count, t, dt, optws, win, c1)[0]
    f2 = _cost_function(y_hist, n_count, t, dt, optws, win, c2)[0]
    yopt, k = None, 1
    while abs(b - a) > tol * (abs(c1) + abs(c2)) and k < 30:
        if f1 < f2:
            b, c2 = c2, c1
            c1 = (phi - 1) * a + (2 - phi) * b
            f2 = f1
            f1, yv, _ = _cost_function(y_hist, n_count, t, dt, optws, win, c1)
        else:
            a, c1 = c1, c2
            c2 = (2 - phi) * a + (phi - 1) * b
            f1 = f2
            f2, yv, _ = _cost_function(y_hist, n_count, t, dt, optws, win, c2)
        yopt = yv / np.sum(yv * dt)
        k += 1
    return None if yopt is None else np.interp(tin, t, yopt)


# ---- MATLAB's findpeaks (documented behaviour) and the loops of imADVISE.m / iComputeSum.m ----
def find_peaks_count(y):
    """findpeaks: samples above both neighbours, a flat top once, never an end sample."""
    count, i = 0, 1
    while i < len(y) - 1:
        if y[i] > y[i - 1]:
            j = i
            while j + 1 < len(y) and y[j + 1] == y[i]:
                j += 1
            if j + 1 < len(y) and y[j + 1] < y[i]:
                count += 1
            i = j + 1
        else:
            i += 1
    return count


def authors_relevance(feature_map, m=10):
    """imADVISE: peakNumber(k) = numel(findpeaks(ADVISEkernel(A(:,:,k)(:), linspace(0,1,Z), 10)))."""
    channels, size = feature_map.shape[0], feature_map[0].size
    tin = np.linspace(0, 1, size)
    peaks = np.zeros(channels, dtype=int)
    for k in range(channels):
        y = advise_kernel(feature_map[k].ravel(), tin, m)   # a density ignores the values' order
        if y is not None:
            peaks[k] = find_peaks_count(y)
    return peaks


def authors_group_maps(feature_map, grads, peaks):
    """{peak count: rescaled ReLU(sum_k mean(dS/dA_k) A_k) over the channels of that count}, at the
    layer's resolution (the authors then resize bicubically; vqi resizes bilinearly)."""
    maps = {}
    for i in range(peaks.min(), peaks.max() + 1):
        keep = peaks == i
        raw = np.maximum(np.einsum("k,khw->hw", grads[keep].sum(axis=(1, 2)) / feature_map[0].size,
                                   feature_map[keep]), 0)
        if keep.any() and raw.sum() > 0:
            maps[i] = (raw - raw.min()) / (raw.max() - raw.min())
    return maps


# ---- the comparison ----
def cluster_channels(seed: int, channels: int, side: int) -> np.ndarray:
    """Channels of 1 to 4 value clusters (sd 0.03) placed in [-0.2, 1.2]: some values lie outside
    [0, 1], where the authors' code does not count them."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(channels):
        centres = rng.uniform(-0.2, 1.2, rng.integers(1, 5))
        out.append(rng.choice(centres, side * side) + rng.normal(0, 0.03, side * side))
    return np.stack(out).reshape(channels, side, side)


def ours_relevance(feature_map: np.ndarray, domain: str) -> tuple[np.ndarray, np.ndarray]:
    """(vqi's densities, peak counts)."""
    samples, inside = channel_samples(torch.from_numpy(feature_map)[None], domain)
    density = adaptive_kde(samples, inside, 10)
    return density.numpy(), count_peaks(density).numpy()


def top_half_bin(feature_map: np.ndarray) -> np.ndarray:
    """Channels holding a value in (1 - dt/2, 1] of their grid, which MATLAB's histc drops and vqi counts."""
    tin = np.linspace(0, 1, feature_map[0].size)
    out = []
    for channel in feature_map:
        counted, grid = _grid(channel, tin)
        dt = np.diff(grid).min() if len(grid) > 1 else 1.0
        out.append(bool(((counted > 1 - dt / 2) & (counted <= 1)).any()))
    return np.array(out)


def compare_relevance(feature_map: np.ndarray, title: str) -> np.ndarray:
    """Prints the comparison; returns the authors' peak counts."""
    authors = authors_relevance(feature_map)
    density, ours = ours_relevance(feature_map, "clip")
    tin = np.linspace(0, 1, feature_map[0].size)
    kernels = [advise_kernel(c.ravel(), tin, 10) for c in feature_map]
    reference = np.stack([np.full(tin.size, np.nan) if y is None else y for y in kernels])
    clean = ~top_half_bin(feature_map)
    diff = np.abs(density - reference)
    rho = spearmanr(authors, ours).statistic
    print(f"{title}: {len(authors)} channels, peak counts authors {np.bincount(authors).tolist()} "
          f"vqi {np.bincount(ours).tolist()}")
    print(f"  relevance equal: {np.mean(authors == ours):.3f} (channels without a value in the top "
          f"half bin: {np.mean((authors == ours)[clean]):.3f} of {clean.sum()}), "
          f"max |peaks diff| {np.abs(authors - ours).max()}, Spearman {rho:.4f}")
    print(f"  density max abs diff: all channels {np.nanmax(diff):.3g}, without top-half-bin values "
          f"{np.nanmax(diff[clean]) if clean.any() else float('nan'):.3g} "
          f"(density peak {np.nanmax(reference):.3g})")
    return authors


def compare_maps(seed: int) -> None:
    """Random A (clustered channels) and dS/dA: the authors' group maps against vqi's chosen one."""
    acts = cluster_channels(seed, 24, 12)
    grads = np.random.default_rng(seed + 1).normal(0, 1, acts.shape)
    peaks = authors_relevance(acts)
    maps = authors_group_maps(acts, grads, peaks)
    cam = AdviseCAM(torch.nn.Identity(), torch.nn.Identity(), domain="clip")
    a, g = torch.from_numpy(acts)[None].float(), torch.from_numpy(grads)[None].float()
    weights = cam.channel_weights(a, g)
    relevance = cam.relevance(a, g)[0]
    chosen = int(relevance[weights[0] != 0][0])
    raw = torch.einsum("uk,ukhw->uhw", weights, a).clamp_min(0)[0].numpy()
    ours = (raw - raw.min()) / (raw.max() - raw.min())
    print(f"maps (seed {seed}): authors' groups (peak count: channels) "
          f"{ {i: int((peaks == i).sum()) for i in maps} }; vqi chooses peak count {chosen} "
          f"({int((weights[0] != 0).sum())} channels); relevance equal: {np.mean(relevance.numpy() == peaks):.3f}")
    if chosen in maps:
        print(f"  max |authors' map - vqi's map| for that group: {np.abs(maps[chosen] - ours).max():.3g}")


def main() -> None:
    torch.set_num_threads(1)
    channels = cluster_channels(0, 48, 12)
    authors = compare_relevance(channels, "clustered channels")
    authors10 = compare_relevance(channels * 10, "the same channels x 10")
    _, minmax = ours_relevance(channels, "minmax")
    _, minmax10 = ours_relevance(channels * 10, "minmax")
    print(f"relevance unchanged by x 10: authors' (values in [0, 1] only) {np.mean(authors == authors10):.3f}; "
          f"vqi domain=minmax {np.mean(minmax == minmax10):.3f} (its counts {np.bincount(minmax).tolist()})")
    low, high = channels.min(axis=(1, 2), keepdims=True), channels.max(axis=(1, 2), keepdims=True)
    scaled = authors_relevance((channels - low) / (high - low))   # every channel's maximum in the top half bin
    print(f"authors' kernel on min-max scaled channels against vqi domain=minmax: relevance equal "
          f"{np.mean(scaled == minmax):.3f}, Spearman {spearmanr(scaled, minmax).statistic:.4f}")
    for seed in (1, 2):
        compare_maps(seed)


if __name__ == "__main__":
    main()
