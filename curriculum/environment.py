"""Typed settings from the environment, each declared once: `Setting` (name, kind, default, rule,
meaning: parsing, its check and its row in the docs come from it) and `EnvReader`, which reads
them and collects every problem. The trainer's settings (trainer/settings.py) and the
curriculum's (curriculum/config.py) are both declared with them."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping


def _finite_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    return value


def _zero_or_one(raw: str) -> bool:
    if raw not in ("0", "1"):
        raise ValueError(raw)
    return raw == "1"


def _peak(raw: str) -> float | str:
    return raw if raw == "warmdown" else _finite_float(raw)


@dataclass(frozen=True)
class Setting:
    """One environment variable, declared once: parsing, its rule, its README row come from here."""
    name: str
    kind: str                          # "int", "float", "bool", "text", or "peak" (a number or 'warmdown')
    default: object                    # a value, or a function of the values read before it
    meaning: str                       # the README's one line
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    shown_default: str = ""            # the README's default where `default` is computed
    field: str = ""                    # the attribute it fills, when not the lower-cased name
    # where it has any effect, any of: "NAME=value", "NAME=prefix*" or "NAME!=value" (value "" for
    # unset); set where none holds, it would be ignored, and is refused (EnvReader.ignored)
    only_with: tuple[str, ...] = ()

    @property
    def attribute(self) -> str:
        return self.field or self.name.lower()

    def rule(self) -> str:
        """What is allowed, in words ("" when any value of the kind is)."""
        shown = (lambda v: str(int(v))) if self.kind == "int" else (lambda v: f"{v:g}")
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.minimum is not None and self.maximum is not None:
            return f"in [{shown(self.minimum)}, {shown(self.maximum)}]"
        if self.minimum is not None:
            return f">= {shown(self.minimum)}"
        return "a number in [0, 1] or 'warmdown'" if self.kind == "peak" else ""

    def problem(self, value) -> str | None:
        """The message for a value that breaks the rule, or None."""
        ok = ((self.choices is None or value in self.choices)
              and (self.minimum is None or isinstance(value, str) or value >= self.minimum)
              and (self.maximum is None or isinstance(value, str) or value <= self.maximum)
              and (self.kind != "peak" or value == "warmdown" or (isinstance(value, float) and 0.0 <= value <= 1.0)))
        return None if ok else f"{self.name}={value!r}: must be {self.rule()}"

    def shown(self) -> str:
        """The default as the README shows it."""
        if self.shown_default:
            return self.shown_default
        if isinstance(self.default, bool):
            return str(int(self.default))
        if self.default == "":
            return "empty"
        return f"`{self.default}`" if isinstance(self.default, str) else f"{self.default:g}" if isinstance(
            self.default, float) else str(self.default)


PARSERS = {"int": (int, "an integer"), "float": (_finite_float, "a finite number"), "bool": (_zero_or_one, "0 or 1"),
           "text": (str, "text"), "peak": (_peak, "a number or 'warmdown'")}


class EnvReader:
    """Reads typed settings from an environment mapping, collecting every problem."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ, self.errors, self.values = environ, [], {}

    def read(self, setting: Setting, check: bool = True):
        """The setting's value (its default when unset or invalid); with `check`, a value that
        breaks the rule is an error here (the curriculum's are checked by its config instead).
        A setting read before is not read again: its value, its problem reported once."""
        if setting.name in self.values:
            return self.values[setting.name]
        raw = (self.environ.get(setting.name) or "").strip()
        default = setting.default(self.values) if callable(setting.default) else setting.default
        value = default
        if raw:
            parse, expected = PARSERS[setting.kind]
            try:
                value = parse(raw)
            except ValueError:
                self.errors.append(f"{setting.name}={raw!r}: must be {expected}")
            else:
                problem = setting.problem(value) if check else None
                if problem:
                    self.errors.append(f"{setting.name}={raw!r}: must be {setting.rule()}")
        self.values[setting.name] = value
        return value

    def holds(self, condition: str) -> bool:
        """Whether a declared condition ("NAME=value", "NAME=prefix*", "NAME!=value") holds for
        the values read (a bool reads as 0 or 1, a number by its value)."""
        negated = "!=" in condition
        name, _, want = condition.partition("!=" if negated else "=")
        have = self.values.get(name, "")
        if isinstance(have, bool):
            have = str(int(have))
        elif isinstance(have, (int, float)):
            have = f"{have:g}"
        same = str(have).startswith(want[:-1]) if want.endswith("*") else str(have) == want
        return same != negated

    def ignored(self, settings: tuple[Setting, ...]) -> list[str]:
        """Every setting given in the environment that none of its `only_with` conditions lets act:
        a value that would be ignored in silence is refused, naming what it needs."""
        out = []
        for st in settings:
            raw = (self.environ.get(st.name) or "").strip()
            if raw and st.only_with and not any(self.holds(c) for c in st.only_with):
                needs = " or ".join(f"{c[:-2]} set" if c.endswith("!=") else c.replace("*", "<...>") for c in st.only_with)
                out.append(f"{st.name}={raw!r}: has no effect without {needs}; unset {st.name}, or set what it needs")
        return out

    def read_all(self, settings: tuple[Setting, ...], check: bool = True) -> dict:
        """{attribute: value} for every setting, in order (a computed default sees those before)."""
        return {st.attribute: self.read(st, check) for st in settings}
