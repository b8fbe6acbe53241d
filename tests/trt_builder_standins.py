"""A stand-in `tensorrt` module for the builder side, per TensorRT version: it holds only the names
that build_engine/trt_api.py lists for that version and logs every call and assignment. It shows
that the builder touches no name a version lacks (per the table); it is not evidence of how
TensorRT behaves."""
from __future__ import annotations

from trt_standins import FakeDims


class VersionedTensorRT:
    """A `tensorrt` module holding only the builder names (build_engine/trt_api.py) that exist in
    `version`; every object it hands out checks each attribute against the table too.
    `answers` maps "Owner.method" to a function giving that call's result; calls are logged."""

    def __init__(self, version, answers=None):
        from build_engine.trt_api import BUILDER_NAMES, available

        self.version, self.log, self.answers = version, [], dict(answers or {})
        self._names, self._available = BUILDER_NAMES, available
        self.__version__ = f"{version[0]}.{version[1]}.0"

    def has(self, key):
        return key in self._names and self._available(key, self.version)

    def owner_exists(self, owner):
        return any(k.startswith(owner + ".") and self._available(k, self.version) for k in self._names)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if self.has(name) and name in ("Logger", "Builder", "OnnxParser", "Runtime"):
            return _Factory(self, name)
        if self.has(name) and name == "Dims":
            return FakeDims
        if self.has(name) and name == "IProgressMonitor":
            return type("IProgressMonitor", (), {"__init__": lambda self: None})
        if self.has(name) and name == "init_libnvinfer_plugins":
            return lambda logger, namespace: True
        if name in ("NetworkDefinitionCreationFlag", "MemoryPoolType", "BuilderFlag", "DeviceType", "ProfilingVerbosity",
                    "LayerInformationFormat", "TensorIOMode") and self.owner_exists(name):
            return _Enum(self, name)
        raise AttributeError(f"tensorrt {self.__version__} has no {name} (per build_engine/trt_api.py)")


class _Enum:
    def __init__(self, trt, owner):
        self._trt, self._owner = trt, owner

    def __getattr__(self, name):
        key = f"{self._owner}.{name}"
        if not self._trt.has(key):
            raise AttributeError(f"tensorrt {self._trt.__version__} has no {key}")
        return _Member(key)


class _Member:
    def __init__(self, key):
        self.key = key

    def __int__(self):
        return sum(map(ord, self.key)) % 31

    def __repr__(self):
        return self.key


class _Factory:
    """trt.Builder(logger) etc.: an object of class `owner`."""

    def __init__(self, trt, owner):
        self._trt, self._owner = trt, owner

    def __call__(self, *args):
        return _Object(self._trt, {"Logger": "Logger", "OnnxParser": "OnnxParser"}.get(self._owner, self._owner))

    def __getattr__(self, name):  # trt.Logger.WARNING
        key = f"{self._owner}.{name}"
        if not self._trt.has(key):
            raise AttributeError(f"tensorrt {self._trt.__version__} has no {key}")
        return _Member(key)


RETURNS = {"Builder.create_builder_config": "IBuilderConfig", "Builder.create_optimization_profile": "IOptimizationProfile",
           "Builder.create_network": "INetworkDefinition", "IBuilderConfig.create_timing_cache": "ITimingCache",
           "IBuilderConfig.get_timing_cache": "ITimingCache", "Runtime.deserialize_cuda_engine": "ICudaEngine",
           "ICudaEngine.create_engine_inspector": "EngineInspector"}


PROPERTIES = {"Builder.num_DLA_cores": 2, "INetworkDefinition.num_inputs": 1, "OnnxParser.num_errors": 0,
              "ITensor.name": "image", "ITensor.shape": FakeDims((-1, 1, 64, 64)), "ICudaEngine.num_io_tensors": 2}


class _Object:
    def __init__(self, trt, owner):
        object.__setattr__(self, "_trt", trt)
        object.__setattr__(self, "_owner", owner)

    def _key(self, name):
        key = f"{self._owner}.{name}"
        if not self._trt.has(key):
            raise AttributeError(f"tensorrt {self._trt.__version__} has no {key}")
        return key

    def __getattr__(self, name):
        key = self._key(name)
        answer = self._trt.answers.get(key)
        if key in PROPERTIES:
            return answer() if answer else PROPERTIES[key]

        def call(*args, **kwargs):
            self._trt.log.append((key, args, kwargs))
            if answer is not None:
                return answer(*args, **kwargs)
            if key in RETURNS:
                return _Object(self._trt, RETURNS[key])
            if key == "INetworkDefinition.get_input":
                return _Object(self._trt, "ITensor")
            return True
        return call

    def __setattr__(self, name, value):
        key = self._key(name)
        self._trt.log.append((key, value))
