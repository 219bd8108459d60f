"""`synth` command line: argument parsing only; the work is in the job modules.

Exit codes: 0 done; 2 bad argument or input (one line naming the file, key or argument);
3 no space left on the output's disk (or quota): what is done is kept, rerun the same command
after freeing space; 130 interrupted (rerun the same command to continue).
"""
from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from synth.exit_codes import EXIT_INTERRUPTED, EXIT_NO_SPACE, EXIT_USAGE
from synth.log import add_verbosity_arguments, cli_logging, verbosity

_EPILOG = ("exit codes: 0 done; 2 bad argument or input; 3 no space left on device (what is done is kept: "
           "free space and rerun the same command); 130 interrupted (rerun the same command to continue)")


def _cmd_index(args) -> int:
    from synth.index import build_index

    build_index(args.src, args.out, workers=args.workers, progress=not args.quiet)
    return 0


def _cmd_generate(args) -> int:
    from synth.generate import generate
    from synth.weights import read_weights

    weights = read_weights(args.weights, args.recipe) if args.weights else None
    generate(out=args.out, n=args.n, recipe=args.recipe, src=args.src, index=args.index, size=args.size,
             seed=args.seed, workers=args.workers, weights=weights, backend=args.backend,
             scheduler=args.scheduler, progress=not args.quiet, face_store=args.face_store, force=args.force)
    return 0


def _cmd_replay(args) -> int:
    from synth.replay import replay

    paths = replay(args.out, args.id, dest=args.dest, index=args.index)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _cmd_show(args) -> int:
    from synth.show import write_contact_sheet

    path = write_contact_sheet(args.out, n=args.n, path=args.sheet)
    print(f"wrote {path}")
    return 0


def _cmd_recipes(args) -> int:
    from synth.recipe import list_recipes, load_recipe

    names = args.recipe or list_recipes()
    for name in names:
        r = load_recipe(name)  # validates; raises RecipeError with file/key on a bad one
        print(f"{r.name:16s} {r.hash}  {r.spec.get('description', '')}")
    return 0


def _cmd_export(args) -> int:
    from synth.export import export_run

    summary = export_run(args.run, args.out, args.format, name=args.name, val_fraction=args.val_fraction,
                         seed=args.seed, link=args.link, path_prefix=args.path_prefix)
    if args.format == "deepfakebench":
        labels = ", ".join(f"{k}: {v}" for k, v in summary["labels"].items())
        print(f"wrote {summary['json']}; for DeepfakeBench set dataset_json_folder to {args.out} and add "
              f"{labels} to label_dict")
    else:
        print(f"wrote {Path(args.out) / 'train'} and {Path(args.out) / 'val'}")
    return 0


def _size(text: str) -> int:
    from synth.generate import MAX_SIZE, MIN_SIZE

    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not MIN_SIZE <= value <= MAX_SIZE:
        raise argparse.ArgumentTypeError(f"expected an integer in [{MIN_SIZE}, {MAX_SIZE}] (output side in pixels), "
                                         f"got {text!r}")
    return value


def _sample(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a sample id (e.g. 000123) or index (e.g. 123), got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="synth", description="Synthetic face-forgery generator.", epilog=_EPILOG)
    sub = p.add_subparsers(dest="command", required=True)
    common = [add_verbosity_arguments(argparse.ArgumentParser(add_help=False))]  # -v / -q on every command

    s = sub.add_parser("index", help="detect landmarks for every image under SRC (resumable)", epilog=_EPILOG, parents=common)
    s.add_argument("src", help="directory of face images")
    s.add_argument("--out", required=True, help="index directory to write")
    s.add_argument("--workers", type=int, default=2)
    s.set_defaults(func=_cmd_index)

    s = sub.add_parser("generate", help="generate fakes, masks and reals from a recipe (resumable)", epilog=_EPILOG, parents=common)
    s.add_argument("--n", type=int, required=True, help="number of samples")
    s.add_argument("--recipe", default="mixed", help="shipped recipe name (see `synth recipes`) or path to a .yaml file")
    s.add_argument("--src", help="directory of face images (indexed into OUT/index if --index is not given)")
    s.add_argument("--index", help="index written by `synth index`")
    s.add_argument("--out", required=True, help="output directory: new, empty, or a run to continue")
    s.add_argument("--force", action="store_true",
                   help="generate into a non-empty --out that is not a run (no run.json), overwriting "
                        "files of the same names (manifest.jsonl, report.json, real/ fake/ mask/ ...)")
    s.add_argument("--size", type=_size, default=256, help="output side in pixels, 32..4096")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--weights", help="JSON file of choice-key multipliers (e.g. {\"blend=poisson\": 2})")
    s.add_argument("--backend", default="joblib", choices=("joblib", "serial", "dask"))
    s.add_argument("--scheduler", help="dask scheduler address (with --backend dask)")
    s.add_argument("--face-store", default="auto", choices=("auto", "on", "off"),
                   help="derive each face once for all workers in OUT/cache (auto: when n >= 3 x the faces)")
    s.set_defaults(func=_cmd_generate)

    s = sub.add_parser("replay", help="re-render samples of OUT from their manifest lines", parents=common)
    s.add_argument("out", help="generation output directory")
    s.add_argument("id", nargs="+", type=_sample, help="sample ids (e.g. 000123) or indices")
    s.add_argument("--dest", help="where to write the replayed images (default OUT/replay)")
    s.add_argument("--index", help="index to read faces from (default: the run's own)")
    s.set_defaults(func=_cmd_replay)

    s = sub.add_parser("show", help="contact sheet of real | fake | mask triples", parents=common)
    s.add_argument("out", help="generation output directory")
    s.add_argument("--n", type=int, default=24)
    s.add_argument("--out", dest="sheet", help="PNG to write (default OUT/sheet.png)")
    s.set_defaults(func=_cmd_show)

    s = sub.add_parser("export", help="export a run as a DeepfakeBench dataset JSON or a torchvision ImageFolder tree",
                       epilog=_EPILOG, parents=common,
                       description="Links (no copies) to the run's ok samples, split by identity into train and "
                                   "held-out parts; nothing is written outside OUT.")
    s.add_argument("run", help="generation output directory")
    s.add_argument("out", help="new or empty folder to write")
    s.add_argument("--format", required=True, choices=("deepfakebench", "imagefolder"),
                   help="deepfakebench: OUT/NAME.json in the layout of DeepfakeBench's rearrange.py (train, val, "
                        "test; val = test = the held-out part); imagefolder: OUT/{train,val}/{real,fake}/")
    s.add_argument("--name", default="faceforge",
                   help="deepfakebench dataset name: OUT/NAME.json, labels NAME_real and NAME_fake (default faceforge)")
    s.add_argument("--val-fraction", type=float, default=0.1, help="share held out, by identity (default 0.1)")
    s.add_argument("--seed", type=int, default=0, help="seed of the identity split")
    s.add_argument("--link", choices=("symlink", "hard"), default="symlink",
                   help="symlink (absolute target; default) or hard (OUT on the run's file system)")
    s.add_argument("--path-prefix", default="", metavar="PREFIX",
                   help="deepfakebench: prefix of the paths in the JSON (default: relative to OUT), e.g. "
                        "./datasets/rgb/NAME when OUT is placed there for DeepfakeBench")
    s.set_defaults(func=_cmd_export)

    s = sub.add_parser("recipes", help="list (and validate) recipes", parents=common)
    s.add_argument("recipe", nargs="*", help="names or paths to validate (default: all shipped)")
    s.set_defaults(func=_cmd_recipes)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with cli_logging(verbosity(args)):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
        print(f"synth {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # generate's message says how much was done; the jobs' writes are atomic, so a rerun continues
        where = f": {e.filename}" if e.filename else ""
        print(f"synth {args.command}: error: {e.strerror}{where}", file=sys.stderr)
        return EXIT_NO_SPACE
    except KeyboardInterrupt as e:  # generate's Interrupted already says how much was done
        print(str(e) or f"synth {args.command}: interrupted; rerun the same command to continue", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
