"""Do seeded samples depend on the batch size? The same K samples per problem drawn at each
`--batch-sizes` with failtune's transformers backend, compared answer by answer.

Each answer's noise comes from its own (seed, problem id, sample) stream, and sampled answers
decode in the aligned layout (backends.rolling), where a row's logits do not depend on the rows
beside it: 0 differing answers expected. This counts the answers that differ from the first
batch size's and, for each, where (in tokens) they part.
GSM8K test prompts, the task's stop rule, SmolLM2-135M-Instruct, fp32, CPU; saved as JSON.

    python benchmarks/sampling_reproducibility.py --problems 32 --samples 4 --batch-sizes 8,32
"""

from __future__ import annotations

import time
from typing import Any

from sampling_throughput import gsm8k_sampling, sampling_flags, save_report

from failtune.backends import GenParams, sample_all
from failtune.backends.hf import HFBackend


def parting(tokenizer: Any, a: str, b: str) -> int:
    """How many leading tokens two answers share."""
    x, y = (tokenizer(t, add_special_tokens=False).input_ids for t in (a, b))
    return next(
        (i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y))
    )


def compare(
    backend: HFBackend, problems: list[Any], params: GenParams, sizes: list[int]
) -> dict[str, Any]:
    """The same samples at each batch size; the answers differing from the first size's."""
    runs: dict[int, list[list[Any]]] = {}
    for size in sizes:
        backend.batch_size = size
        t0 = time.perf_counter()
        runs[size] = sample_all(
            backend, [p.prompt for p in problems], params, [p.id for p in problems]
        )
        print(f"batch {size}: {time.perf_counter() - t0:.0f} s", flush=True)
    first, *others = runs
    comparisons = {}
    for size in others:
        differ = [
            {
                "id": problems[i].id,
                "sample": s,
                "shared_tokens": parting(backend.tokenizer, a.text, b.text),
                "tokens": [a.completion_tokens, b.completion_tokens],
            }
            for i, (row_a, row_b) in enumerate(zip(runs[first], runs[size], strict=True))
            for s, (a, b) in enumerate(zip(row_a, row_b, strict=True))
            if a != b
        ]
        answers = sum(len(row) for row in runs[size])
        tokens = sum(g.completion_tokens for row in runs[size] for g in row)
        comparisons[f"{first}_vs_{size}"] = {
            "answers": answers,
            "tokens": tokens,
            "answers_differing": len(differ),
            "differing": differ,
        }
        print(
            f"batch {first} vs {size}: {len(differ)} of {answers} answers differ ({tokens} tokens)"
        )
    return comparisons


def main() -> None:
    parser = sampling_flags(
        __doc__.splitlines()[0],
        "sampling_reproducibility",
        problems=32,
        samples=4,
        max_new_tokens=128,
    )
    parser.add_argument("--batch-sizes", default="8,32", help="comma-separated")
    args = parser.parse_args()
    problems, _, sampled = gsm8k_sampling(args)
    backend = HFBackend.load("builtin:smollm2", batch_size=1, device="cpu")
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    comparisons = compare(backend, problems, sampled, sizes)
    save_report("sampling_reproducibility", args, {"comparisons": comparisons})


if __name__ == "__main__":
    main()
