"""The faults-and-invariants table: each fault test records what it injected and what it checked."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Check:
    invariant: str
    held: bool
    evidence: str
    asserted: bool = True


@dataclass
class FaultRun:
    """One fault test: the faults injected, the invariants checked, and how the test ended."""

    test: str
    fault: str
    injected: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    outcome: str = "not run"
    seconds: float = 0.0

    def inject(self, what: str) -> None:
        """Note one fault as it is injected (kind, target, when, how long)."""
        self.injected.append(what)

    def check(self, invariant: str, held: bool, evidence: str = "") -> None:
        """Record an invariant and fail the test at once when it does not hold."""
        self.checks.append(Check(invariant, bool(held), evidence, asserted=True))
        if not held:
            raise AssertionError(f"invariant violated: {invariant}: {evidence}")

    def observe(self, invariant: str, held: bool, evidence: str = "") -> None:
        """Record an invariant without failing the test: a known, intermittent or elsewhere-asserted issue."""
        self.checks.append(Check(invariant, bool(held), evidence, asserted=False))


RUNS: list[FaultRun] = []


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def _held(check: Check) -> str:
    if check.held:
        return "yes" if check.asserted else "yes (observed)"
    return "**NO**" if check.asserted else "**NO** (observed, not asserted)"


def markdown_table(runs: list[FaultRun]) -> str:
    """One row per invariant; the fault, what was injected and the outcome on its first row."""
    lines = [
        "| fault | injected | invariant | held | evidence | test |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        injected = "; ".join(run.injected) or "(none: the test stopped before injecting)"
        checks = run.checks or [Check("(none checked)", False, "")]
        for i, check in enumerate(checks):
            first = i == 0
            lines.append(
                "| "
                + " | ".join(
                    _cell(cell)
                    for cell in (
                        run.fault if first else "",
                        injected if first else "",
                        check.invariant,
                        _held(check),
                        check.evidence,
                        f"{run.outcome} ({run.seconds:.0f} s)" if first else "",
                    )
                )
                + " |"
            )
    return "\n".join(lines)
