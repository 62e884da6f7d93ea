"""Which reader opens which checkpoint (imports of the libraries stay lazy)."""

from __future__ import annotations

from weighttui.integrations.importers.base import ImportFileError, Reader, Unit

SUFFIX_KINDS = (
    (".safetensors", "safetensors"),
    (".weights.h5", "hdf5"), (".h5", "hdf5"), (".hdf5", "hdf5"), (".keras", "hdf5"),
    (".pt", "torch"), (".pth", "torch"), (".bin", "torch"), (".ckpt", "torch"),
    (".npz", "npz"), (".json", "json"),
)

# Files that sit next to checkpoints and are not weights (HF, Lightning, Keras side files)
NOT_WEIGHTS = {"optimizer.pt", "scheduler.pt", "training_args.bin", "trainer_state.json", "config.json",
               "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "model.safetensors.index.json", "pytorch_model.bin.index.json", "metadata.json",
               "hparams.yaml", "vocab.json", "adapter_config.json", "preprocessor_config.json"}


def kind_of(path: str) -> str | None:
    low = path.lower()
    base = low.replace("\\", "/").rsplit("/", 1)[-1]
    if base in NOT_WEIGHTS or base.startswith("rng_state") or base.endswith(".index.json"):
        return None
    for suffix, kind in SUFFIX_KINDS:
        if low.endswith(suffix):
            return kind
    return None


def open_reader(unit: Unit, *, mapped: bool = False) -> Reader:
    """The reader for unit; ImportFileError (a one-line reason) if it cannot be opened.

    mapped: memory-map the file where the format allows (safetensors, stored
    .npz members; see mapped.py), for a file nobody rewrites meanwhile.
    """
    kind = unit.kind
    if kind == "safetensors":
        from weighttui.integrations.importers.safetensors_file import SafetensorsReader

        return SafetensorsReader(unit, mapped=mapped)
    if kind == "torch":
        try:
            from weighttui.integrations.importers.torch_state import TorchReader
        except ImportError:
            raise ImportFileError("reading PyTorch files needs torch (pip install torch)") from None
        return TorchReader(unit)
    if kind == "hdf5":
        try:
            import h5py  # noqa: F401
        except ImportError:
            raise ImportFileError("reading HDF5 and Keras files needs h5py (pip install h5py)") from None
        from weighttui.integrations.importers.hdf5_file import Hdf5Reader

        return Hdf5Reader(unit)
    if kind == "npz":
        from weighttui.integrations.importers.npz_file import NpzReader

        return NpzReader(unit, mapped=mapped)
    if kind == "json":
        from weighttui.integrations.importers.json_dump import JsonReader

        return JsonReader(unit)
    if kind == "hf_checkpoint":
        from weighttui.integrations.importers.hf_trainer import HfCheckpointReader

        return HfCheckpointReader(unit, mapped=mapped)
    raise ImportFileError(f"not a checkpoint format weighttui reads ({kind})")
