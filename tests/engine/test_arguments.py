"""The up-front argument checks: the library error and the bundle's one-line exit."""

from __future__ import annotations

import pytest

from pipeline.engine.arguments import check_arguments, check_bundle_arguments
from pipeline.errors import PipelineError


def test_check_arguments_names_the_bad_argument(synthetic_folder):
    with pytest.raises(PipelineError, match="dataset_dir is required"):
        check_arguments(None)
    with pytest.raises(PipelineError, match="unknown method 'nope'"):
        check_arguments(str(synthetic_folder), method="nope")
    with pytest.raises(SystemExit, match="^error: unknown method 'nope'"):
        check_bundle_arguments(dataset_dir=str(synthetic_folder), method="nope")
