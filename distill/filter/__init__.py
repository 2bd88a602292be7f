"""The filter stage: rejection sampling with verifiers, dedupe, decontamination and mixing."""
