"""The verifiers: one module each (math, rules, language, code, judge), `Verdict` and the registry of names."""
