#!/usr/bin/env bash
# Container entry point: maps `<mode> <bundle> [overrides]` onto the README's MONAI bundle commands,
# so a deployment names what to run instead of spelling out config lists. Anything it does not
# recognise is executed as given (bash, torchrun ..., python3 ...), so the image stays a plain
# PyTorch environment when that is what is needed.
set -euo pipefail

DATASET_DIR="${DATASET_DIR:-/data}"
OUTPUT_DIR="${OUTPUT_DIR:-/output}"

usage() {
    cat <<'EOF'
usage: <command> [arguments]

  train BUNDLE [--key value ...]            python3 -m monai.bundle run (configs/train.json)
  evaluate BUNDLE [--key value ...]         ... (train.json + evaluate.json)
  inference BUNDLE [--key value ...]        ... (train.json + inference.json); --input PATH predicts
                                            an image, a DICOM series folder or a folder of images
  multi-gpu-train BUNDLE [--key value ...]  torchrun -m monai.bundle run (train.json + multi_gpu_train.json);
                                            nodes and workers come from torchrun's PET_* variables
                                            (PET_NPROC_PER_NODE defaults to gpu: one worker per visible GPU)
  pipeline ARGS                             python3 -m pipeline ARGS
  bundles                                   list the bundles in this image
  help                                      this text
  anything else                             executed as given (bash, torchrun ..., python3 ...)

Every bundle command gets --dataset_dir $DATASET_DIR (default /data) and --output_dir
$OUTPUT_DIR/BUNDLE (default /output/BUNDLE, the layout of the repo's runs/ folder, so inference finds
the weights training saved there); later --key value pairs override any bundle config key.
EOF
}

bundle_configs() {
    # Prints the --config_file list for bundle $1 from the config names that follow it.
    local bundle="$1" list="" name
    shift
    if [ ! -d "bundles/$bundle/configs" ]; then
        echo "error: bundle '$bundle' not found under $(pwd)/bundles (try: bundles)" >&2
        exit 2
    fi
    for name in "$@"; do
        list="${list:+$list,}'bundles/$bundle/configs/$name.json'"
    done
    printf '[%s]' "$list"
}

need_bundle() {
    if [ "$#" -lt 2 ]; then
        echo "error: '$1' needs a bundle name (try: bundles)" >&2
        exit 2
    fi
}

command="${1:-help}"
case "$command" in
    train | evaluate | inference)
        need_bundle "$@"
        # evaluate and inference are overlays on train.json: they reuse its network, transforms and outputs.
        names=(train)
        [ "$command" = train ] || names+=("$command")
        configs="$(bundle_configs "$2" "${names[@]}")"
        bundle="$2"
        shift 2
        exec python3 -m monai.bundle run --config_file "$configs" \
            --dataset_dir "$DATASET_DIR" --output_dir "$OUTPUT_DIR/$bundle" "$@"
        ;;
    multi-gpu-train)
        need_bundle "$@"
        configs="$(bundle_configs "$2" train multi_gpu_train)"
        bundle="$2"
        shift 2
        export PET_NPROC_PER_NODE="${PET_NPROC_PER_NODE:-gpu}"
        exec torchrun -m monai.bundle run --config_file "$configs" \
            --dataset_dir "$DATASET_DIR" --output_dir "$OUTPUT_DIR/$bundle" "$@"
        ;;
    pipeline)
        shift
        exec python3 -m pipeline "$@"
        ;;
    bundles)
        for configs in bundles/*/configs; do
            [ -d "$configs" ] && basename "$(dirname "$configs")"
        done
        exit 0
        ;;
    help | -h | --help)
        usage
        ;;
    *)
        exec "$@"
        ;;
esac
