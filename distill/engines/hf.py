"""The transformers engine: batched sampling with left padding, for CPUs and small GPUs."""

from collections.abc import Iterator, Sequence

from distill.engines.base import Request, Result, Sampling, set_logprobs
from distill.engines.chat import render_chat
from distill.errors import DistillError, MissingDependency
from distill.models import model_label, resolve_model


def pick_device(device: str | None) -> str:
    import torch  # torch: seconds to import; only where a model runs

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str):
    """bf16 on GPU; fp32 on CPU, where bf16 matmuls are ~25x slower on AVX2 machines like ours."""
    import torch  # torch: seconds to import; only where a model runs

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    except KeyError:
        raise DistillError(f"unknown dtype `{dtype}`: use auto, float32, float16 or bfloat16") from None


def render_prompt(tokenizer, request: Request) -> str:
    """The chat template's text for the request, with the prefill appended after the generation prompt."""
    text = render_chat(tokenizer, request.messages, tokenize=False, add_generation_prompt=True)
    return text + request.prefill


class TransformersEngine:
    def __init__(self, model, tokenizer, batch_size: int = 8, model_name: str = "model"):
        self.model = model
        self.model_name = model_name
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.tokenizer.padding_side = "left"  # decoder-only models must be padded on the left to sample
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_positions = getattr(model.config, "max_position_embeddings", None) or 10**9

    @classmethod
    def from_config(cls, config) -> "TransformersEngine":
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer  # imports torch; only where a model runs
        except ImportError as exc:
            raise MissingDependency("transformers", 'pip install "distill[train]"') from exc
        path = resolve_model(config.model)
        device = pick_device(config.device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(config.dtype, device))
        except OSError as exc:
            raise DistillError(
                f"cannot load model `{config.model}`: not a local folder, known alias or cached Hugging Face id"
                f" ({str(exc).splitlines()[0]})"
            ) from None
        return cls(model.to(device).eval(), tokenizer, config.batch_size, model_label(config.model))

    def generate(self, requests: Sequence[Request], sampling: Sampling) -> Iterator[tuple[int, Result]]:
        texts = [render_prompt(self.tokenizer, r) for r in requests]
        lengths = [len(self.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
        todo = []
        for i, n in enumerate(lengths):
            if n >= self.max_positions:
                error = f"context_length: prompt has {n} tokens, the model takes {self.max_positions}"
                yield i, Result(error=error, prompt_tokens=n)
            else:
                todo.append(i)
        # Batch prompts of similar length together: less padding, less wasted compute.
        todo.sort(key=lambda i: lengths[i])
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            yield from zip(batch, self._generate_batch([texts[i] for i in batch], sampling), strict=True)

    def _generate_batch(self, texts: list[str], sampling: Sampling) -> list[Result]:
        import torch  # torch: seconds to import; only where a model runs

        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(self.model.device)
        width = enc.input_ids.shape[1]
        max_new = max(1, min(sampling.max_tokens, self.max_positions - width))
        kwargs = dict(max_new_tokens=max_new, pad_token_id=self.tokenizer.pad_token_id)
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
            if sampling.min_p:
                kwargs.update(min_p=sampling.min_p)
        else:
            kwargs.update(do_sample=False)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        if sampling.logprobs:  # the raw logits of every step (`scores` would be after temperature and top-p)
            kwargs.update(output_logits=True, return_dict_in_generate=True)
        with torch.no_grad():
            out = self.model.generate(**enc, **kwargs)
        tops = None
        if sampling.logprobs:
            # (batch, steps, k): the top-k of each step's log-softmax, taken step by step so that the batch's
            # steps x vocabulary logits are never stacked into one tensor
            k = min(sampling.logprobs, out.logits[0].size(-1))
            steps = [torch.log_softmax(step.float(), dim=-1).topk(k) for step in out.logits]
            tops = (
                torch.stack([s.indices for s in steps], 1).tolist(),
                torch.stack([s.values for s in steps], 1).tolist(),
            )
            out = out.sequences
        eos_ids = _eos_ids(self.model, self.tokenizer)
        results = []
        for i, (row, prompt_len) in enumerate(
            zip(out[:, width:].tolist(), enc.attention_mask.sum(dim=1).tolist(), strict=True)
        ):
            tokens, finish, eos = [], "length", False
            for tok in row:
                if tok in eos_ids:
                    finish, eos = "stop", True
                    break
                tokens.append(tok)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if finish == "length":
                for s in sampling.stop:
                    if s in text:  # generate() halted on a stop string: cut it, as servers do
                        text, finish = text[: text.index(s)], "stop"
                        break
            result = Result(text, None, finish, int(prompt_len), len(tokens), token_source="engine")
            if tops is not None:  # the tokens with the eos token the teacher chose, as vLLM keeps it
                set_logprobs(result, self.tokenizer, row[: len(tokens) + eos], tops[0][i], tops[1][i])
            results.append(result)
        return results

    def close(self) -> None:
        self.model = None


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
