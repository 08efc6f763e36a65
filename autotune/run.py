"""Tune one op at one shape: pick the evaluator (measured on a device, or modeled on a
profile), seed the search with the op's default and the cost model's best guesses, and key
the study so op calls find the result."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tilec.errors import TilecError
from tilec.space import Space
from tilec.tuning.keys import TuningKey

from . import confirm as confirm_mod
from . import encoding

SEED_COUNT = 3          # cost-model guesses tried first
RANK_LIMIT = 20000      # rank at most this many configs with the cost model


def resolve_op(op):
    """An OpSpec, or its name in ``ops.REGISTRY``."""
    if not isinstance(op, str):
        return op
    try:
        import ops
        registry = ops.REGISTRY
    except (ImportError, AttributeError):
        raise TilecError("the op library (ops.REGISTRY) is not available in this build") from None
    if op not in registry:
        raise TilecError(f"unknown op {op!r}; known ops: {sorted(registry)}")
    return registry[op]


def load_profile(name: str | None):
    if name is None:
        return None
    try:
        import hw_profiles
    except ImportError:
        raise TilecError(f"hardware profile {name!r} asked for, but hw_profiles is not installed") from None
    return hw_profiles.load(name)


def _host_profile():
    """The calibrated host profile when the profiles package has one (else constraints see None)."""
    try:
        import hw_profiles
        return hw_profiles.load("host")
    except Exception:
        return None


def check_shape(op, shape: dict) -> dict:
    names = tuple(getattr(op, "shape_names", ()) or ())
    if names and set(shape) != set(names):
        raise TilecError(f"{op.name} needs shape dimensions {list(names)}, got {sorted(shape)}")
    for k, v in shape.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise TilecError(f"shape dimension {k}={v!r} must be a positive integer")
    return dict(shape)


def cost_model_seeds(op, shape: dict, dtype: str, space: Space, profile, k: int = SEED_COUNT) -> list[dict]:
    """The ``k`` configs the analytical model ranks fastest (none when it is not installed)."""
    if profile is None:
        return []
    try:
        from .evaluators.modeled import from_cost_model
        model = from_cost_model(op, shape, dtype, profile)
    except TilecError:
        return []
    scored = []
    for i, cfg in enumerate(space.configs(profile)):
        if i >= RANK_LIMIT:
            break
        try:
            scored.append((model(cfg).runtime_s, i, cfg))
        except TilecError:
            continue
    return [cfg for _, _, cfg in sorted(scored)[:k]]


def default_backend(device: str | None, profile) -> str:
    from tilec import backends
    if profile is not None:
        for name in getattr(profile, "backends", ()) or ():
            if name in backends.names():
                return name
        return "triton"
    return backends.default_for("cpu" if device in (None, "cpu") else device)


def _earlier(store, study_name: str) -> tuple[int, list[dict]]:
    """(distinct configs evaluated, exact shapes tuned) of a study, (0, []) if there is none."""
    import optuna

    from .report import evaluated_trials
    try:
        study = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        return 0, []
    evaluated = {encoding.config_id(t.user_attrs["config"]) for t in evaluated_trials(study)}
    return len(evaluated), list(study.user_attrs.get("shapes", []))


def tune_op(op, shape: dict, dtype: str = "float32", *, device: str | None = "cpu", profile: str | None = None,
            backend: str | None = None, n_evals: int = 30, strategy: str = "tpe", storage: Any = None,
            seed: int | None = None, repeats: int = 5, warmup: int = 1, objective: str = "time",
            use_seeds: bool = True, confirm: int = confirm_mod.TOP, force: bool = False,
            progress: Callable[[dict], None] | None = None):
    """Tune ``op`` at ``shape``; measured on ``device`` or, with ``profile``, modeled there.
    Measured on the CPU, each config's runs are paired with runs of the op's default, which
    cancels the machine's drift (see evaluators/measured.py). A measured tune for time ends by
    re-measuring its ``confirm`` fastest configs against each other (see confirm.py; 0 or 1
    skips that).

    The study is the shape's bucket's (tilec/tuning/keys.py): when it already holds ``n_evals``
    configs from other shapes nothing runs and ``result.reused_from`` lists those shapes;
    ``force`` tunes ``n_evals`` configs more in any case. The exact shapes tuned are kept in
    the study."""
    from tilec.tuning import database
    from .evaluators.measured import MeasuredEvaluator
    from .evaluators.modeled import from_cost_model
    from .tuner import tune

    op = resolve_op(op)
    shape = check_shape(op, shape)
    if dtype not in op.dtypes:
        raise TilecError(f"{op.name} takes dtypes {list(op.dtypes)}, not {dtype!r}")
    prof = load_profile(profile)
    backend = backend or default_backend(device, prof)
    default = op.default_config(shape, backend)
    # what the shape decides (e.g. the head size, padded): other values fail or waste lanes
    space = op.space(backend).fix({k: default[k] for k in op.extra.get("fixed_by_shape", ())})
    if prof is not None:
        key = TuningKey.make(op.name, shape, dtype, backend, f"profile:{prof.name}")
        evaluator = from_cost_model(op, shape, dtype, prof)
        space = space.extend([], [evaluator.constraint])
    else:
        device = device or "cpu"
        prof = _host_profile() if device == "cpu" else None
        key = TuningKey.make(op.name, shape, dtype, backend, device)
        # on the CPU (a shared VM whose speed drifts) each run is paired with the op's default
        baseline = default if device == "cpu" and not space.reasons(default, prof) else None
        evaluator = MeasuredEvaluator(op, shape, dtype, backend, device, repeats=repeats, warmup=warmup,
                                      baseline=baseline)
    seeds = []
    if use_seeds:
        seeds = cost_model_seeds(op, shape, dtype, space, prof) + [default]
    store = database.open_storage(storage)
    before, shapes = _earlier(store, key.study_name if objective == "time" else f"{key.study_name}|objective={objective}")
    if force:
        n_evals += before
    result = tune(space, evaluator, n_evals=n_evals, key=key, storage=store, strategy=strategy, seed=seed,
                  seeds=seeds, profile=prof, objective=objective, progress=progress)
    if shape not in shapes:
        if result.evaluated_now == 0:
            result.reused_from = shapes
        else:
            result.study.set_user_attr("shapes", shapes + [shape])
    if isinstance(evaluator, MeasuredEvaluator) and objective == "time" and confirm > 1:
        confirmed = confirm_mod.confirm_best(result.study, store, evaluator, key.as_dict(), k=confirm)
        if confirmed:
            result.best_config, result.best_value = confirmed
            result.confirmed = True
            database.forget()
    return result, key
