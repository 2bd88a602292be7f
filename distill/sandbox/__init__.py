"""Running model-written code: the bubblewrap sandbox, its seccomp filter and the process bookkeeping."""
