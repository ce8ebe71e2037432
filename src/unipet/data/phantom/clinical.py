"""Phantom patients: demographics and body habitus, and the simulated survival outcome.

Outcome model (proportional hazards, Weibull baseline). With the *true* tumour burden of the baseline
study — metabolic tumour volume ``MTV`` (mL), total lesion glycolysis ``TLG`` (SUV·mL) and the lesion
``SUVmax`` (all 0 for a lesion-free study), computed from the true lesion mask and the noise-free SUV —
the linear predictor is::

    eta = 0.25 log(1 + MTV) + 0.10 log(1 + TLG) + 0.20 log(1 + SUVmax)
          + 0.20 (age - 60) / 10 + beta_task + Z,           Z ~ N(0, 0.3²) (unexplained frailty)

    beta_task = {lung_cancer: 0.40, melanoma: 0.25, lymphoma: 0.0, breast_cancer: -0.20}

The event time is Weibull with shape ``k = 1.2`` and hazard ``h(t) = LAMBDA0 · k t^(k-1) · exp(eta)``,
``LAMBDA0 = 120^-k`` (a burden-free 60-year-old of the reference task has a characteristic survival time of
120 months), drawn by inversion: ``T = (-log U / (LAMBDA0 exp(eta)))^(1/k)``. Censoring is the earlier of
administrative censoring at 60 months and loss to follow-up ~ Exponential(mean 150 months); the observed
``time`` is ``min(T, C)`` in months and ``event = 1`` when ``T <= C``. Hence the hazard grows strictly with
every burden measure, and a segmentation that misses tumour burden loses prognostic signal.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TASKS: tuple[str, ...] = ("lung_cancer", "lymphoma", "melanoma", "breast_cancer")

OUTCOME_COEFFICIENTS: dict[str, float] = {"log1p_mtv": 0.25, "log1p_tlg": 0.10, "log1p_suv_max": 0.20,
                                          "age_per_decade": 0.20, "frailty_sd": 0.3}
TASK_EFFECT: dict[str, float] = {"lung_cancer": 0.40, "melanoma": 0.25, "lymphoma": 0.0, "breast_cancer": -0.20}
WEIBULL_SHAPE = 1.2
WEIBULL_SCALE_MONTHS = 120.0
ADMIN_CENSOR_MONTHS = 60.0
DROPOUT_MEAN_MONTHS = 150.0

# (mean, sd) of age in years, and the probability of a male patient, per cancer type.
_AGE = {"lung_cancer": (67, 9), "lymphoma": (56, 15), "melanoma": (61, 13), "breast_cancer": (58, 12)}
_P_MALE = {"lung_cancer": 0.55, "lymphoma": 0.55, "melanoma": 0.55, "breast_cancer": 0.0}


@dataclass(frozen=True)
class Subject:
    """One phantom patient's habitus.

    Attributes:
        sex: ``"M"`` or ``"F"``. age: years. height_m: m. weight_kg: kg.
        subcut_fat_mm: trunk subcutaneous fat thickness (mm). visceral_fat_mm: extra abdominal girth from visceral fat.
        frame: lateral frame scale (1 = reference man); depth: antero-posterior frame scale.
        breast_size: 0 (male) … ~1.5 (large breasts).
        brown_fat: whether activated brown fat shows in this patient.
    """

    sex: str
    age: float
    height_m: float
    weight_kg: float
    subcut_fat_mm: float
    visceral_fat_mm: float
    frame: float
    depth: float
    breast_size: float
    brown_fat: bool

    @property
    def bmi(self) -> float:
        return self.weight_kg / self.height_m ** 2


def sample_subject(rng: np.random.Generator, task: str) -> Subject:
    """Draw a patient for a cancer type (age and sex mix by type; breast-cancer patients are women)."""
    male = rng.random() < _P_MALE.get(task, 0.5)
    mean, sd = _AGE.get(task, (60, 12))
    age = float(np.clip(rng.normal(mean, sd), 18, 90))
    height = float(np.clip(rng.normal(1.77 if male else 1.64, 0.07 if male else 0.065), 1.50, 2.00))
    bmi = float(np.clip(np.exp(rng.normal(np.log(25.5), 0.16)), 17.0, 42.0))
    weight = bmi * height ** 2
    subcut = float(np.clip(6.0 + 1.6 * (bmi - 20.0) + (6.0 if not male else 0.0) + rng.normal(0, 2.5), 3.0, 65.0))
    visceral = float(np.clip((2.2 if male else 1.3) * (bmi - 22.0) + rng.normal(0, 3), 0.0, 60.0))
    frame = float(np.clip(rng.normal(1.0 if male else 0.92, 0.04) * (height / (1.77 if male else 1.64)) ** 0.5, 0.8, 1.15))
    depth = float(np.clip(frame * rng.normal(1.0, 0.04), 0.8, 1.15))
    breast = 0.0 if male else float(np.clip(0.5 + 0.07 * (bmi - 22.0) + rng.normal(0, 0.2), 0.2, 1.6))
    brown = bool(rng.random() < (0.12 if bmi < 24 and age < 50 else 0.03))
    return Subject("M" if male else "F", round(age, 1), round(height, 3), round(weight, 1), subcut, visceral,
                   frame, depth, breast, brown)


def outcome_log_hazard(mtv_ml, tlg, suv_max, age, task) -> np.ndarray:
    """Linear predictor ``eta`` of the outcome model without frailty (arrays broadcast; task a name or names)."""
    c = OUTCOME_COEFFICIENTS
    tasks = np.atleast_1d(np.asarray(task, dtype=object))
    beta_task = np.array([TASK_EFFECT.get(str(t), 0.0) for t in tasks.ravel()]).reshape(tasks.shape)
    eta = (c["log1p_mtv"] * np.log1p(np.asarray(mtv_ml, dtype=np.float64))
           + c["log1p_tlg"] * np.log1p(np.asarray(tlg, dtype=np.float64))
           + c["log1p_suv_max"] * np.log1p(np.asarray(suv_max, dtype=np.float64))
           + c["age_per_decade"] * (np.asarray(age, dtype=np.float64) - 60.0) / 10.0 + beta_task)
    return np.asarray(eta, dtype=np.float64)


def simulate_outcome(mtv_ml, tlg, suv_max, age, task, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``(time_months, event)`` arrays from the outcome model of the module docstring.

    Args:
        mtv_ml, tlg, suv_max: true burden (mL, SUV·mL, SUV); 0 for lesion-free studies.
        age: years. task: cancer-type name(s). rng: the random stream (draws U, frailty and censoring).
    """
    eta = outcome_log_hazard(mtv_ml, tlg, suv_max, age, task)
    eta = eta + rng.normal(0.0, OUTCOME_COEFFICIENTS["frailty_sd"], eta.shape)
    lam0 = WEIBULL_SCALE_MONTHS ** -WEIBULL_SHAPE
    u = rng.random(eta.shape)
    t_event = (-np.log1p(-u) / (lam0 * np.exp(eta))) ** (1.0 / WEIBULL_SHAPE)
    t_censor = np.minimum(ADMIN_CENSOR_MONTHS, rng.exponential(DROPOUT_MEAN_MONTHS, eta.shape))
    time = np.maximum(np.minimum(t_event, t_censor), 0.1)
    return np.round(time, 2), (t_event <= t_censor).astype(np.int64)
