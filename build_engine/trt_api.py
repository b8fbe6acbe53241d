"""Which TensorRT builder-side names exist in which version: one table, read by the builder to
gate what it touches and by the tests that check it.

Transcribed from NVIDIA's TensorRT Python API documentation and release notes, made
from TensorRT's pybind11 sources per release branch; the inspector (IEngineInspector, 8.2+) from
NVIDIA's 8.x Python API documentation. Tests check this table against the tensorrt-stubs 10.13
(every name marked present in 10.13) and the real tensorrt_lean 11.4 bindings (present and removed
names of the classes the lean module has), and run the builder's configuration code against a
stand-in module that holds only the names of 8.5, 8.6, 10.3 or 11.4.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

Version = Tuple[int, int]
V8_5, V8_6, V10_0, V11_0 = (8, 5), (8, 6), (10, 0), (11, 0)

# "Owner.name" (module-level names have no owner) -> (first version, version that removed it or None).
BUILDER_NAMES: Dict[str, Tuple[Version, Optional[Version]]] = {
    "__version__": (V8_5, None),
    "Logger": (V8_5, None),
    "Logger.WARNING": (V8_5, None),
    "Builder": (V8_5, None),
    "OnnxParser": (V8_5, None),
    "Runtime": (V8_5, None),
    "Dims": (V8_5, None),
    "init_libnvinfer_plugins": (V8_5, None),
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH": (V8_5, V11_0),  # ignored from 10.0, gone in 11.0
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED": (V10_0, None),  # 9.1 had it too; 9.x is not supported here
    "MemoryPoolType.WORKSPACE": (V8_5, None),
    "BuilderFlag.FP16": (V8_5, V11_0),
    "BuilderFlag.INT8": (V8_5, V11_0),
    "BuilderFlag.GPU_FALLBACK": (V8_5, None),
    "BuilderFlag.VERSION_COMPATIBLE": (V8_6, None),
    "DeviceType.DLA": (V8_5, None),
    "ProfilingVerbosity.DETAILED": (V8_5, None),
    "LayerInformationFormat.JSON": (V8_5, None),
    "TensorIOMode.INPUT": (V8_5, None),
    "IProgressMonitor": (V10_0, None),
    "IInt8EntropyCalibrator2": (V8_5, V11_0),
    "Builder.create_network": (V8_5, None),
    "Builder.create_builder_config": (V8_5, None),
    "Builder.create_optimization_profile": (V8_5, None),
    "Builder.build_serialized_network": (V8_5, None),
    "Builder.num_DLA_cores": (V8_5, None),
    "IBuilderConfig.set_memory_pool_limit": (V8_5, None),
    "IBuilderConfig.set_flag": (V8_5, None),
    "IBuilderConfig.builder_optimization_level": (V8_6, None),
    "IBuilderConfig.progress_monitor": (V10_0, None),
    "IBuilderConfig.default_device_type": (V8_5, None),
    "IBuilderConfig.DLA_core": (V8_5, None),
    "IBuilderConfig.profiling_verbosity": (V8_5, None),
    "IBuilderConfig.add_optimization_profile": (V8_5, None),
    "IBuilderConfig.create_timing_cache": (V8_5, None),
    "IBuilderConfig.set_timing_cache": (V8_5, None),
    "IBuilderConfig.get_timing_cache": (V8_5, None),
    "IBuilderConfig.int8_calibrator": (V8_5, V11_0),
    "IBuilderConfig.set_calibration_profile": (V8_5, V11_0),
    "OnnxParser.parse_from_file": (V8_5, None),
    "OnnxParser.num_errors": (V8_5, None),
    "OnnxParser.get_error": (V8_5, None),
    "INetworkDefinition.num_inputs": (V8_5, None),
    "INetworkDefinition.get_input": (V8_5, None),
    "ITensor.name": (V8_5, None),
    "ITensor.shape": (V8_5, None),
    "IOptimizationProfile.set_shape": (V8_5, None),
    "ITimingCache.serialize": (V8_5, None),
    "Runtime.deserialize_cuda_engine": (V8_5, None),
    "Runtime.engine_host_code_allowed": (V8_6, None),
    "Runtime.DLA_core": (V8_5, None),
    "ICudaEngine.num_io_tensors": (V8_5, None),
    "ICudaEngine.get_tensor_name": (V8_5, None),
    "ICudaEngine.get_tensor_mode": (V8_5, None),
    "ICudaEngine.get_tensor_dtype": (V8_5, None),
    "ICudaEngine.get_tensor_shape": (V8_5, None),
    "ICudaEngine.create_engine_inspector": (V8_5, None),
    "EngineInspector.get_engine_information": (V8_5, None),
}

# The versions the builder supports and the tests run it against (JetPack 5.1, 6.0, 6.1/6.2, 11.x).
CHECKED_VERSIONS: Tuple[Version, ...] = ((8, 5), (8, 6), (10, 3), (10, 13), (11, 4))


def available(name: str, version: Version) -> bool:
    """Whether `name` ("Owner.attr" or a module name) exists in TensorRT `version`."""
    first, removed = BUILDER_NAMES[name]
    return first <= version and (removed is None or version < removed)
