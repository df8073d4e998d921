"""gftlib.eval.statistics and the claim rule: tests against scipy, Holm, and Monte Carlo error rates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from gftlib.eval import statistics as S
from gftlib.experiments.claims import apply_holm, compare_claim


def test_two_sample_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.0, 1.0, 6), rng.normal(0.5, 2.0, 6)
    w = S.two_sample(a, b, paired=False)
    ref = st.ttest_ind(a, b, equal_var=False)
    assert w["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert w["diff"] == pytest.approx(a.mean() - b.mean())
    half = (w["ci"][1] - w["ci"][0]) / 2
    assert half == pytest.approx(st.t.ppf(0.975, w["df"]) * w["se"])
    p = S.two_sample(a, b, paired=True)
    ref = st.ttest_rel(a, b)
    assert p["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    d = a - b
    assert p["effect_size"] == pytest.approx(d.mean() / d.std(ddof=1))
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    assert w["effect_size"] == pytest.approx((a.mean() - b.mean()) / pooled * (1 - 3 / (4 * 12 - 9)))


def test_degenerate_designs() -> None:
    one = S.two_sample([1.0], [2.0], paired=True)
    assert one["p"] is None and one["ci"] is None
    same = S.two_sample([26.0, 26.0, 26.0], [26.0, 26.0, 26.0], paired=True)
    assert same["p"] == 1.0 and same["effect_size"] == 0.0
    shift = S.two_sample([24.0, 25.0, 26.0], [26.0, 27.0, 28.0], paired=True)  # every seed: -2
    # zero variance: the exact sign-flip test (2 of 2^3 flips are as extreme), never the t-test's p = 0
    assert shift["p"] == pytest.approx(2 / 2**3) and shift["effect_size"] == -math.inf
    with pytest.raises(ValueError, match="paired=True needs one value per seed"):
        S.two_sample([1.0, 2.0], [1.0, 2.0, 3.0], paired=True)
    with pytest.raises(ValueError, match="a must be a non-empty 1-D list of finite numbers"):
        S.two_sample([1.0, float("nan")], [1.0, 2.0], paired=False)


def test_holm_known_values() -> None:
    adj = S.holm([0.01, 0.04, 0.03, 0.005, None])
    assert adj[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adj[4] is None
    with pytest.raises(ValueError, match="p-values must be numbers in"):
        S.holm([1.2])


def test_tost_against_one_sided_tests() -> None:
    a, b = np.array([1.0, 1.1, 0.95, 1.02]), np.array([1.01, 1.05, 0.97, 1.0])
    r = S.tost(a, b, margin=0.1, better="lower", paired=True)
    d = a - b
    lo = st.ttest_1samp(d, -0.1, alternative="greater").pvalue
    hi = st.ttest_1samp(d, 0.1, alternative="less").pvalue
    assert r["p_equivalent"] == pytest.approx(max(lo, hi))
    assert r["p_worse"] == pytest.approx(st.ttest_1samp(d, 0.1, alternative="greater").pvalue)
    with pytest.raises(ValueError, match="margin must be a finite number > 0"):
        S.tost(a, b, margin=0.0, better="lower", paired=True)


def test_verdict_signs() -> None:
    kw = {"kind": "difference", "p_adjusted": 0.01}
    assert S.verdict(better="lower", diff=-1.0, **kw) == "reproduced"
    assert S.verdict(better="higher", diff=-1.0, **kw) == "not reproduced"
    assert S.verdict(better="lower", diff=-1.0, kind="difference", p_adjusted=0.2) == "inconclusive"
    assert S.verdict(better="lower", diff=-1.0, kind="difference", p_adjusted=None) == "inconclusive"
    assert S.verdict(better="lower", diff=0.3, kind="equivalence", p_adjusted=0.5,
                     p_worse_adjusted=0.01) == "not reproduced"
    assert S.verdict(better="lower", diff=0.0, kind="equivalence", p_adjusted=0.01) == "reproduced"


def _family(rng: np.random.Generator, n_rows: int, n_seeds: int, delta: float,
            margin: float) -> list[dict]:
    """A family of claim rows whose true GFT - baseline difference is ``delta`` (difference rows)
    or exactly the margin (equivalence rows: the least favourable null); a strong shared seed effect."""
    rows = []
    for j in range(n_rows):
        seed_effect = rng.normal(0.0, 3.0, n_seeds)
        kind = "equivalence" if j % 4 == 3 else "difference"
        paired = j % 2 == 0
        shift = margin if kind == "equivalence" else delta
        base = seed_effect + rng.normal(0.0, 1.0, n_seeds)
        gft = seed_effect + shift + rng.normal(0.0, 1.0, n_seeds)
        if not paired:  # independent runs: no shared seed effect
            gft = shift + rng.normal(0.0, 1.0, n_seeds)
            base = rng.normal(0.0, 1.0, n_seeds)
        rows.append(compare_claim("c", "m", "lower", gft, base, gft_method="gft", baseline_method="ft",
                                  scenario=f"s{j}", figure="", paired=paired, kind=kind,
                                  margin=margin if kind == "equivalence" else None))
    return rows


def test_family_wise_error_rate_under_the_null() -> None:
    """No true difference anywhere: P(any verdict other than inconclusive) <= alpha (+ 3 binomial SE)."""
    rng = np.random.default_rng(12345)
    alpha, reps = 0.05, 1000
    errors = 0
    for _ in range(reps):
        rows = apply_holm(_family(rng, n_rows=12, n_seeds=5, delta=0.0, margin=0.8), alpha=alpha)
        errors += any(r["verdict"] != "inconclusive" for r in rows)
    se = math.sqrt(alpha * (1 - alpha) / reps)
    assert errors / reps <= alpha + 3 * se


def test_uncorrected_rule_would_exceed_alpha() -> None:
    """Control: without Holm, 12 rows at alpha each give a family-wise rate far above alpha."""
    rng = np.random.default_rng(7)
    reps, alpha, hits = 300, 0.05, 0
    for _ in range(reps):
        rows = _family(rng, n_rows=12, n_seeds=5, delta=0.0, margin=0.8)
        hits += any(r["p_raw"] < alpha for r in rows if r["kind"] == "difference")
    rate = hits / reps
    assert rate > alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps)


def test_power_with_a_real_difference() -> None:
    """Every row has a true paired effect d_z = 2 (n = 8 seeds): the empirical power per row is at
    least Bonferroni's analytic power (Holm is uniformly more powerful), within 3 binomial SE."""
    rng = np.random.default_rng(99)
    n_rows, n, dz, alpha, reps = 4, 8, 2.0, 0.05, 200
    hits = total = 0
    for _ in range(reps):
        rows = []
        for j in range(n_rows):
            base = rng.normal(0.0, 1.0, n)
            gft = base - dz + rng.normal(0.0, 1.0, n)  # d = gft - base ~ N(-dz, 1)
            rows.append(compare_claim("c", "m", "lower", gft, base, gft_method="gft",
                                      baseline_method="ft", scenario=f"s{j}", figure="", paired=True))
        rows = apply_holm(rows, alpha=alpha)
        hits += sum(r["verdict"] == "reproduced" for r in rows)
        total += n_rows
    crit = st.t.ppf(1 - alpha / n_rows / 2, n - 1)
    ncp = dz * math.sqrt(n)
    analytic = st.nct.sf(crit, n - 1, ncp)
    power = hits / total
    assert analytic > 0.8
    assert power >= analytic - 3 * math.sqrt(analytic * (1 - analytic) / total)


def _sign_flip_p(d: np.ndarray) -> float:
    """Two-sided exact sign-flip p-value of mean(d), by enumeration."""
    import itertools

    obs = abs(d.mean())
    flips = [abs((d * np.array(sig)).mean()) >= obs - 1e-12
             for sig in itertools.product((1.0, -1.0), repeat=d.size)]
    return float(np.mean(flips))


def test_zero_variance_uses_the_exact_randomization_test() -> None:
    # dopri5 NFE 20 vs 26 on all five seeds: the t-test would say p = 0; sign flips say 2/32
    gft, base = [20.0] * 5, [26.0] * 5
    paired = S.two_sample(gft, base, paired=True)
    assert paired["p"] == pytest.approx(_sign_flip_p(np.array(gft) - np.array(base))) == 0.0625
    assert S.verdict(kind="difference", better="lower", diff=paired["diff"],
                     p_adjusted=S.holm([paired["p"]])[0]) == "inconclusive"
    welch = S.two_sample(gft, base, paired=False)  # 2 of C(10, 5) = 252 relabellings are as extreme
    assert welch["p"] == pytest.approx(2 / math.comb(10, 5))
    # TOST with constant differences: inside the margin both one-sided tests take the exact p
    eq = S.tost([1.0, 1.1, 1.2, 1.3, 1.4], [1.0, 1.1, 1.2, 1.3, 1.4], margin=0.5, better="lower",
                paired=True)
    assert eq["p_equivalent"] == pytest.approx(0.5**5) and eq["p_worse"] == 1.0
    far = S.tost([2.0] * 5, [1.0] * 5, margin=0.5, better="lower", paired=True)  # worse by 1 > 0.5
    assert far["p_equivalent"] == 1.0 and far["p_worse"] == pytest.approx(0.5**5)


def _equivalence_rows(rng: np.random.Generator, n_rows: int, n_seeds: int, delta: float, margin: float,
                      paired: bool, noise: float = 1.0) -> list[dict]:
    """Equivalence claim rows (lower is better) whose true GFT - baseline difference is ``delta``."""
    rows = []
    for j in range(n_rows):
        seed_effect = rng.normal(0.0, 3.0, n_seeds) if paired else np.zeros(n_seeds)
        base = seed_effect + rng.normal(0.0, noise, n_seeds)
        gft = seed_effect + delta + rng.normal(0.0, noise, n_seeds)
        rows.append(compare_claim("c", "m", "lower", gft, base, gft_method="gft", baseline_method="ft",
                                  scenario=f"s{j}", figure="", paired=paired, kind="equivalence",
                                  margin=margin))
    return rows


@pytest.mark.parametrize(("paired", "n_seeds"), [(True, 3), (False, 5)])
def test_equivalence_at_the_margin_is_declared_at_most_alpha(paired: bool, n_seeds: int) -> None:
    """True difference exactly +-margin (the least favourable point of H0: |delta| >= margin): the rate of
    "equivalent" verdicts (``reproduced`` on an equivalence row) is at most alpha within 3 binomial SE,
    for one row (its two hypotheses Holm-corrected) and for a family of 8 rows (family-wise). At
    delta = +margin (GFT worse by exactly the margin) "worse by more than the margin" (``not
    reproduced``) is the other null boundary: also at most alpha. Control: the same family without
    Holm (any raw TOST p < alpha) exceeds alpha, so the Monte Carlo can see a wrong rule."""
    rng = np.random.default_rng(2024 + n_seeds + 10 * paired)
    # noise small against the margin: TOST is then close to its nominal level (with a standard error
    # comparable to the margin it is very conservative and the test below would be weak)
    alpha, margin, noise, reps = 0.05, 0.8, 0.25, 1000
    se = math.sqrt(alpha * (1 - alpha) / reps)
    for delta in (margin, -margin):
        single = [apply_holm(_equivalence_rows(rng, 1, n_seeds, delta, margin, paired, noise), alpha=alpha)[0]
                  for _ in range(reps)]
        assert np.mean([r["verdict"] == "reproduced" for r in single]) <= alpha + 3 * se
        if delta > 0:
            assert np.mean([r["verdict"] == "not reproduced" for r in single]) <= alpha + 3 * se
    fam_reps = 300
    fam_se = math.sqrt(alpha * (1 - alpha) / fam_reps)
    hits = raw_hits = 0
    for _ in range(fam_reps):
        rows = _equivalence_rows(rng, 8, n_seeds, margin, margin, paired, noise)
        raw_hits += any(r["p_raw"] < alpha for r in rows)
        hits += any(r["verdict"] == "reproduced" for r in apply_holm(rows, alpha=alpha))
    assert hits / fam_reps <= alpha + 3 * fam_se
    assert raw_hits / fam_reps > alpha + 3 * fam_se


def test_equivalence_is_declared_when_it_holds() -> None:
    """Control (the rule is not 'always inconclusive'): true difference 0 and noise small against the
    margin: the rate of "equivalent" verdicts is at least TOST's analytic power (normal approximation
    bounded below by the t quantile), within 3 binomial SE, and "worse" is never declared."""
    rng = np.random.default_rng(31)
    alpha, margin, n, noise, reps = 0.05, 0.8, 5, 0.1, 300
    rows = [apply_holm(_equivalence_rows(rng, 1, n, 0.0, margin, True, noise=noise), alpha=alpha)[0]
            for _ in range(reps)]
    rate = np.mean([r["verdict"] == "reproduced" for r in rows])
    # d = gft - base ~ N(0, 2 noise^2); TOST rejects when |mean d| + t_{1-alpha/2, n-1} se < margin (Holm over
    # the row's 2 hypotheses: the smaller p is compared with alpha / 2). Lower bound: se at its 99.9 % quantile.
    sd = math.sqrt(2) * noise
    se_hi = sd * math.sqrt(st.chi2.ppf(0.999, n - 1) / (n - 1)) / math.sqrt(n)
    room = margin - st.t.ppf(1 - alpha / 2, n - 1) * se_hi
    analytic = (2 * st.norm.cdf(room / (sd / math.sqrt(n))) - 1) - 0.001
    assert analytic > 0.9
    assert rate >= analytic - 3 * math.sqrt(analytic * (1 - analytic) / reps)
    assert not any(r["verdict"] == "not reproduced" for r in rows)


def test_every_claim_row_names_its_baseline() -> None:
    """A row without a named baseline (or GFT form) is refused, so no summary row can omit it."""
    kw = dict(gft_method="gft-coupling", scenario="s", figure="", paired=True)
    row = compare_claim("c", "m", "lower", [1.0, 2.0], [1.5, 2.5], baseline_method="ft-ot", **kw)
    assert row["baseline_method"] == "ft-ot"
    for bad in ("", None):
        with pytest.raises(ValueError, match="baseline_method must be a non-empty string"):
            compare_claim("c", "m", "lower", [1.0, 2.0], [1.5, 2.5], baseline_method=bad, **kw)
