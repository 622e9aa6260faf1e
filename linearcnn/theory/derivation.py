"""The SymPy derivation of the linear-CNN energy profile (Chowers & Weiss, ICML 2023, Sec. 4).

Everything numeric in linearcnn that involves the closed form is produced here, symbolically, and
lambdified in `linearcnn.theory.numeric`. Nothing in this module is typed in as a result: each
result is computed by SymPy (`rsolve`, `sympy.stats.E`, `limit`, `series`, `solve`, inequality
solving, `codegen` rewriting) and each computed result is checked by SymPy where a check exists
(substitution residuals that must simplify to 0).

Notation (PAPER.md sections 1-3; one symbol per concept):

    mu      eigenvalue of the patch covariance, a *variance* (PAPER's lambda_i^2)
    eta     gradient-descent step (learning rate); constants from K and the number of
            locations J are absorbed into eta (PAPER Sec. 2)
    t       number of gradient steps (integer >= 0)
    tau     eta * t, the "time" of gradient flow
    c(t)    the mean filter's coordinate along one PCA eigenvector u
    z       u . b, the data-label correlation along u
    s       the scale of z: z ~ N(0, s^2 mu) under random labels (central limit theorem)
    sigma   standard deviation of the initial filters
    K       number of filters
    r       sigma / s, the one extra parameter of the raw-weights profile

The derivation runs once per process (`derive()` is cached) and takes about a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import sympy as sp
from sympy.codegen.rewriting import optimize, optims_c99
from sympy.stats import E as expectation
from sympy.stats import Normal


@dataclass(frozen=True)
class Equation:
    """One displayed equation: a label and a SymPy object (an expression or an `Eq`)."""

    label: str
    expr: sp.Basic


@dataclass(frozen=True)
class Check:
    """A symbolic check: `value` (simplified by SymPy) must equal `expected`."""

    label: str
    value: sp.Basic
    expected: sp.Basic = sp.S.Zero

    @property
    def holds(self) -> bool:
        return bool(sp.simplify(self.value - self.expected) == 0)


@dataclass(frozen=True)
class Step:
    """One step of the derivation, as it is shown by `linearcnn derive`."""

    key: str
    title: str
    text: str
    assumptions: tuple[str, ...] = ()
    equations: tuple[Equation, ...] = ()
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True)
class Derivation:
    """The derivation's steps (for documents) and its results (for numerics and tests)."""

    symbols: dict[str, sp.Symbol]
    steps: tuple[Step, ...]
    results: dict[str, sp.Expr] = field(default_factory=dict)


ASSUMPTIONS = {
    "A": "(A) different patches of one image are uncorrelated, so the moment matrix A of the mean "
    "patches has the patch-PCA eigenvectors u_i and eigenvalues proportional to mu_i "
    "(the constant is absorbed into eta).",
    "B": "(B) labels are uncorrelated with the PCA coefficients of the images (exact for random "
    "labels), so z_i = u_i . b is a finite-sample correlation: by the central limit theorem "
    "z_i ~ N(0, s^2 mu_i), independent across i.",
    "C": "(C) many patches, zero-mean patches (patch second moment = covariance).",
    "D": "(D) the initial filters are i.i.d. N(0, sigma^2 I), independent of the data and labels; "
    "their projections a_k = w_k(0) . u_i are i.i.d. N(0, sigma^2) because u_i is a unit vector.",
}


@lru_cache(maxsize=1)
def derive() -> Derivation:
    """Run the whole derivation once (cached) and return its steps and results."""
    mu, eta, s, sigma, tau = sp.symbols("mu eta s sigma tau", positive=True)
    K = sp.Symbol("K", positive=True, integer=True)
    r = sp.Symbol("r", nonnegative=True)
    t = sp.Symbol("t", integer=True, nonnegative=True)
    c0, z = sp.symbols("c_0 z", real=True)
    x = sp.Symbol("x", positive=True)  # eta * mu
    p = sp.Symbol("p", positive=True)  # parametrises |1 - eta*mu| = 1 / (1 + p) < 1
    c = sp.Function("c")
    symbols = {"mu": mu, "eta": eta, "s": s, "sigma": sigma, "tau": tau, "K": K, "r": r, "t": t, "c0": c0, "z": z, "x": x}
    steps: list[Step] = []
    results: dict[str, sp.Expr] = {}

    # 1. The model and the per-component recurrence ------------------------------------------
    recurrence = sp.Eq(c(t + 1), c(t) - eta * (mu * c(t) - z))
    steps.append(
        Step(
            key="model",
            title="Model and per-component recurrence",
            text=(
                "One convolution layer of K filters w_k (stride 1), then a global average pool over "
                "all locations and filters gives the scalar f(x) = wbar . pbar(x), with wbar the mean "
                "filter and pbar(x) the mean patch of image x. The loss is the mean squared error, "
                "minimised by full-batch gradient descent with step eta; only the filters are trained. "
                "Every filter receives the same gradient, so w_k(t) = w_k(0) + (wbar(t) - wbar(0)) and "
                "wbar(t+1) = wbar(t) - eta (A wbar(t) - b). In the eigenbasis of A, each coordinate "
                "c(t) = u . wbar(t) follows its own scalar recurrence."
            ),
            assumptions=(ASSUMPTIONS["A"], ASSUMPTIONS["C"]),
            equations=(Equation("recurrence", recurrence),),
        )
    )

    # 2. Solve it ----------------------------------------------------------------------------------
    solution = sp.rsolve(recurrence.lhs - recurrence.rhs, c(t), {c(0): c0})
    residual = sp.simplify(solution.subs(t, t + 1) - (solution - eta * (mu * solution - z)))
    initial_residual = sp.simplify(solution.subs(t, 0) - c0)
    growth = sp.simplify(1 - (1 - eta * mu) ** t)
    deviation = sp.factor(sp.simplify(solution - c0))
    deviation_form = (z / mu - c0) * growth
    deviation_residual = sp.simplify(deviation - deviation_form)
    results.update(solution=solution, growth=growth, deviation=deviation_form)
    steps.append(
        Step(
            key="solution",
            title="Solution of the recurrence (sympy.rsolve)",
            text=(
                "rsolve gives c(t) with c(0) = c_0 and z symbolic. The filters move from their "
                "initialisation by d(t) = c(t) - c_0, which factors into the target z/mu minus the "
                "initial value, times the growth factor g(t) = 1 - (1 - eta mu)^t. Checked by "
                "substituting the solution back into the recurrence and the initial condition."
            ),
            equations=(
                Equation("c(t)", sp.Eq(c(t), solution)),
                Equation("d(t) = c(t) - c_0", sp.Eq(sp.Symbol("d(t)"), deviation)),
                Equation("g(t)", sp.Eq(sp.Symbol("g(t)"), growth)),
            ),
            checks=(
                Check("c(t+1) - [c(t) - eta (mu c(t) - z)]", residual),
                Check("c(0) - c_0", initial_residual),
                Check("d(t) - (z/mu - c_0) g(t)", deviation_residual),
            ),
        )
    )

    # 3. Random-label expectation: the Thm 4.2 profile -------------------------------------------
    z_rv = Normal("z", 0, s * sp.sqrt(mu))
    g_sym = sp.Symbol("g", positive=True)
    deviation_rv = (z_rv / mu) * g_sym  # sigma -> 0: c_0 -> 0
    rms = sp.sqrt(sp.simplify(expectation(deviation_rv**2)))
    mean_abs = sp.simplify(expectation(sp.Abs(z_rv)) * g_sym / mu)
    ratio = sp.simplify(mean_abs / rms)
    profile = sp.simplify(sp.sqrt(mu) * growth / mu)
    results.update(profile=profile, profile_rms=rms.subs(g_sym, growth), abs_to_rms=ratio)
    steps.append(
        Step(
            key="random_labels",
            title="Random-label expectation: the energy profile (Thm 4.2)",
            text=(
                "With init-subtracted weights (or sigma -> 0, so c_0 -> 0) every filter's projection on u "
                "is d(t) = (z/mu) g(t). Under random labels z is Gaussian with standard deviation "
                "proportional to sqrt(mu). sympy.stats gives the root-mean-square and the mean absolute "
                "value of d; their ratio is a constant (free of mu, eta and t), so both give the same "
                "profile up to a constant, which Pearson correlation ignores. A single run scatters "
                "around it (a folded Gaussian)."
            ),
            assumptions=(ASSUMPTIONS["B"],),
            equations=(
                Equation("sqrt(E[d^2])", sp.Eq(sp.Symbol("rms"), rms)),
                Equation("E|d|", sp.Eq(sp.Symbol("E|d|"), mean_abs)),
                Equation("E|d| / sqrt(E[d^2])", sp.Eq(sp.Symbol("ratio"), ratio)),
                Equation("profile e(mu; eta, t)", sp.Eq(sp.Symbol("e"), profile)),
            ),
            checks=(Check("d(ratio)/d(mu)", sp.simplify(sp.diff(ratio, mu))),),
        )
    )

    # 4. The initialisation term: raw weights ------------------------------------------------------
    abar_rv = Normal("abar", 0, sigma / sp.sqrt(K))
    deviation_init_rv = (z_rv / mu - abar_rv) * g_sym
    # (1/K) sum_k (a_k + d)^2 = (1/K) sum_k a_k^2 + 2 d abar + d^2, and E[(1/K) sum a_k^2] = sigma^2
    raw_energy_sq = sp.expand(
        sp.simplify(sigma**2 + expectation(2 * deviation_init_rv * abar_rv + deviation_init_rv**2))
    )
    raw_energy_sq_large_k = sp.limit(raw_energy_sq, K, sp.oo)
    raw_profile_g = sp.sqrt(sp.expand(sp.simplify(raw_energy_sq_large_k / s**2)).subs(sigma, r * s))
    raw_profile = raw_profile_g.subs(g_sym, growth)
    # g = 1 - (1 - eta mu)^t lies in [0, 2) for 0 < eta mu < 2 (Sec. 6); g_sym is declared positive.
    raw_zero_init = sp.simplify(raw_profile_g.subs(r, 0) - sp.sqrt(mu) * g_sym / mu)
    results.update(
        raw_energy_sq=raw_energy_sq.subs(g_sym, growth),
        raw_profile=raw_profile,
        raw_profile_in_growth=raw_profile_g,
    )
    steps.append(
        Step(
            key="init_term",
            title="Initialisation term: the profile of raw (not init-subtracted) weights",
            text=(
                "Filters share the gradient, so filter k keeps its own initial deviation: "
                "w_k(t) . u = a_k + d(t), with d(t) = (z/mu - abar) g(t) and abar the mean of the a_k. "
                "Expanding (1/K) sum_k (a_k + d)^2 = (1/K) sum_k a_k^2 + 2 d abar + d^2 and taking the "
                "expectation over a_k ~ N(0, sigma^2), abar ~ N(0, sigma^2/K) and z gives the expected "
                "squared energy exactly, for any K. For many filters (K -> oo) it is s^2 (g^2/mu + r^2), "
                "r = sigma/s: one more parameter. r = 0 gives back the init-subtracted profile."
            ),
            assumptions=(ASSUMPTIONS["B"], ASSUMPTIONS["D"]),
            equations=(
                Equation("E[e^2] (any K)", sp.Eq(sp.Symbol("E[e^2]"), raw_energy_sq)),
                Equation("K -> oo", sp.Eq(sp.Symbol("E[e^2]_inf"), raw_energy_sq_large_k)),
                Equation("raw profile", sp.Eq(sp.Symbol("e_raw"), raw_profile)),
            ),
            checks=(Check("e_raw(r = 0) - e", raw_zero_init),),
        )
    )

    # 5. Limits --------------------------------------------------------------------------------------
    # 5a. gradient flow: eta -> 0 with tau = eta t fixed.
    flow_factor = sp.limit((1 - eta * mu) ** (tau / eta), eta, 0)
    flow_profile = (1 - flow_factor) / sp.sqrt(mu)
    flow_raw_profile = raw_profile_g.subs(g_sym, 1 - flow_factor)
    results.update(gradient_flow_profile=flow_profile, raw_gradient_flow_profile=flow_raw_profile)
    # 5b. t -> oo for 0 < eta mu < 2: |1 - eta mu| = 1/(1 + p) < 1 and |(1 - eta mu)^t| = (1/(1+p))^t.
    decay_limit = sp.limit((1 / (1 + p)) ** t, t, sp.oo)
    q_t = sp.Symbol("Q")  # stands for (1 - eta mu)^t
    whitening = sp.limit((sp.sqrt(mu) * (1 - q_t) / mu), q_t, decay_limit)
    whitening_raw = sp.simplify(raw_profile_g.subs(g_sym, 1 - decay_limit))
    whitening_cov = sp.simplify(expectation((z_rv / mu) ** 2) / s**2)
    results.update(whitening_profile=whitening, whitening_raw_profile=whitening_raw)
    # 5c. early regime: small tau mu (gradient flow) and small eta mu (discrete, t fixed).
    early_flow = sp.series(flow_profile, tau, 0, 2).removeO()
    early_discrete = sp.simplify(sp.series(1 - (1 - x) ** t, x, 0, 2).removeO().subs(x, eta * mu) / sp.sqrt(mu))
    results.update(early_profile=early_flow, early_discrete_profile=early_discrete)
    # 5d. the maximum of the gradient-flow profile over mu.
    d_flow = sp.diff(flow_profile, mu)
    stationary = sp.simplify((d_flow * 2 * mu ** sp.Rational(3, 2) * sp.exp(tau * mu)).subs(mu, x / tau))
    roots = [root for root in sp.solve(sp.Eq(stationary, 0), x) if root.is_positive]
    if len(roots) != 1:
        raise RuntimeError(f"expected one positive stationary point, SymPy found {roots}")
    x_star = roots[0]
    x_star_value = sp.N(x_star, 30)
    second = sp.N(sp.diff(flow_profile, mu, 2).subs(mu, x_star / tau).subs(tau, 1), 20)
    max_residual = sp.N((2 * x * sp.exp(-x) - (1 - sp.exp(-x))).subs(x, x_star), 30)
    results.update(x_star=x_star, x_star_value=x_star_value, stationary_condition=stationary)
    steps.append(
        Step(
            key="limits",
            title="Limits (sympy.limit, sympy.series, sympy.solve)",
            text=(
                "Gradient flow: eta -> 0 with tau = eta t fixed turns (1 - eta mu)^t into exp(-tau mu), "
                "a one-parameter family in tau. Whitening (Thm 4.3): for 0 < eta mu < 2, |1 - eta mu| "
                "= 1/(1+p) with p > 0, so |(1 - eta mu)^t| = (1/(1+p))^t -> 0 and the profile tends to "
                "1/sqrt(mu): E[d d^T] is proportional to C^{-1}, the filter bank whitens. With raw weights "
                "the limit keeps the floor r^2. Early training (tau mu << 1) the profile is tau sqrt(mu): "
                "the bank follows the data's own spectrum. The gradient-flow profile peaks at "
                "tau mu = x*, the positive root of the stationary condition, where the second derivative "
                "is negative (a maximum)."
            ),
            equations=(
                Equation("eta -> 0, tau = eta t", sp.Eq(sp.Symbol("lim (1-eta*mu)^(tau/eta)"), flow_factor)),
                Equation("gradient-flow profile", sp.Eq(sp.Symbol("e_flow"), flow_profile)),
                Equation("t -> oo: |1-eta*mu|^t", sp.Eq(sp.Symbol("lim (1/(1+p))^t"), decay_limit)),
                Equation("whitening limit", sp.Eq(sp.Symbol("e_inf"), whitening)),
                Equation("whitening limit, raw weights", sp.Eq(sp.Symbol("e_raw_inf"), whitening_raw)),
                Equation("E[d^2]/s^2 at t -> oo", sp.Eq(sp.Symbol("var_inf"), whitening_cov)),
                Equation("early regime, gradient flow", sp.Eq(sp.Symbol("e_early"), early_flow)),
                Equation("early regime, discrete", sp.Eq(sp.Symbol("e_early_gd"), early_discrete)),
                Equation("stationary condition (x = tau mu)", sp.Eq(stationary, 0)),
                Equation("x*", sp.Eq(sp.Symbol("x*"), x_star)),
                Equation("x* (numeric)", sp.Eq(sp.Symbol("x*"), sp.Float(x_star_value, 16))),
            ),
            checks=(
                Check("2 x* e^-x* - (1 - e^-x*)", sp.Integer(0) if abs(max_residual) < 1e-25 else sp.Float(max_residual, 3)),
                Check("sign of d^2 e/dmu^2 at x* (tau = 1)", sp.sign(second), sp.Integer(-1)),
            ),
        )
    )

    # 6. Divergence -------------------------------------------------------------------------------
    stable_region = sp.solve_univariate_inequality(sp.Abs(1 - x) < 1, x, relational=False)
    results.update(stable_region=stable_region)
    steps.append(
        Step(
            key="divergence",
            title="Divergence condition",
            text=(
                "(1 - eta mu)^t stays bounded and tends to 0 exactly when |1 - eta mu| < 1. SymPy solves "
                "the inequality: 0 < eta mu < 2. At eta mu = 2 the factor is (-1)^t (period-2 oscillation, "
                "no limit) and for eta mu > 2 it grows geometrically: gradient descent diverges. "
                "The numeric code refuses eta * max(mu) >= 2."
            ),
            equations=(Equation("convergent region of x = eta mu", stable_region),),
        )
    )

    # 7. Numerically stable form ----------------------------------------------------------------
    # (1 - x)^t = exp(t log(1 - x)); SymPy's C99 rewriting turns 1 - exp(.) and log(1 - .) into
    # -expm1(.) and log1p(-.), exact where the naive form cancels (x -> 0 or t x -> 0). For
    # 1 < x < 2 the base is negative: (1 - x)^t = (-1)^t exp(t log(1 + (x - 2))), integer t only;
    # for even t the same rewriting removes the cancellation as x -> 2.
    growth_x = 1 - sp.exp(t * sp.log(1 - x))
    stable_small = optimize(growth_x, optims_c99)
    magnitude = sp.exp(t * sp.log(1 + (x - 2)))  # |1 - x|^t for 1 < x < 2
    stable_even = optimize(1 - magnitude, optims_c99)
    stable_odd = optimize(1 + magnitude, optims_c99)
    stable_growth = sp.Piecewise(
        (0, sp.Eq(t, 0)),
        (stable_small, x <= 1),
        (stable_even, sp.Eq(sp.Mod(t, 2), 0)),
        (stable_odd, True),
    )
    identity_small = sp.simplify(sp.expand_func(stable_small.rewrite(sp.exp)) - growth_x)
    # Checks on 1 < x < 2 with x - 1 = y > 0 and t = 2m (even) or 2m + 1 (odd):
    y, m = sp.Symbol("y", positive=True), sp.Symbol("m", integer=True, positive=True)

    def branch_residual(branch: sp.Expr, steps: sp.Expr) -> sp.Expr:
        rewritten = sp.expand_func(branch.rewrite(sp.exp)).subs({x: y + 1, t: steps})
        return sp.simplify(rewritten - (1 - (-y) ** steps))

    identity_even = branch_residual(stable_even, 2 * m)
    identity_odd = branch_residual(stable_odd, 2 * m + 1)
    stable_flow_profile = optimize(flow_profile, optims_c99)
    results.update(stable_growth=stable_growth, stable_gradient_flow_profile=stable_flow_profile)
    steps.append(
        Step(
            key="stable_form",
            title="Numerically stable form (sympy.codegen rewriting)",
            text=(
                "For the numeric code the growth factor is rewritten symbolically with x = eta mu: "
                "exp/log are replaced by expm1/log1p, which keeps full float64 precision where "
                "1 - (1 - x)^t cancels (x down to 1e-15, t up to 1e15). For 1 < x < 2 the negative base "
                "is written as (-1)^t |1 - x|^t (integer t), rewritten the same way for even t. "
                "These expressions are what `lambdify` turns into the numpy and torch functions of linearcnn.formula_profile."
            ),
            equations=(
                Equation("stable growth factor g(x, t)", sp.Eq(sp.Symbol("g"), stable_growth)),
                Equation("stable gradient-flow profile", sp.Eq(sp.Symbol("e_flow"), stable_flow_profile)),
            ),
            checks=(
                Check("stable form (x <= 1) - (1 - (1-x)^t)", identity_small),
                Check("stable form (1 < x < 2, even t) - (1 - (1-x)^t)", identity_even),
                Check("stable form (1 < x < 2, odd t) - (1 - (1-x)^t)", identity_odd),
            ),
        )
    )
    return Derivation(symbols=symbols, steps=tuple(steps), results=results)
