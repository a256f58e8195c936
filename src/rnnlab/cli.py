"""The ``rnnlab`` command line: train, eval, generate, score, demo, gradcheck, bench.

Bad input (a missing or unreadable file, an empty or binary corpus, a corrupt
or foreign checkpoint, a bad flag value) is one line ``rnnlab: error: ...``
on stderr and exit status 2, never a traceback. Exit status 1: gradcheck
found a wrong gradient; 130 (Ctrl-C) or 143 (SIGTERM): training stopped on a
signal after saving a checkpoint at that step, or interrupted again while
saving (the last complete checkpoint stays intact).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import warnings

from .backend import DTYPES
from .cells import BPTT_MODES, CELLS
from .class_softmax import MASSES
from .data.prepare import FORMATS, SENTENCE_FORMATS
from .errors import RnnlabError
from .interrupts import Interrupted
from .optim import OPTIMIZERS, SCHEDULE_AT, SCHEDULES
from .output import OUTPUT_LAYERS


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line, like every other rnnlab error."""

    def error(self, message):
        self.exit(2, f"rnnlab: error: {message} (see '{self.prog} --help')\n")


def _int_at_least(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, not {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {'positive' if low == 1 else f'>= {low}'}, not {value}")
        return value
    return parse


def _float_at_least(low, below=None):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
        if not (value >= low) or value == float("inf") or (below is not None and value >= below):
            bound = f"in [{low:g}, {below:g})" if below is not None else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, not {text}")
        return value
    return parse


positive, natural = _int_at_least(1), _int_at_least(0)


def _cutoffs(text):
    """``--cutoffs 2000,10000`` -> (2000, 10000)."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected increasing whole numbers separated by commas, not {text!r}") from None
    if any(b <= a for a, b in zip(values, values[1:])) or values[0] < 1:
        raise argparse.ArgumentTypeError(f"cutoffs must be positive and increasing, not {text!r}")
    return values


VOCAB_SIZE_HELP = "vocabulary size including the unknown token; 0 = every distinct token (default 0)"
# TrainConfig's fields that train's flags set, by the same names
TRAIN_FLAGS = ("corpus", "out", "valid", "test", "format", "vocab_size", "softmax", "classes", "class_mass",
               "cutoffs", "div_value", "head_bias", "cell", "hidden", "embed", "layers", "bias", "dropout", "tied", "batch_size", "bptt",
               "bptt_mode", "optimizer", "schedule", "schedule_at", "lr", "clip", "epochs", "max_steps",
               "eval_every", "early_stop", "valid_fraction", "tensorboard", "diagnose_every", "seed", "dtype")


def _model_command(commands, name, **kw):
    """A subcommand that works on a trained model: its parser, with the DIR argument first."""
    p = commands.add_parser(name, **kw)
    p.add_argument("dir", metavar="DIR", help="run directory holding a checkpoint")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rnnlab", description="Recurrent-network language models trained by BPTT, in numpy.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"rnnlab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "train", help="train a model on a corpus file",
        description="Train a model on CORPUS; the checkpoint, metrics.jsonl, loss.png and vocab.json go to "
                    "--out DIR. Flags left out take the default of the corpus format (sentence formats "
                    "csv/text: the tutorial's hidden 100, no embedding, no biases, batch 1, window BPTT of 4, SGD lr "
                    "0.005, 10 epochs; tokens: word_language_model's LSTM and recipe, the best word model in "
                    "the time (perplexity 360 where a tanh RNN reaches 462 on wikitext-2-valid, in 1.7x its time; "
                    "BENCHMARKS.md): 2 layers of 200, embed 200, dropout 0.2, batch 20, chunks "
                    "of 35, SGD lr 20, clip 0.25, the plateau schedule, 6 epochs; chars: tanh RNN, hidden 256, "
                    "embed 32, batch 32, chunks of 64, Adam lr 0.003, clip 1, 1 epoch) or, with --resume, the "
                    "checkpoint's.")
    p.add_argument("corpus", nargs="?", metavar="CORPUS",
                   help="corpus file, or a folder made by rnnlab prepare (optional with --resume: the "
                        "checkpoint's corpus)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory for the checkpoint and metrics")
    p.add_argument("--valid", metavar="FILE",
                   help="validation file in the corpus's format, read with its vocabulary (instead of "
                        "holding out --valid-fraction of the corpus)")
    p.add_argument("--test", metavar="FILE",
                   help="test file, scored once at the end by the best model (metrics.jsonl, event 'test')")
    p.add_argument("--format", choices=FORMATS,
                   help="corpus format: csv (Reddit comments, the tutorial's preprocessing), text (one "
                        "sentence per line), tokens (whitespace tokens, <eos> per line), chars (characters); "
                        "default: csv for *.csv, else text")
    p.add_argument("--vocab-size", type=natural, metavar="N", help=VOCAB_SIZE_HELP)
    p.add_argument("--softmax", choices=tuple(OUTPUT_LAYERS),
                   help="output layer: full (softmax over the vocabulary, the default), class (words in "
                        "classes of equal frequency mass: p(class) p(word | class)), adaptive (torch's "
                        "AdaptiveLogSoftmaxWithLoss: frequent words in a head, rare ones in smaller tail "
                        "clusters); class and adaptive train many times faster on large vocabularies")
    p.add_argument("--classes", type=natural, metavar="N",
                   help="classes of --softmax class (default: about 3 times the square root of the vocabulary)")
    p.add_argument("--class-mass", choices=MASSES,
                   help="how --softmax class bins the words: sqrt (of their counts, the RNNLM toolkit's default, "
                        "the default here: more even classes) or frequency (the paper's equal probability mass)")
    p.add_argument("--cutoffs", type=_cutoffs, metavar="C1,C2,...",
                   help="where --softmax adaptive cuts the ids (frequency order): the head holds ids below "
                        "C1, then a tail cluster per range (default 2000,10000; for fewer than 8000 words a "
                        "quarter of the vocabulary, then 5 times as far)")
    p.add_argument("--div-value", type=_float_at_least(1.0), metavar="D",
                   help="--softmax adaptive: tail cluster i projects to hidden / D^i entries (default 4)")
    p.add_argument("--head-bias", action=argparse.BooleanOptionalAction, default=None,
                   help="--softmax adaptive: a bias in the head (default on; torch's module has none by default)")
    p.add_argument("--cell", choices=tuple(CELLS),
                   help="recurrent cell (default rnn): " + "; ".join(f"{c.name}: {c.summary}" for c in CELLS.values()))
    p.add_argument("--hidden", type=positive, metavar="H", help="hidden size")
    p.add_argument("--embed", type=natural, metavar="E",
                   help="embedding size; 0 = no embedding layer (the tutorial's one-hot input, size H)")
    p.add_argument("--layers", type=positive, metavar="L", help="recurrent layers (default 1)")
    p.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None,
                   help="biases in the recurrence and the decoder (default: off for csv/text, the tutorial's "
                        "U, W, V model; on for tokens/chars)")
    p.add_argument("--dropout", type=_float_at_least(0.0, 1.0), metavar="P",
                   help="dropout probability on the embedding output, between layers and before the decoder "
                        "(inverted; off in evaluation and generation; default 0)")
    p.add_argument("--tied", action=argparse.BooleanOptionalAction, default=None,
                   help="tie the decoder's weight to the encoder's (needs --embed equal to --hidden; default off)")
    p.add_argument("--batch-size", type=positive, metavar="B",
                   help="sentences (csv/text) or parallel streams (tokens/chars) per step; 1 with csv/text "
                        "= the tutorial's one sentence per step, in corpus order")
    p.add_argument("--bptt", type=positive, metavar="K",
                   help="BPTT length: window/chunk length in sentence mode, chunk length in stream mode")
    p.add_argument("--bptt-mode", choices=BPTT_MODES,
                   help="window: the tutorial's (each loss reaches K steps back); chunk: gradient cut every "
                        "K steps; full: through the whole sentence or chunk")
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), help="optimizer (momentum: SGD with momentum 0.9)")
    p.add_argument("--lr", type=_float_at_least(0.0), metavar="X",
                   help="learning rate; with --resume it replaces the saved rate")
    p.add_argument("--schedule", choices=tuple(SCHEDULES),
                   help="learning-rate schedule: halve-on-rise (the tutorial's rule, the default of csv/text: "
                        "halve the rate when the training loss rose), plateau (word_language_model's, the "
                        "default of tokens/chars: divide it by 4 when the validation loss is not below its "
                        "best), none")
    p.add_argument("--schedule-at", choices=SCHEDULE_AT,
                   help="which evaluations the schedule sees: epoch (the end of each epoch, the default) or "
                        "eval (every one, --eval-every's too)")
    p.add_argument("--clip", type=_float_at_least(0.0), metavar="X",
                   help="clip the global gradient norm to X; 0 = no clipping")
    p.add_argument("--epochs", type=positive, metavar="N", help="total epochs (with --resume: train up to N)")
    p.add_argument("--max-steps", type=natural, metavar="N",
                   help="stop after N optimizer steps in total, mid-epoch if need be; 0 = no limit (default)")
    p.add_argument("--eval-every", type=natural, metavar="N",
                   help="also evaluate and checkpoint every N steps; 0 = at the end of each epoch only (default)")
    p.add_argument("--valid-fraction", type=_float_at_least(0.0, 1.0), metavar="F",
                   help="last fraction of the corpus held out for validation; 0 = none (default 0.1, "
                        "or 0 with --valid)")
    p.add_argument("--early-stop", type=natural, metavar="N",
                   help="stop after N evaluations without a lower validation loss; 0 = never (default); "
                        "DIR/best always holds the model with the lowest one")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help="also write TensorBoard event files into DIR/tb at every evaluation: the metrics, "
                        "histograms of the weights and of their gradients (needs the tensorboard extra)")
    p.add_argument("--diagnose-every", type=natural, metavar="N",
                   help="every N evaluations, measure how the gradient fades with the lag (as rnnlab "
                        "diagnose) into DIR/diagnose.jsonl; rnnlab plot DIR --lags draws it; 0 = never")
    p.add_argument("--seed", type=natural, metavar="S", help="seed of the initialisation and batch order (default 0)")
    p.add_argument("--dtype", choices=tuple(DTYPES), help="parameter dtype (default float32)")
    p.add_argument("--resume", action="store_true",
                   help="continue the checkpoint in DIR exactly where it stopped")
    p.add_argument("--force", action="store_true", help="replace the run already in DIR (its checkpoint, "
                   "metrics, plot, vocabulary and best model)")
    p.add_argument("--corpus-changed", action="store_true",
                   help="with --resume: continue although the corpus file's content changed since the checkpoint")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors (no progress bar)")
    p.set_defaults(func=cmd_train)

    p = _model_command(commands, "eval", help="loss and perplexity of a trained model on a corpus",
                       description="Mean loss (nats per token) and perplexity of the model in DIR on "
                                   "CORPUS, encoded with the model's vocabulary (unknown tokens count "
                                   "as its unknown token).")
    p.add_argument("corpus", metavar="CORPUS", help="corpus file")
    p.add_argument("--format", choices=FORMATS, help="corpus format (default: the format the model was trained on)")
    p.add_argument("--json", action="store_true", help="print one JSON object: tokens, loss, perplexity")
    p.set_defaults(func=cmd_eval)

    p = _model_command(commands, "generate", help="sample text from a trained model",
                       description="Sentence models (csv/text) print N sentences, one per line, from "
                                   "SENTENCE_START to SENTENCE_END, never the unknown token; stream "
                                   "models (tokens/chars) print N continuations of the prompt.")
    p.add_argument("-n", type=natural, metavar="N",
                   help="number of sentences or continuations (default 10 sentences, 1 continuation)")
    p.add_argument("--temperature", type=_float_at_least(0.0), default=1.0, metavar="T",
                   help="divide the log-probabilities by T; 0 = always the most likely token (default 1)")
    p.add_argument("--top-k", type=natural, default=0, metavar="K",
                   help="sample among the K most likely tokens only; 0 = all (default)")
    p.add_argument("--prompt", metavar="TEXT",
                   help="text to start from (sentence models: the first words of every sentence)")
    p.add_argument("--max-length", type=positive, metavar="M",
                   help="most tokens generated per sample (default 50 words, 100 tokens, 500 characters)")
    p.add_argument("--seed", type=natural, metavar="S", help="random seed: the same seed gives the same text")
    p.set_defaults(func=cmd_generate)

    p = _model_command(commands, "score", help="log-probability and perplexity of each line of a file",
                       description="For each input line print: log-probability (nats), number of "
                                   "tokens scored, perplexity; tab separated. Each line is scored on "
                                   "its own (sentence models: with its SENTENCE_END; stream models: "
                                   "with its line end, after a line end).")
    p.add_argument("file", nargs="?", default="-", metavar="FILE",
                   help="text file, one item per line; - or nothing reads stdin")
    p.set_defaults(func=cmd_score)

    p = commands.add_parser(
        "prepare", help="tokenize a corpus once into a folder that train, eval and diagnose read directly",
        description="Read CORPUS once (streamed: memory does not grow with its size) into --out DIR: the ids "
                    "memory-mapped, the vocabulary, the source's size and SHA-256. rnnlab train DIR trains on "
                    "it without reading the text again. (Corpus files given to train, eval and diagnose are "
                    "prepared the same way into a cache, $RNNLAB_CACHE_DIR or ~/.cache/rnnlab/corpora, and "
                    "reused while the file is unchanged.)")
    p.add_argument("corpus", metavar="CORPUS", help="corpus file")
    p.add_argument("--out", required=True, metavar="DIR", help="the prepared folder (empty or a prepared corpus)")
    p.add_argument("--format", choices=FORMATS, help="corpus format (default: csv for *.csv, else text)")
    p.add_argument("--vocab-size", type=natural, metavar="N", help=VOCAB_SIZE_HELP)
    p.set_defaults(func=cmd_prepare)

    p = commands.add_parser(
        "diagnose", help="how far back the gradient reaches: the vanishing gradient, measured",
        description="For trained runs (RUN ...) or freshly initialised models (--cell, repeatable), on a "
                    "sample of a corpus (a run's own by default): the mean norm of the gradient of the loss "
                    "at step t with respect to the hidden state at step t-k, for k = 0..K, relative to k = 0 "
                    "(for the LSTM also its memory cell's); the effective memory (the largest k whose ratio "
                    "is above the threshold); the largest singular values of each weight_hh; the share of "
                    "saturated units. Computed with the model's own backward.")
    p.add_argument("runs", nargs="*", metavar="RUN", help="run directories holding a checkpoint")
    p.add_argument("--cell", action="append", choices=tuple(CELLS),
                   help="a freshly initialised model of this cell (repeat to compare; needs --corpus)")
    p.add_argument("--hidden", type=positive, default=100, metavar="H", help="fresh models: hidden size (default 100)")
    p.add_argument("--layers", type=positive, default=1, metavar="L", help="fresh models: layers (default 1)")
    p.add_argument("--embed", type=natural, metavar="E", help="fresh models: embedding size (default: the hidden size)")
    p.add_argument("--corpus", metavar="FILE", help="corpus to sample (default: each run's own)")
    p.add_argument("--format", choices=FORMATS, help="the corpus's format (default: the run's, or by the file's name)")
    p.add_argument("--vocab-size", type=natural, metavar="N", help="fresh models: vocabulary size (default: all tokens)")
    p.add_argument("--max-lag", type=positive, default=50, metavar="K", help="largest lag k (default 50)")
    p.add_argument("--threshold", type=_float_at_least(0.0), default=1e-3, metavar="X",
                   help="the ratio that still counts as remembered (default 0.001)")
    p.add_argument("--seed", type=natural, default=0, metavar="S", help="fresh models' initialisation (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON list, a diagnosis per model")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the ratio against the lag, every model on one plot")
    p.set_defaults(func=cmd_diagnose)

    p = commands.add_parser(
        "plot", help="the training curves of several runs on one PNG",
        description="Draw the validation (solid) and training (dashed) curves of the runs, one colour each, "
                    "on one PNG; with --lags, the gradient-by-lag curves recorded by --diagnose-every.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--out", required=True, metavar="FILE.png", help="where to write the plot")
    p.add_argument("--y", choices=("loss", "perplexity"), default="loss", help="what to draw (default loss)")
    p.add_argument("--x", choices=("tokens", "time", "step", "epoch"), default="tokens",
                   help="against what: training tokens, wall-clock time (pauses left out), steps or epochs "
                        "(default tokens)")
    p.add_argument("--lags", action="store_true",
                   help="draw the runs' diagnose.jsonl instead: the gradient by lag at each recorded step")
    p.set_defaults(func=cmd_plot)

    p = commands.add_parser("demo", help="train on Tiny Shakespeare for about two minutes, then write some",
                            description="Train a character-level tanh RNN on Tiny Shakespeare (found in "
                                        "$RNNLAB_DATA_DIR, the cache, or downloaded) and print generated text.")
    p.add_argument("--out", metavar="DIR", help="keep the trained model in DIR (default: a temporary directory)")
    p.add_argument("--steps", type=positive, metavar="N", help="training steps (default 3000)")
    p.add_argument("--seed", type=natural, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--force", action="store_true", help="replace a checkpoint already in --out DIR")
    p.add_argument("--quiet", action="store_true", help="print only the generated text")
    p.set_defaults(func=cmd_demo)

    p = commands.add_parser("gradcheck", help="check every gradient against finite differences",
                            description="Check every gate and model gradient against central finite "
                                        "differences; exit status 1 if any fails.")
    p.set_defaults(func=cmd_gradcheck)

    commands.add_parser("bench", help="benchmarks (arguments go to rnnlab.bench; see rnnlab bench --help)",
                        add_help=False)
    return parser


# -- commands -------------------------------------------------------------------------


def cmd_train(args) -> int:
    from .train import TrainConfig, train

    if args.corpus is None and not args.resume:
        raise RnnlabError("train needs a CORPUS file (only --resume can do without)")
    if args.corpus_changed and not args.resume:
        raise RnnlabError("--corpus-changed only applies with --resume")
    config = TrainConfig(**{name: getattr(args, name) for name in TRAIN_FLAGS})
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    try:
        train(config, resume=args.resume, force=args.force, corpus_changed=args.corpus_changed,
              progress=False if args.quiet else None, log=log,
              resume_hint=f"rnnlab train --resume --out {shlex.quote(args.out)}")
    except Interrupted as e:
        print(f"rnnlab: {e}", file=sys.stderr)
        return e.exit_status
    return 0


def cmd_eval(args) -> int:
    from .api import load

    result = load(args.dir).evaluate(args.corpus, format=args.format)
    if args.json:
        print(json.dumps(result._asdict()))
    else:
        print(f"tokens      {result.tokens}\nloss        {result.loss:.4f} nats\nperplexity  {result.perplexity:.2f}")
    return 0


def cmd_generate(args) -> int:
    from .generate import generate
    from .train import load_trained

    run = load_trained(args.dir)
    texts = generate(run.model, run.vocab, run.format, n=args.n, temperature=args.temperature,
                     top_k=args.top_k, prompt=args.prompt, max_length=args.max_length, seed=args.seed)
    stream = run.format not in SENTENCE_FORMATS
    for i, text in enumerate(texts):
        if stream and i:
            print()
        print(text.rstrip("\n") if stream else text, flush=stream)
    return 0


def cmd_score(args) -> int:
    from .data.readers import iter_raw_lines
    from .generate import score_lines
    from .train import load_trained

    run = load_trained(args.dir)
    if args.file == "-":
        lines = [line.rstrip("\r\n") for line in sys.stdin]
    else:
        lines = [line.rstrip("\r\n") for line in iter_raw_lines(args.file)]
    for logprob, count, ppl in score_lines(run.model, run.vocab, lines, run.format):
        print(f"{logprob:.4f}\t{count}\t{ppl:.3f}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    try:
        run_demo(args.out, steps=args.steps, seed=args.seed, force=args.force, quiet=args.quiet,
                 log=lambda *a: print(*a, flush=True))
    except Interrupted as e:
        kept = f"; the model so far is in {args.out} (rnnlab generate {shlex.quote(args.out)})" if args.out else ""
        print(f"rnnlab: demo interrupted{kept}", file=sys.stderr)
        return e.exit_status
    return 0


def cmd_prepare(args) -> int:
    from .data.cache import open_corpus, prepare_folder
    from .train import format_for_path

    fmt = args.format or format_for_path(args.corpus)
    if os.path.isdir(args.corpus):
        raise RnnlabError(f"{args.corpus} is a folder; prepare reads a corpus file")
    folder = prepare_folder(args.corpus, fmt, args.vocab_size or None, args.out)
    corpus = open_corpus(folder).corpus
    sentences = f" in {corpus.num_sentences:,} sentences" if corpus.num_sentences is not None else ""
    print(f"{folder}: {corpus.num_tokens:,} tokens{sentences}, a vocabulary of {len(corpus.vocab):,} ids "
          f"({fmt}); train on it with: rnnlab train {shlex.quote(str(folder))} --out DIR")
    return 0


def cmd_diagnose(args) -> int:
    from .inspect_runs import diagnose_command

    results = diagnose_command(args)
    if args.json:
        print(json.dumps([r.to_dict() for r in results]))
    else:
        print("\n\n".join(r.format_table() for r in results))
    if args.plot:
        from .plot import plot_gradient_lags

        if plot_gradient_lags(results, args.plot) is None:
            raise RnnlabError("--plot needs matplotlib: pip install 'rnnlab[cli]'")
    return 0


def cmd_plot(args) -> int:
    from .inspect_runs import plot_command

    plot_command(args)
    return 0


def cmd_gradcheck(args) -> int:
    from .gradcheck import run_all

    return 0 if run_all(emit=lambda line: print(line, flush=True)) else 1


def cmd_bench(argv) -> int:
    try:
        from . import bench
    except ModuleNotFoundError as e:
        if e.name in ("rnnlab.bench", __package__ + ".bench"):
            raise RnnlabError("rnnlab bench is not available in this installation (no rnnlab.bench)") from None
        raise RnnlabError(f"rnnlab bench needs {e.name}: pip install 'rnnlab[peer]'") from None
    return bench.main(argv)


# -- entry point ----------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.filename}: {error.strerror or error}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"rnnlab: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv=None) -> int:
    """Run one command; returns the exit status (0 ok, 1 gradcheck failure, 2 bad input, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            if argv and argv[0] == "bench":  # everything after it belongs to rnnlab.bench's own parser
                return cmd_bench(argv[1:])
            try:
                args = build_parser().parse_args(argv)
            except SystemExit as e:  # --help, --version (0) or a usage error already printed (2)
                return e.code if isinstance(e.code, int) else 2
            return args.func(args)
        except (RnnlabError, OSError, ValueError, MemoryError) as e:
            if isinstance(e, BrokenPipeError):
                return _broken_pipe()
            print(f"rnnlab: error: {_one_line(e)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("rnnlab: interrupted (a checkpoint already written stays intact)", file=sys.stderr)
            return 130


def _broken_pipe() -> int:
    """stdout was closed early (``rnnlab generate | head``): stop quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 1


if __name__ == "__main__":
    sys.exit(main())
