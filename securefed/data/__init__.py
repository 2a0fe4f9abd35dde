"""Data layer: formats and loaders, presets and templates, partitioning, the embedded default set."""

from securefed.data.config import DataConfig, PartitionConfig
from securefed.data.loading import default_corpus, load_examples, load_preferences
from securefed.data.partition import PartitionReport, partition, partition_report
from securefed.data.presets import Preset, get_preset, preset_names, register_preset
from securefed.data.types import Example, LoadedData, LoadedPreferences, PreferenceExample

__all__ = [
    "DataConfig",
    "Example",
    "LoadedData",
    "LoadedPreferences",
    "PartitionConfig",
    "PartitionReport",
    "PreferenceExample",
    "Preset",
    "default_corpus",
    "get_preset",
    "load_examples",
    "load_preferences",
    "partition",
    "partition_report",
    "preset_names",
    "register_preset",
]
