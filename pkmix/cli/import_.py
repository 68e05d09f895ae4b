"""``pkmix import RUN.mod [--out model.py]``: a NONMEM control stream as a pkmix model file.

The file is the translation that ``pkmix fit RUN.mod`` runs: the individual parameters
from $PK, the structure from ADVAN/TRANS ($DES for ADVAN6/13), the prediction and the
residual error from $ERROR, the parameters from $THETA/$OMEGA/$SIGMA (comments keep
the NONMEM names), ESTIMATION from $ESTIMATION/$COVARIANCE and ``load_data()`` reading
$DATA as NM-TRAN does. Without --out it is printed. Exit status 2 when the control
stream cannot be imported (the message names the record and line).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import error_exit, output_file


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "import", help="translate a NONMEM control stream into a pkmix model file",
        description="Translate a NONMEM control stream (.mod/.ctl) into a readable pkmix model file.")
    parser.add_argument("control_stream", metavar="RUN.mod", help="the NONMEM control stream")
    parser.add_argument("--out", metavar="FILE", type=output_file,
                        help="write the model file here (default: print it)")
    parser.set_defaults(run=run)
    return parser


def run(args) -> int:
    from ..nonmem import ControlStreamError, load, to_source

    path = Path(args.control_stream)
    if not path.is_file():
        return error_exit(f"control stream not found: {path}")
    try:
        source = to_source(path, out=args.out)
        load(path)  # builds the model: a translation pkmix cannot run is refused here, not at fit time
    except ControlStreamError as e:
        return error_exit(f"{path}: {e}")
    except Exception as e:  # the model check (pkmix.ModelError) on the translated model
        return error_exit(f"{path}: the translated model is not valid: {type(e).__name__}: {e}")
    if args.out:
        try:
            Path(args.out).write_text(source)
        except OSError as e:
            return error_exit(f"could not write {args.out}: {e}")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(source)
    return 0
