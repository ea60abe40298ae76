"""Locally adaptive kernel density estimation (Shimazaki & Shinomoto 2010) of many rows at once,
and MATLAB-style peak counting: ADVISE's relevance of a channel (docs/metrics.md, "ADVISE").

Each row holds one channel's n values; its density is estimated on the grid linspace(0, 1, n)
with a Gauss kernel whose bandwidth varies along the value axis: for each of M window lengths,
the fixed bandwidth that minimises the L2 risk locally (ADVISE eqs. 5-6); the stiffness
gamma = bandwidth / window picked by golden-section search on the cost of eq. 8, the bandwidths
smoothed by Nadaraya-Watson regression (eq. 7). The steps, grids, candidate bandwidths, search
bounds and iteration cap are those of the authors' `ADVISEkernel.m` (github.com/dehshibi/ADVISE),
re-expressed as batched tensor operations in float64. Two deliberate changes: a value in the top
half bin (1 - dt/2, 1] is counted in the last bin, where MATLAB's `histc` drops it; a density step
at rounding level is flat when peaks are counted.
"""
from __future__ import annotations

import math

import torch

GOLDEN = (math.sqrt(5) + 1) / 2
SEARCH_TOL = 1e-5
SEARCH_STEPS = 29
"""The authors' golden-section search: at most 29 steps (`k < 30`), or until the bracket is
narrower than SEARCH_TOL * (|c1| + |c2|), over gamma in [1e-12, 1]."""
MAX_GRID = 1000
"""A row whose values are sparser than the grid is estimated on a coarser grid of at most this
many points (one per smallest gap between its values), then interpolated back."""
FLAT_TOLERANCE = 1e-12
"""Relative to a row's largest density: differences below it are rounding, not a rise or a fall."""
CHUNK_ELEMENTS = 2 ** 22
"""Rows per batch are bounded so that a rows x grid x grid tensor holds at most this many values."""
SQRT_2PI = math.sqrt(2 * math.pi)


def gauss_spread(grid: torch.Tensor, width: torch.Tensor, per_row: bool) -> torch.Tensor:
    """Rows x grid x grid exp(-(t_k - t_j)^2 / (2 w^2)): the Gauss kernel (eq. 9) without its
    1 / (sqrt(2 pi) w), with w = width[k] (`per_row`, the balloon's) or width[j] (a kernel per point)."""
    factor = -0.5 / width ** 2
    return torch.exp((grid[:, None] - grid[None, :]) ** 2 * (factor[:, :, None] if per_row else factor[:, None, :]))


def grid_sizes(samples: torch.Tensor, inside: torch.Tensor, size: int) -> torch.Tensor:
    """Grid points per row: `size`, or min(ceil(1 / gap), MAX_GRID) where the smallest positive gap
    between the row's counted values exceeds the step of linspace(0, 1, size)."""
    values = torch.where(inside, samples, torch.inf).sort(dim=1).values
    gaps = values.diff(dim=1)
    gap = torch.where((gaps > 0) & gaps.isfinite(), gaps, torch.inf).amin(dim=1)
    step = torch.linspace(0, 1, size, dtype=torch.float64).diff().min().item()
    coarse = gap.isfinite() & (gap > step)
    return torch.where(coarse, torch.ceil(1 / gap).clamp(max=MAX_GRID), float(size)).long()


def histogram(samples: torch.Tensor, inside: torch.Tensor, grid: torch.Tensor, dt: float) -> torch.Tensor:
    """Rows x grid counts per unit length of the counted values in [t_k - dt/2, t_k + dt/2)."""
    edges = (grid - dt / 2).contiguous()
    bins = (torch.bucketize(samples, edges, right=True) - 1).clamp(0, grid.numel() - 1)
    counts = samples.new_zeros((samples.shape[0], grid.numel()))
    return counts.scatter_add_(1, bins, inside.to(counts.dtype)) / dt


def fft_smooth(rows: torch.Tensor, width: float) -> torch.Tensor:
    """Gauss smoothing of `width` grid steps along the last axis, through the FFT zero-padded by
    three widths (the authors' `fftkernel`)."""
    length = rows.shape[-1]
    n = 2 ** math.ceil(math.log2(length + 3 * width))
    freq = torch.fft.rfftfreq(n, dtype=rows.dtype, device=rows.device)
    kernel = torch.exp(-0.5 * (width * 2 * math.pi * freq) ** 2)
    return torch.fft.irfft(torch.fft.rfft(rows, n) * kernel, n)[..., :length]


def candidate_widths(dt: float, count: int, device: torch.device) -> torch.Tensor:
    """`count` window lengths (also the candidate bandwidths) from 5 dt to 1, evenly spaced after
    the inverse of log(1 + e^x)."""
    def softplus_inverse(x: float) -> float:
        return math.log(math.expm1(x)) if x < 100 else x
    spaced = torch.linspace(softplus_inverse(5 * dt), softplus_inverse(1.0), count, dtype=torch.float64, device=device)
    return torch.where(spaced < 100, torch.log(1 + torch.exp(spaced)), spaced)


def local_optimal_widths(hist: torch.Tensor, dt: float, widths: torch.Tensor) -> torch.Tensor:
    """Rows x M x grid: for window i, at each grid point, the bandwidth of `widths` whose L2 risk
    summed over that window (a Gauss window of length widths[i]) is least."""
    risk = []
    for w in widths.tolist():
        smoothed = fft_smooth(hist, w / dt)
        risk.append(smoothed ** 2 - 2 * smoothed * hist + 2 / SQRT_2PI / w * hist)
    risk = torch.stack(risk, dim=1)
    return torch.stack([widths[fft_smooth(risk, win / dt).argmin(dim=1)] for win in widths.tolist()], dim=1)


def balloon(hist: torch.Tensor, grid: torch.Tensor, dt: float, width: torch.Tensor) -> torch.Tensor:
    """Rows x grid balloon estimate: at t_k, the histogram smoothed by a Gauss kernel of width[k]
    (for a constant width and values on the grid: the row's count times its ordinary KDE)."""
    return (gauss_spread(grid, width, per_row=True) @ (hist * dt)[:, :, None])[..., 0] / (SQRT_2PI * width)


def variable_density(hist: torch.Tensor, grid: torch.Tensor, dt: float, windows: torch.Tensor,
                     local_widths: torch.Tensor, gamma: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(cost of eq. 8, rows x grid density scaled to the row's count) for stiffness `gamma` per row."""
    ratio = local_widths / windows[None, :, None]
    g = gamma[:, None]
    above, below = g > ratio.amax(dim=1), g < ratio.amin(dim=1)
    order = torch.arange(windows.numel(), device=hist.device)[None, :, None]
    last = torch.where(ratio >= gamma[:, None, None], order, 0).amax(dim=1)
    fixed = torch.where(above, windows.min(), torch.where(below, windows.max(), g * windows[last]))
    scale = fixed / g   # Nadaraya-Watson regression of the fixed widths (eq. 7), a kernel of width scale[j] per point
    sums = gauss_spread(grid, scale, per_row=False) @ torch.stack([fixed / scale, 1 / scale], dim=-1)
    width = sums[..., 0] / sums[..., 1]
    density = balloon(hist, grid, dt, width)
    count = hist.sum(dim=-1, keepdim=True) * dt
    density = density * count / (density.sum(dim=-1, keepdim=True) * dt)
    cost = ((density ** 2 - 2 * density * hist + 2 / SQRT_2PI / width * hist) * dt).sum(dim=-1)
    return cost, density


def golden_section_density(hist: torch.Tensor, grid: torch.Tensor, dt: float, windows: torch.Tensor
                           ) -> torch.Tensor:
    """Rows x grid unit-mass density at the stiffness found by the authors' golden-section search
    (the density of the last stiffness evaluated, as theirs; NaN where the search never ran)."""
    local = local_optimal_widths(hist, dt, windows)

    def cost(rows: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return variable_density(hist[rows], grid, dt, windows, local[rows], gamma)

    every = torch.arange(hist.shape[0], device=hist.device)
    a, b = torch.full_like(hist[:, 0], 1e-12), torch.ones_like(hist[:, 0])
    c1, c2 = (GOLDEN - 1) * a + (2 - GOLDEN) * b, (2 - GOLDEN) * a + (GOLDEN - 1) * b
    f1, f2 = cost(every, c1)[0], cost(every, c2)[0]
    out = torch.full_like(hist, torch.nan)
    for _ in range(SEARCH_STEPS):
        rows = ((b - a).abs() > SEARCH_TOL * (c1.abs() + c2.abs())).nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        left = f1[rows] < f2[rows]   # the minimum lies in [a, c2]: evaluate a new c1, else a new c2
        na, nb = torch.where(left, a[rows], c1[rows]), torch.where(left, c2[rows], b[rows])
        nc1 = torch.where(left, (GOLDEN - 1) * na + (2 - GOLDEN) * nb, c2[rows])
        nc2 = torch.where(left, c1[rows], (2 - GOLDEN) * na + (GOLDEN - 1) * nb)
        f, density = cost(rows, torch.where(left, nc1, nc2))
        f1[rows], f2[rows] = torch.where(left, f, f2[rows]), torch.where(left, f1[rows], f)
        a[rows], b[rows], c1[rows], c2[rows] = na, nb, nc1, nc2
        out[rows] = density / (density.sum(dim=-1, keepdim=True) * dt)
    return out


def interpolate(grid: torch.Tensor, rows: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear values of `rows` (on `grid`) at `points`, all within [grid[0], grid[-1]]."""
    if grid.numel() == points.numel() and torch.equal(grid, points):
        return rows
    left = (torch.searchsorted(grid, points, right=True) - 1).clamp(0, grid.numel() - 2)
    frac = (points - grid[left]) / (grid[left + 1] - grid[left])
    return rows[:, left] * (1 - frac) + rows[:, left + 1] * frac


def adaptive_kde(samples: torch.Tensor, inside: torch.Tensor, bandwidths: int = 10) -> torch.Tensor:
    """Rows x n samples (those where `inside`, all in [0, 1], are counted) -> rows x n densities on
    linspace(0, 1, n), with `bandwidths` candidate windows; NaN rows where there is none to estimate
    (no counted value, a grid of one point, or n < 3)."""
    samples = samples.to(torch.float64)
    size = samples.shape[1]
    points = torch.linspace(0, 1, size, dtype=torch.float64, device=samples.device)
    out = torch.full_like(samples, torch.nan)
    if size < 3:
        return out   # no grid point between the ends: no density that could have a peak
    sizes = grid_sizes(samples, inside, size)
    for length in sizes.unique().tolist():
        if length < 2:
            continue
        grid = torch.linspace(0, 1, length, dtype=torch.float64, device=samples.device)
        dt = grid.diff().min().item()
        windows = candidate_widths(dt, bandwidths, samples.device)
        for rows in (sizes == length).nonzero().squeeze(1).split(max(1, CHUNK_ELEMENTS // length ** 2)):
            hist = histogram(samples[rows], inside[rows], grid, dt)
            out[rows] = interpolate(grid, golden_section_density(hist, grid, dt, windows), points)
    return out


def count_peaks(rows: torch.Tensor) -> torch.Tensor:
    """Local maxima per row as MATLAB's `findpeaks`: a sample above both neighbours, a flat top
    counted once; the end samples are never peaks. A step smaller than FLAT_TOLERANCE times the
    row's largest value counts as flat, so rounding makes no peak (nor does NaN: none in a NaN row)."""
    step = rows.diff(dim=-1)
    top = rows.nan_to_num(nan=0.0).abs().amax(dim=-1, keepdim=True)
    slope = torch.where(step.abs() > FLAT_TOLERANCE * top, torch.sign(step), 0)
    order = torch.arange(slope.shape[-1], device=rows.device).expand_as(slope)
    # a flat step keeps the slope before it, so a flat top is one rise followed by one fall
    held = slope.gather(-1, torch.where(slope != 0, order, 0).cummax(dim=-1).values)
    return ((held[..., :-1] > 0) & (held[..., 1:] < 0)).sum(dim=-1)
