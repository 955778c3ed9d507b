"""The LMS sampler without scipy.

diffusers' ``LMSDiscreteScheduler`` integrates its linear-multistep coefficients with
``scipy.integrate.quad``, and diffusers hides the class behind a placeholder when scipy is not
installed (it is not in requirements.txt). The integrand is a Lagrange basis polynomial of
degree ``order - 1`` (at most 3), so Gauss-Legendre quadrature with 4 nodes integrates it
exactly (Katherine Crowson's k-diffusion ``linear_multistep_coeff`` is the same integral).
Everything else is diffusers' class unchanged, under the same name.
"""

from __future__ import annotations

import numpy as np
from diffusers.schedulers.scheduling_lms_discrete import LMSDiscreteScheduler as _DiffusersLMS

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(4)


class LMSDiscreteScheduler(_DiffusersLMS):
    def get_lms_coefficient(self, order: int, t: int, current_order: int) -> float:
        sigmas = [float(s) for s in self.sigmas]
        lower, upper = sigmas[t], sigmas[t + 1]
        taus = 0.5 * (upper - lower) * _NODES + 0.5 * (upper + lower)
        basis = np.ones_like(taus)
        for k in range(order):
            if k == current_order:
                continue
            basis *= (taus - sigmas[t - k]) / (sigmas[t - current_order] - sigmas[t - k])
        return float(0.5 * (upper - lower) * np.dot(_WEIGHTS, basis))
