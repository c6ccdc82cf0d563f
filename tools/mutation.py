"""A small mutation tester: does the test suite notice a one-line break?

Each mutant is one edit to one line of a scratch copy of ``src/``; a chosen (fast) subset of the tests runs
against it (``PYTHONPATH=<scratch>/src``). A mutant is *killed* when the tests fail (or time out), *survived*
when they pass. Two kinds of mutants:

* ``--named``: the realistic glue breaks of issue 13 (each a regex found wherever it lives in ``src/``, so the
  list survives code moves; a pattern that no longer matches is reported as "not found").
* ``--auto DIR ...``: operator and constant flips generated from the Python tokens of every file under the
  given ``src/crossvis`` sub-folders (``<``/``<=``, ``==``/``!=``, ``+``/``-``, ``and``/``or``, ``True``/``False``,
  ``n``/``n+1``, ``0.5``/``0.6``, ...), sampled with ``--max`` and ``--seed``.

Examples::

    python tools/mutation.py --named --tests tests/test_wiring.py tests/test_golden_losses.py
    python tools/mutation.py --auto tracking evaluation --max 60 \\
        --tests tests/test_tracker.py tests/test_evaluation.py tests/test_eval_golden.py

Prints one line per mutant and the surviving mutants at the end; exit status 0.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Mutant:
    name: str
    file: str  # relative to src/
    line: int  # 1-based
    old: str  # the original line
    new: str  # the mutated line


# (name, regex, replacement, tests that should kill it) -- the breaks named in issue 13 (and close variants).
NAMED: list[tuple[str, str, str]] = [
    (
        "tracker default threshold 0.4 -> 0.5",
        r"match_threshold: float = 0\.4",
        "match_threshold: float = 0.5",
    ),
    ("targets around the box centre", r"mask_centroids\(masks, boxes\)", "(boxes[:, :2] + boxes[:, 2:]) / 2"),
    (
        "crossover direction swapped (frame-1 filters)",
        r"_crossover\(pos\[1\], pos\[0\], mask_feats\[0\], gt_masks\[0\]\)",
        "_crossover(pos[0], pos[1], mask_feats[0], gt_masks[0])",
    ),
    (
        "crossover direction swapped (frame-0 filters)",
        r"_crossover\(pos\[0\], pos\[1\], mask_feats\[1\], gt_masks\[1\]\)",
        "_crossover(pos[1], pos[0], mask_feats[1], gt_masks[1])",
    ),
    (
        "crossover on the wrong frame's features",
        r"_crossover\(pos\[1\], pos\[0\], mask_feats\[0\], gt_masks\[0\]\)",
        "_crossover(pos[1], pos[0], mask_feats[1], gt_masks[0])",
    ),
    ("identity loss summed, not averaged", r'reduction="sum"\) / embeddings\.shape\[0\]', 'reduction="sum")'),
    (
        "write_results non-atomic",
        r"with atomic_write\(path\) as f:\n(\s+)json\.dump\(results, f\)",
        r"with open(path, 'w') as f:\n\1json.dump(results, f)",
    ),
    (
        "evaluator: GT area range ignored",
        r"vg\[j\]\.iscrowd or vg\[j\]\.area < lo or vg\[j\]\.area > hi",
        "vg[j].iscrowd",
    ),
    (
        "evaluator: out-of-range results not ignored",
        r"dtig = dtig \| \(\(dtm == 0\) & out_range\[None, :\]\)",
        "dtig = dtig",
    ),
    (
        "evaluator: area range exclusive",
        r"\(d_area < lo\) \| \(d_area > hi\)",
        "(d_area <= lo) | (d_area >= hi)",
    ),
    ("resume skips per-rank pairs", r"start=start_iter \* s\.ims_per_batch", "start=start_iter * per_step"),
    (
        "resume skips one pair less",
        r"start=start_iter \* s\.ims_per_batch",
        "start=start_iter * s.ims_per_batch - 1",
    ),
    (
        "loss_det weight ignored",
        r"w_det \* \(per_frame\[0\]\[k\] \+ per_frame\[1\]\[k\]\) / 2",
        "(per_frame[0][k] + per_frame[1][k]) / 2",
    ),
    (
        "only frame-1 detection losses",
        r"\(per_frame\[0\]\[k\] \+ per_frame\[1\]\[k\]\) / 2",
        "per_frame[1][k]",
    ),
]

OP_FLIPS = {
    "<": "<=",
    "<=": "<",
    ">": ">=",
    ">=": ">",
    "==": "!=",
    "!=": "==",
    "+": "-",
    "-": "+",
    "*": "/",
    "/": "*",
    "//": "*",
    "and": "or",
    "or": "and",
    "True": "False",
    "False": "True",
    "is": "is not",
    "in": "not in",
    "min": "max",
    "max": "min",
}


def _const_flip(tok: str) -> str | None:
    try:
        v = int(tok, 0)
        return str(v + 1)
    except ValueError:
        pass
    try:
        v = float(tok)
    except ValueError:
        return None
    return repr(v + 0.1) if v != 0 else "0.1"


def named_mutants(src: Path) -> tuple[list[Mutant], list[str]]:
    out, missing = [], []
    files = sorted(src.rglob("*.py"))
    for name, pattern, repl in NAMED:
        rx = re.compile(pattern)
        for f in files:
            text = f.read_text()
            m = rx.search(text)
            if m:
                line = text.count("\n", 0, m.start()) + 1
                out.append(Mutant(name, str(f.relative_to(src)), line, text, rx.sub(repl, text, count=1)))
                break
        else:
            missing.append(name)
    return out, missing


def auto_mutants(src: Path, dirs: list[str]) -> list[Mutant]:
    out = []
    for d in dirs:
        for f in sorted((src / "crossvis" / d).rglob("*.py")):
            text = f.read_text()
            lines = text.splitlines(keepends=True)
            in_doc = _docstring_lines(text)
            for tok in tokenize.generate_tokens(io.StringIO(text).readline):
                (row, col), (erow, ecol) = tok.start, tok.end
                if row != erow or row in in_doc or row > len(lines):
                    continue
                line = lines[row - 1]
                if line.lstrip().startswith(("def ", "class ", "import ", "from ", "@", "raise ")):
                    continue
                new = None
                if tok.type == tokenize.OP or (tok.type == tokenize.NAME and tok.string in OP_FLIPS):
                    new = OP_FLIPS.get(tok.string)
                    if tok.string in ("*", "/") and (
                        line[col - 1 : col] == "*" or line[ecol : ecol + 1] == "*"
                    ):
                        new = None  # ** or *args
                    if tok.string in ("-", "+") and _unary(line, col):
                        new = None
                elif tok.type == tokenize.NUMBER:
                    new = _const_flip(tok.string)
                if tok.string == "in" and ("for " in line[:col] or line[:col].rstrip().endswith("not")):
                    new = None  # a for loop's "in", or "not in"
                if tok.string == "is" and line[ecol:].lstrip().startswith("not"):
                    new = None
                if new is None:
                    continue
                mutated = line[:col] + new + line[ecol:]
                body = "".join(lines[: row - 1]) + mutated + "".join(lines[row:])
                rel = str(f.relative_to(src))
                try:
                    compile(body, rel, "exec")
                except SyntaxError:
                    continue
                out.append(Mutant(f"{rel}:{row} '{tok.string}' -> '{new}'", rel, row, text, body))
    return out


def _unary(line: str, col: int) -> bool:
    before = line[:col].rstrip()
    return (
        not before
        or before[-1] in "([{,=:<>+-*/"
        or before.endswith(("return", "in", "and", "or", "not", "else", "if"))
    )


def _docstring_lines(text: str) -> set[int]:
    """Line numbers inside string tokens that stand alone (docstrings), which mutations skip."""
    rows: set[int] = set()
    prev = tokenize.NEWLINE
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.STRING and prev in (
            tokenize.NEWLINE,
            tokenize.INDENT,
            tokenize.NL,
            tokenize.DEDENT,
        ):
            rows.update(range(tok.start[0], tok.end[0] + 1))
        if tok.type not in (tokenize.COMMENT,):
            prev = tok.type
    return rows


def _wanted(m: Mutant, only: list[str]) -> bool:
    return not only or any(text in m.name for text in only)


def run_tests(scratch: Path, tests: list[str], timeout: float) -> tuple[bool, float, str]:
    """Run ``tests`` against the scratch copy: (passed, seconds, the first failing test or "")."""
    env = {
        **os.environ,
        "PYTHONPATH": str(scratch / "src"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider", *tests]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        ok = r.returncode == 0
        failed = [line.split()[1] for line in r.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
        first = failed[0] if failed else ("" if ok else f"exit status {r.returncode}")
    except subprocess.TimeoutExpired:
        ok, first = False, "timeout"
    return ok, time.perf_counter() - t0, first


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--named", action="store_true", help="the issue-13 glue breaks")
    ap.add_argument(
        "--auto", nargs="*", default=[], metavar="DIR", help="sub-folders of src/crossvis to flip"
    )
    ap.add_argument("--only", nargs="*", default=[], help="only the mutants whose name contains one of these")
    ap.add_argument("--max", type=int, default=50, help="at most this many auto mutants (sampled)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="skip this many sampled auto mutants (a next batch)")
    ap.add_argument("--tests", nargs="+", required=True, help="test files (or node ids) to run per mutant")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant run (then killed)")
    args = ap.parse_args(argv)

    src = ROOT / "src"
    mutants: list[Mutant] = []
    if args.named:
        named, missing = named_mutants(src)
        mutants += [m for m in named if _wanted(m, args.only)]
        for name in missing:
            print(f"not found (code moved or changed?): {name}")
    if args.auto:
        auto = auto_mutants(src, args.auto)
        random.Random(args.seed).shuffle(auto)
        auto = [m for m in auto if _wanted(m, args.only)][args.start :]
        print(f"{len(auto)} auto mutants, running {min(args.max, len(auto))}")
        mutants += auto[: args.max]

    with tempfile.TemporaryDirectory(prefix="crossvis-mut-") as tmp:
        scratch = Path(tmp)
        shutil.copytree(src, scratch / "src", ignore=shutil.ignore_patterns("__pycache__"))
        ok, secs, _ = run_tests(scratch, args.tests, args.timeout)
        if not ok:
            print("the tests fail on the unmutated code: nothing to measure")
            return 1
        print(f"baseline passes ({secs:.0f} s)")
        survived = []
        for i, m in enumerate(mutants, 1):
            target = scratch / "src" / m.file
            target.write_text(m.new)
            try:
                passed, secs, caught_by = run_tests(scratch, args.tests, args.timeout)
            finally:
                target.write_text(m.old)
            status = "SURVIVED" if passed else "killed"
            by = f"  <- {caught_by}" if caught_by else ""
            print(f"[{i}/{len(mutants)}] {status:8s} {secs:5.1f}s  {m.name}{by}", flush=True)
            if passed:
                survived.append(m)
    killed = len(mutants) - len(survived)
    print(f"\n{killed} killed, {len(survived)} survived of {len(mutants)}")
    for m in survived:
        new_line = m.new.splitlines()[m.line - 1].strip() if m.new.count("\n") >= m.line - 1 else ""
        print(f"  survived: {m.name}\n      {m.file}:{m.line}: {new_line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
