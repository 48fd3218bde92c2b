"""The one method x backend runner of the studies: which pairs run, with which options, and what
a failure becomes. Every study that explains with several methods on several backends (cases,
census, ground truth, validate, bench) goes through it, so one policy decides the reported numbers.

    pairs(methods, backends)             [(method, backend)] for every backend that has the method
    options_for(method, backend, options)
                                         the options that backend honours: what the method table
                                         (xaibench/backends/table.py, Method.native_only_options)
                                         marks native-only is dropped for the other backends
    Sweep(native_failure="raise" | "record").run(method, backend, explain) -> Outcome

The policy, in one place:
- a backend that is not installed here (BackendUnavailableError) is skipped, with its reason,
  for the rest of the sweep: it is asked once;
- SKIPPABLE errors ("this backend cannot do this model here": not installed, cannot export the
  model, a layer it has no rule for, a missing import) are status "skipped" with the reason;
- any other error of a non-native backend is status "error" with the reason: one failing run is
  a row, not the end of a study;
- a failure of the native engine raises (native_failure="raise": the reference cases and the
  ground truth, whose every number needs the native explanation) or is status "error"
  (native_failure="record": the census and validate, which report per row).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from xaibench.backends import table
from xaibench.errors import BackendUnavailableError, ExportError, InputError, UnsupportedLayerError
from xaibench.explanation import Explanation

#: "this backend cannot do this model here", not "the explanation is wrong"
SKIPPABLE = (BackendUnavailableError, ExportError, UnsupportedLayerError, ImportError)
OK, SKIPPED, ERROR = "ok", "skipped", "error"
NATIVE_FAILURES = ("raise", "record")


def backends() -> tuple[str, ...]:
    """Every backend xaibench.explain knows (the one list: xaibench.api.BACKENDS)."""
    from xaibench import api

    return tuple(api.BACKENDS)


def one_line(error: BaseException, limit: int = 400) -> str:
    """An error as one line, its type first, at most `limit` characters."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:limit]


def pairs(methods: Iterable[str], backends_: Iterable[str]) -> list[tuple[str, str]]:
    """(method, backend) for every backend that has the method, backends outermost; unknown
    methods or backends raise InputError naming them."""
    methods, backends_ = list(methods), list(backends_)
    unknown = [m for m in methods if m not in table.METHODS]
    if unknown:
        raise InputError(f"unknown method(s) {', '.join(unknown)}; methods: {', '.join(table.METHODS)}")
    known = backends()
    bad = [b for b in backends_ if b not in known]
    if bad:
        raise InputError(f"unknown backend(s) {', '.join(bad)}; backends: {', '.join(known)}")
    return [(m, b) for b in backends_ for m in methods if m in table.available(b)]


def options_for(method: str, backend: str, options: Mapping) -> dict:
    """`options` less the ones only the native engine honours, when `backend` is another one."""
    chosen = dict(options)
    if backend != "native":
        for key in table.METHODS[method].native_only_options:
            chosen.pop(key, None)
    return chosen


@dataclass
class Outcome:
    """One (method, backend) run: status "ok" with the explanation, or "skipped"/"error" with the reason."""

    method: str
    backend: str
    status: str
    explanation: Explanation | None = None
    reason: str = ""
    extra: object = None   # whatever the study's explain function returned beside the explanation

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass
class Sweep:
    """Runs explanations under the policy of the module docstring; remembers unavailable backends."""

    native_failure: str = "raise"
    unavailable: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.native_failure not in NATIVE_FAILURES:
            raise ValueError(f"native_failure must be one of {NATIVE_FAILURES}, got {self.native_failure!r}")

    def run(self, method: str, backend: str, explain: Callable[[], object]) -> Outcome:
        """Call `explain()` (returning an Explanation, or (Explanation, extra)) under the policy."""
        if backend in self.unavailable:
            return Outcome(method, backend, SKIPPED, reason=self.unavailable[backend])
        try:
            result = explain()
        except BackendUnavailableError as error:
            if backend == "native" and self.native_failure == "raise":
                raise
            self.unavailable[backend] = one_line(error)
            return Outcome(method, backend, SKIPPED, reason=self.unavailable[backend])
        except SKIPPABLE as error:
            if backend == "native" and self.native_failure == "raise":
                raise
            return Outcome(method, backend, SKIPPED, reason=one_line(error))
        except Exception as error:
            if backend == "native" and self.native_failure == "raise":
                raise
            return Outcome(method, backend, ERROR, reason=one_line(error))
        explanation, extra = result if isinstance(result, tuple) else (result, None)
        return Outcome(method, backend, OK, explanation=explanation, extra=extra)
