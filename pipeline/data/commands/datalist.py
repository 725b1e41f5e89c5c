"""``python -m pipeline datalist FOLDER -o datalist.json``: MSD-style datalist from a dataset folder."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folder", help="dataset folder: images/+masks/ (2D), imagesTr/+labelsTr/ (3D) or DICOM series with SEGs"
    )
    parser.add_argument("-o", "--output", required=True, help="datalist JSON to write")
    parser.add_argument("--name", help="dataset name (default: the folder name)")
    parser.add_argument("--modality", help="modality recorded in the datalist (default from the layout)")
    parser.add_argument("--labels", help='class names as JSON, e.g. \'{"0": "background", "1": "polyp"}\'')


def run(args: argparse.Namespace) -> int:
    from pipeline.data.datalist import build_datalist, write_json
    from pipeline.errors import PipelineError

    labels = None
    if args.labels:
        try:
            labels = json.loads(args.labels)
        except json.JSONDecodeError as error:
            raise PipelineError(f"--labels: not valid JSON ({error})") from error
    datalist = build_datalist(args.folder, name=args.name, labels=labels, modality=args.modality)
    path = write_json(datalist, args.output)
    summary = datalist["summary"]
    print(f"{path}: {summary['cases']} cases ({datalist['layout']}), {summary['empty_masks']} empty masks")
    return 0
