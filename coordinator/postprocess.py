"""Post-processing of noisy tables: consistent, non-negative, with intervals and suppression.

All of it is post-processing of differentially private output, so it costs no privacy budget
(Dwork & Roth 2014, Prop. 2.1).

**Consistency.** Tables of one measure whose dimensions nest (tickets by institution type x
discipline, by discipline, in total; by region and nationally) are estimates of the same
underlying cells. We find the finest table of each such family and estimate its cells x as the
weighted least-squares fit to *all* tables of the family, each weighted by its inverse noise
variance (Hay et al. 2010, "Boosting the accuracy of differentially private histograms through
consistency"), under x >= 0. Every released table is then the corresponding sum of x, so
children add up to parents exactly and no count is negative. The fit uses every table's
evidence: each cell is at least as accurate as the table it came from, usually more.

Because every table sums the finest one over whole axes, the normal matrix is diagonal in a
per-axis mean/contrast basis, so the unconstrained fit and its covariance are exact and cost
O(2^d n) for d dimensions and n cells. Where that fit has negative cells, the constrained one is
continued by accelerated projected gradient (FISTA, Beck & Teboulle 2009).

**Intervals.** For families of up to ``EXACT_LIMIT`` cells, the 95% half-width of each released
cell comes from the exact covariance of the unconstrained weighted least-squares estimate
(A_t (sum_s w_s A_s^T A_s)^-1 A_t^T); above that we keep each table's own noise half-width, a
conservative bound (the fit never has larger variance than the table alone). The non-negativity
step only moves estimates towards the truth's feasible set; its small bias is measured by
``benchmarks/accuracy.py``.

**Agreement.** The fit assumes every table of a family counts the same cells. Contribution
bounding can break that: a cap of 32 tickets per customer and cell in one table and of 64 in
another (or a customer cut to fewer cells in the finer table) make them count different things.
Before a family is fitted, its tables' disagreement is measured: the weighted residual sum of
squares of the unconstrained fit, which for tables of the same cells is chi-squared with (cells
of all tables - cells of the finest) degrees of freedom. Beyond its 99.99% point
(Wilson-Hilferty, a little conservative at few degrees of freedom) the family is split,
greedily from the finest table, into groups that agree (often each table alone), and each
table's note says why. A family of tables that agree is split this way at most once in 10,000
families (that only costs the fit's gain). The test's power depends on the family's size: one
cell eight noise standard deviations off is caught nearly always at 15 degrees of freedom,
five standard deviations about a third of the time (0.61 at 5 degrees of freedom, 0.02 at 100);
a difference spread over many cells, as caps make, adds up and is caught much sooner. Tables of
different institutions (a node refused one table, or dropped out of one secure round) are
never fitted together in the first place.

**Suppression.** A cell whose estimate is below ``suppress_below`` times its half-width is not
reliably different from zero: it is marked suppressed and shown without a value. (Readers can
still subtract siblings from a parent; suppression is about reliability, not privacy, which the
noise already provides.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privacy.intervals import sum_half_width
from protocols.messages import ADDITIVE_OVER, PER_CUSTOMER_YEAR, Dimension

EXACT_LIMIT = 50_000
_Z95 = sum_half_width([1.0], 0.95)  # 1.959963...
# The standard normal's upper 1e-4 point: tables that count the same cells are taken apart
# once in 10,000 families.
_Z_AGREE = 3.719016485

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class NoisyTable:
    analysis_id: str
    measure: str
    dimensions: tuple[Dimension, ...]
    values: FloatArray  # noisy sums, row-major over the dimensions' keys
    variance: float  # noise variance of every cell
    years: tuple[int, int] = (0, 0)  # the period the table counts (first, last year)
    # The institutions whose data the table sums: tables of different institutions count
    # different things and are never fitted together.
    contributors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Estimate:
    analysis_id: str
    values: FloatArray  # consistent, non-negative
    half_width: FloatArray  # 95% interval half-width per cell
    family: tuple[str, ...]  # the tables fitted together (one: no consistency partner)
    exact_intervals: bool
    # Tables that would have been fitted with this one but disagree beyond their noise, and
    # how much (empty when there were none).
    not_fitted_with: tuple[str, ...] = ()
    disagreement: str = ""  # why, in words
    disagreement_test: str = ""  # the test's figures (chi-squared, degrees of freedom, limit)


class _Family:
    """The finest table's cells and how every table of the family sums them."""

    def __init__(self, finest: NoisyTable, members: list[NoisyTable]) -> None:
        self.finest = finest
        self.members = members
        self.names = [d.name for d in finest.dimensions]
        self.shape = tuple(len(d.keys) for d in finest.dimensions)
        self.size = math.prod(self.shape)

    def _axes(self, t: NoisyTable) -> tuple[tuple[int, ...], list[int]]:
        kept = [self.names.index(d.name) for d in t.dimensions]
        summed = tuple(i for i in range(len(self.names)) if i not in kept)
        return summed, kept

    def apply(self, t: NoisyTable, x: FloatArray) -> FloatArray:
        """A_t x: the table's cells as sums of the finest cells."""
        summed, kept = self._axes(t)
        cube = x.reshape(self.shape).sum(axis=summed) if summed else x.reshape(self.shape)
        order = sorted(range(len(kept)), key=lambda i: kept[i])  # axes left in finest order
        # ``cube`` has the kept axes in finest order; bring them into the table's order.
        perm = [order.index(i) for i in range(len(kept))]
        return np.asarray(np.transpose(cube, perm).reshape(-1), dtype=np.float64)

    def adjoint(self, t: NoisyTable, y: FloatArray) -> FloatArray:
        """A_t^T y: spread each table cell back over the finest cells it sums."""
        summed, kept = self._axes(t)
        table_shape = tuple(len(d.keys) for d in t.dimensions)
        cube = y.reshape(table_shape)
        # Reorder the table's axes into finest order, then broadcast over the summed axes.
        order = sorted(range(len(kept)), key=lambda i: kept[i])
        cube = np.transpose(cube, order)
        expand_shape = [self.shape[i] if i not in summed else 1 for i in range(len(self.shape))]
        full = np.broadcast_to(cube.reshape(expand_shape), self.shape)
        return np.asarray(full.reshape(-1), dtype=np.float64)

    def cells_per_row(self, t: NoisyTable) -> int:
        summed, _ = self._axes(t)
        return math.prod(self.shape[i] for i in summed)


def _compatible(finest: NoisyTable, t: NoisyTable) -> bool:
    """Is ``t`` the sum of ``finest`` over some of its dimensions?"""
    if t.measure != finest.measure or t.years != finest.years:
        return False
    if sorted(t.contributors) != sorted(finest.contributors):
        return False
    keys = {d.name: d.keys for d in finest.dimensions}
    if not all(d.name in keys and keys[d.name] == d.keys for d in t.dimensions):
        return False
    summed = set(keys) - {d.name for d in t.dimensions}
    # Only where the measure adds up over what is summed out (bookers over disciplines do not:
    # one booker of two disciplines is in both cells but once in the total).
    if not summed <= ADDITIVE_OVER.get(t.measure, frozenset()):
        return False
    # A booker's age band and new/returning key are set per year: over a period
    # of several years one booker can be in two age bands but is once in a table without them,
    # unless the year itself is kept apart.
    spans_years = t.years[0] != t.years[1] and "year" not in {d.name for d in t.dimensions}
    return not (spans_years and summed & PER_CUSTOMER_YEAR)


def families(tables: list[NoisyTable]) -> list[_Family]:
    """Group tables: the largest table first, with every smaller one that is its marginal."""
    left = sorted(tables, key=lambda t: (-t.values.size, t.analysis_id))
    out = []
    while left:
        finest = left.pop(0)
        members = [finest] + [t for t in left if _compatible(finest, t)]
        left = [t for t in left if t not in members]
        out.append(_Family(finest, members))
    return out


def _eigenvalue(family: _Family, weights: list[float], means: frozenset[int]) -> float:
    """H = sum_t w_t A_t^T A_t is diagonal in the per-axis mean/contrast decomposition.

    On an axis a table sums over, A_t^T A_t acts as the all-ones matrix J (eigenvalue k on the
    axis's mean, 0 on its contrasts); on an axis it keeps, as the identity.
    """
    total = 0.0
    for w, t in zip(weights, family.members, strict=True):
        summed, _ = family._axes(t)
        factor = 1.0
        for a in summed:
            factor *= family.shape[a] if a in means else 0.0
        total += w * factor
    return total


def _inverse(family: _Family, weights: list[float], vectors: FloatArray) -> FloatArray:
    """H^-1 applied to the columns of ``vectors`` (n x m), exactly, in O(2^d n m)."""
    d = len(family.shape)
    m = vectors.shape[1]
    cube = vectors.reshape((*family.shape, m))
    out = np.zeros_like(cube)
    for mask in range(2**d):
        means = frozenset(a for a in range(d) if mask >> a & 1)
        part = cube
        for a in range(d):
            mean = part.mean(axis=a, keepdims=True)
            part = np.broadcast_to(mean, part.shape) if a in means else part - mean
        out += part / _eigenvalue(family, weights, means)
    return np.asarray(out.reshape(family.size, m), dtype=np.float64)


def _weights(family: _Family) -> list[float]:
    return [1.0 / t.variance for t in family.members]


def _rhs(family: _Family, weights: list[float]) -> FloatArray:
    return sum(
        (w * family.adjoint(t, t.values) for w, t in zip(weights, family.members, strict=True)),
        start=np.zeros(family.size),
    )


def _unconstrained(family: _Family) -> FloatArray:
    """argmin_x sum_t w_t ||A_t x - y_t||^2, exactly."""
    weights = _weights(family)
    return _inverse(family, weights, _rhs(family, weights).reshape(-1, 1))[:, 0]


def chi2_upper_point(df: int, z: float = _Z_AGREE) -> float:
    """The chi-squared quantile with ``df`` degrees of freedom at the normal's upper ``z`` point,
    by Wilson and Hilferty's cube-root approximation (within a few percent at df >= 1)."""
    c = 2.0 / (9.0 * df)
    return df * (1.0 - c + z * math.sqrt(c)) ** 3


def disagreement(family: _Family) -> tuple[float, int]:
    """(weighted residual sum of squares of the unconstrained fit, its degrees of freedom).

    If every table sums the same finest cells and carries independent Gaussian noise of its
    stated variance, this is chi-squared with (all tables' cells - the finest table's cells)
    degrees of freedom: the finest table alone determines the fit's n cells.
    """
    x = _unconstrained(family)
    weights = _weights(family)
    stat = sum(
        w * float(np.sum((family.apply(t, x) - t.values) ** 2))
        for w, t in zip(weights, family.members, strict=True)
    )
    df = sum(t.values.size for t in family.members) - family.size
    return stat, df


def _fit(family: _Family, iterations: int = 3000) -> FloatArray:
    """argmin_{x >= 0} sum_t w_t ||A_t x - y_t||^2.

    The unconstrained minimum is exact (``_inverse``). Only if it has negative cells do we
    continue, from its projection, with projected gradient (FISTA) under the constraint.
    """
    weights = _weights(family)
    rhs = _rhs(family, weights)
    x = _unconstrained(family)
    if x.min() >= 0:
        return x
    # Lipschitz constant of the gradient: 2 * the largest eigenvalue of H.
    d = len(family.shape)
    lipschitz = 2.0 * max(
        _eigenvalue(family, weights, frozenset(a for a in range(d) if mask >> a & 1))
        for mask in range(2**d)
    )

    def gradient(v: FloatArray) -> FloatArray:
        g = np.zeros(family.size)
        for w, t in zip(weights, family.members, strict=True):
            g += w * family.adjoint(t, family.apply(t, v))
        return np.asarray(2.0 * (g - rhs), dtype=np.float64)

    x = np.maximum(x, 0.0)
    z, theta = x.copy(), 1.0
    for _ in range(iterations):
        x_next = np.maximum(z - gradient(z) / lipschitz, 0.0)
        theta_next = (1.0 + math.sqrt(1.0 + 4.0 * theta * theta)) / 2.0
        z = x_next + ((theta - 1.0) / theta_next) * (x_next - x)
        done = np.max(np.abs(x_next - x)) < 1e-9 * (1.0 + np.max(np.abs(x_next)))
        x, theta = x_next, theta_next
        if done:
            break
    return x


def _exact_half_widths(family: _Family) -> dict[str, FloatArray]:
    """95% half-widths from diag(A_t H^-1 A_t^T) of the unconstrained fit."""
    weights = _weights(family)
    out = {}
    for t in family.members:
        cells = t.values.size
        variances = np.empty(cells)
        for start in range(0, cells, 256):  # columns in chunks: bounded memory
            stop = min(cells, start + 256)
            unit = np.zeros((cells, stop - start))
            unit[np.arange(start, stop), np.arange(stop - start)] = 1.0
            columns = np.stack([family.adjoint(t, unit[:, j]) for j in range(stop - start)], axis=1)
            solved = _inverse(family, weights, columns)
            variances[start:stop] = np.einsum("ij,ij->j", columns, solved)
        out[t.analysis_id] = _Z95 * np.sqrt(np.maximum(variances, 0.0))
    return out


def post_process(tables: list[NoisyTable]) -> dict[str, Estimate]:
    """Consistent, non-negative estimates of every table, with 95% half-widths."""
    out: dict[str, Estimate] = {}
    for whole in families(tables):
        names = tuple(t.analysis_id for t in whole.members)
        for family, (why, test) in _agreeing(whole):
            x = _fit(family)
            exact = family.size <= EXACT_LIMIT and len(family.members) > 1
            widths = _exact_half_widths(family) if exact else {}
            fitted = tuple(t.analysis_id for t in family.members)
            for t in family.members:
                own = np.full(t.values.size, _Z95 * math.sqrt(t.variance))
                out[t.analysis_id] = Estimate(
                    analysis_id=t.analysis_id,
                    values=family.apply(t, x),
                    half_width=widths.get(t.analysis_id, own),
                    family=fitted,
                    exact_intervals=exact,
                    not_fitted_with=tuple(n for n in names if n not in fitted),
                    disagreement=why,
                    disagreement_test=test,
                )
    return out


def _agrees(family: _Family) -> tuple[bool, str]:
    stat, df = disagreement(family)
    limit = chi2_upper_point(df)
    names = ", ".join(t.analysis_id for t in family.members)
    return stat <= limit, (
        f"{names} together: chi-squared {stat:,.0f} on {df} degrees of freedom; its 99.99% point"
        f" is {limit:,.0f}"
    )


def _agreeing(whole: _Family) -> list[tuple[_Family, tuple[str, str]]]:
    """The family split into groups whose tables agree within their noise (usually one group).

    Greedy, finest table first: a table joins the group when the group still agrees with it.
    Each group comes with why it was not fitted with the others, in words and as the test's
    figures (both empty when the family agrees).
    """
    if len(whole.members) == 1 or _agrees(whole)[0]:
        return [(whole, ("", ""))]
    left = list(whole.members)  # finest first
    groups: list[_Family] = []
    test = ""
    while left:
        finest = left.pop(0)
        kept = [finest]
        for t in list(left):
            if not _compatible(finest, t):
                continue
            ok, detail = _agrees(_Family(finest, [*kept, t]))
            if ok:
                kept.append(t)
                left.remove(t)
            elif not test:
                test = detail
        groups.append(_Family(finest, kept))
    # The institutions are the same (``_compatible``), so what differs is what each table
    # kept of each customer: its contribution bounds.
    why = (
        "the tables differ by more than their noise allows, so they count different things:"
        " most likely their caps per customer differ, and each keeps a different part of the"
        " heaviest buyers"
    )
    return [(g, (why, test)) for g in groups]


def suppressed(values: FloatArray, half_width: FloatArray, below: float) -> npt.NDArray[np.bool_]:
    """Cells not reliably different from zero at the plan's threshold (in half-widths)."""
    return np.asarray(values < below * half_width, dtype=np.bool_)
