"""Forward Pass tab latency with the shipped models on this machine's CPU (target: <= 1 s per
render for prompts up to 128 characters): one request of the tab computes the traced forward
pass, the sampling step, the chosen step's view, the residual-stream figure and the logit lens.

    python -m bench.forward_pass                    # 2 threads
    python -m bench.forward_pass --threads 1 --repeats 20

Cases: the GPT walkthrough of a 128-character prompt (steps cycled over the whole walkthrough),
the translation decoder's (a 12-word sentence, greedy translation included), generating and
explaining 200 characters, and one click on a character. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch

from bench.common import hardware, latencies_ms, latency_stats, print_latency_table
from demos import explain
from demos import forward_pass as fp

PROMPT = (
    "ROMEO:\nBut soft, what light through yonder window breaks? It is the east, and Juliet is the sun.\n"
    "Arise, fair sun, and kill the envious"
)[:128]
SENTENCE = "A little girl in a pink dress is climbing into a wooden playhouse."


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (a Space has 2 cores)")
    p.add_argument("--repeats", type=int, default=34)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    gpt_steps = itertools.cycle(range(1, len(fp.forward_pass("generation", PROMPT).steps) + 1))
    mt_steps = itertools.cycle(range(1, len(fp.forward_pass("translation", SENTENCE).steps) + 1))
    settings = ("ROMEO:\n", 200, 0.8, 0, 1.0, 0)
    seeds = itertools.count()

    def explain_fresh():  # a new seed each call, so the cache never answers
        explain.explain_generation(*settings[:-1], next(seeds))

    explained = explain.explain_generation(*settings)
    cases = {
        "walkthrough, GPT, 128-char prompt": lambda: fp.outputs(
            "generation", PROMPT, "en→de", None, next(gpt_steps), 0.8, 0, 1.0, 0
        ),
        "walkthrough, translation decoder, 12 words": lambda: fp.outputs(
            "translation", SENTENCE, "en→de", None, next(mt_steps), 0.8, 0, 1.0, 0
        ),
        "explain generation, 200 characters": explain_fresh,
        "explain one character (click)": lambda: explain.explain_character(explained, 150),
    }
    times = {name: latencies_ms(fn, args.repeats, warmup=3) for name, fn in cases.items()}
    stats = latency_stats(times)
    print_latency_table(f"Forward Pass tab on {hardware(args.threads)}", stats)
    result = {"bench": "forward_pass", "threads": args.threads, "hardware": hardware(args.threads), "latency": stats}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
