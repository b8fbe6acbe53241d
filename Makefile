# Every workstation target creates the virtual environment it needs: on a fresh machine `make demo`
# and `make test` need nothing typed before them. On the device (Jetson or GPU desktop) the venv is
# `make device-setup`'s, and `make engine` / `make gpu-test` use only the ONNX files copied over.
PYTHON_SYS ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
ARTIFACTS  ?= artifacts
SOAK_SECONDS ?= 600
export ARTIFACTS
export TF_CPP_MIN_LOG_LEVEL := 3

MODEL := $(ARTIFACTS)/unet.keras
FP32  := $(ARTIFACTS)/unet_fp32.onnx
FP16  := $(ARTIFACTS)/unet_fp16.onnx
INT8  := $(ARTIFACTS)/unet_int8.onnx
INT8_WEAK := $(ARTIFACTS)/unet_int8_weak.onnx
INT8_CPU := $(ARTIFACTS)/unet_int8_cpu.onnx
STAMP := $(VENV)/.installed

.PHONY: setup model onnx accuracy engine demo bench soak test gpu-test typecheck clean help device-setup check-device-deps
.DEFAULT_GOAL := help

help:
	@echo "usage: make TARGET [VARIABLE=value ...]   (every workstation target creates the venv it needs)"
	@echo ""
	@echo "  make demo       stream the synthetic salt video through the fastest gated model -> $(ARTIFACTS)/demo.mp4"
	@echo "  make test       the CPU test suite (static TensorRT checks included)"
	@echo "  make setup      only create $(VENV) with the pinned packages (shows pip's progress)"
	@echo "  make model      train the UNet on synthetic salt data -> $(MODEL)"
	@echo "  make onnx       export + FP16 + INT8 per backend (method chosen, accuracy gated) ->"
	@echo "                  $(ARTIFACTS)/unet_{fp32,fp16,int8,int8_weak,int8_cpu}.onnx and the TensorRT ones' _mask variants"
	@echo "  make accuracy   accuracy of every variant against FP32 and ground truth, method comparison"
	@echo "  make bench      latency of every model for the backend here, the one the demo runs, streaming FPS"
	@echo "  make soak       stream for SOAK_SECONDS and print resident memory as it goes (must stay flat)"
	@echo "  make typecheck  mypy over the TensorRT/pycuda code against the TensorRT stubs"
	@echo "  make clean      delete $(ARTIFACTS)/ (the venv stays)"
	@echo "  make help       this list"
	@echo "  make check-device-deps  resolve requirements-device*.txt for JetPack 5.1/6.x and desktops (needs PyPI)"
	@echo ""
	@echo "on the device (Jetson or GPU desktop), with unet_{fp32,fp16,int8}.onnx copied to $(ARTIFACTS)/ (+ unet_int8_weak.onnx for TensorRT 8.x):"
	@echo "  make device-setup  $(VENV) seeing the system's TensorRT and OpenCV, the runtime set only (no TensorFlow)"
	@echo "  make engine     FP16 and INT8 TensorRT engines from the ONNX files (never trains or quantizes; uint8-mask"
	@echo "                  output when the _mask variants are there too, else probabilities)"
	@echo "  make gpu-test   the tests marked gpu/cuda on shipped models (run once there; fails, not skips, without TensorRT/pycuda/GPU)"
	@echo ""
	@echo "variables:"
	@echo "  ARTIFACTS=dir   where every generated file goes (now: $(ARTIFACTS))"
	@echo "  MODEL=file      the Keras model that make onnx exports: .keras, .h5 or a SavedModel folder (now: $(MODEL))"
	@echo "  EXPORT_ARGS=... your model's preprocessing for export, e.g. \"--color-order rgb --input-scale 1/255 --input-offset 0\""
	@echo "  PYTHON_SYS=...  the Python that creates the venv (now: $(PYTHON_SYS))"
	@echo "  ORT=0           make device-setup without ONNX Runtime (engines only)"
	@echo "  SOAK_SECONDS=n  how long make soak streams (now: $(SOAK_SECONDS))"
	@echo ""
	@echo "your own model:"
	@echo "  make onnx MODEL=path/to/mine.keras ARTIFACTS=mine    # export (checked against it), FP16, INT8 of your model"
	@echo "  make accuracy bench ARTIFACTS=mine                   # then measure them"
	@echo "  ARTIFACTS=mine python -m runtime demo --serve 8090   # and watch the fastest gated one live"

setup: $(STAMP)

# pip's own progress (one line per package, download bars on a terminal): a first set-up downloads
# about 1 GB (TensorFlow is most of it) and takes a few minutes.
$(STAMP): requirements-runtime.txt requirements-build.txt requirements-dev.txt
	@echo "==> [1/4] creating $(VENV) with $(PYTHON_SYS)"
	$(PYTHON_SYS) -m venv $(VENV)
	@echo "==> [2/4] upgrading pip"
	$(PY) -m pip install --progress-bar on --upgrade pip
	@echo "==> [3/4] installing the pinned packages (TensorFlow, ONNX, ONNX Runtime, OpenCV, pytest...): a few minutes"
	$(PY) -m pip install --progress-bar on -r requirements-dev.txt
	@echo "==> [4/4] TensorRT type stubs for make typecheck"
	$(PY) -m pip install --quiet --no-deps --upgrade --target $(VENV)/trt-stubs tensorrt-stubs==10.13.0.35.1
	tools/patch_trt_stubs.sh $(VENV)/trt-stubs
	touch $@
	@echo "==> $(VENV) is ready"

model: $(MODEL)
# The venv is order-only: updating it must not retrain the model.
$(MODEL): | $(STAMP)
	$(PY) -m build_engine train --out $@

# Without the Keras model here (a device with the ONNX files copied over, or ONNX exported from your
# own model), ONNX files present are taken as given: no rule, so nothing re-makes them (that would
# mean training a new model). Missing ones are made as usual.
given = $(if $(wildcard $(MODEL)),,$(wildcard $(1)))

ifeq ($(call given,$(FP32)),)
$(FP32): $(MODEL)
	$(PY) -m build_engine export --model $< --out $@ $(EXPORT_ARGS)
endif

ifeq ($(call given,$(FP16)),)
$(FP16): $(FP32)
	$(PY) -m calibration fp16 --fp32 $< --out $@
endif

# INT8 per backend, each calibrated with --method auto and held to the accuracy gate on held-out frames.
# unet_int8_weak.onnx (weakly typed TensorRT builds) is written by the same command as unet_int8.onnx.
ifeq ($(call given,$(INT8)),)
$(INT8): $(FP32)
	$(PY) -m calibration quantize --backend tensorrt --fp32 $< --out $@
endif

ifeq ($(call given,$(INT8_WEAK)),)
$(INT8_WEAK): $(INT8)
	@test -f $@ || { echo "error: $@ is missing: delete $(INT8) and run make onnx again" >&2; exit 2; }
endif

ifeq ($(call given,$(INT8_CPU)),)
$(INT8_CPU): $(FP32)
	$(PY) -m calibration quantize --backend onnxruntime --fp32 $< --out $@
endif

MASKS := $(ARTIFACTS)/unet_fp32_mask.onnx $(ARTIFACTS)/unet_fp16_mask.onnx $(ARTIFACTS)/unet_int8_mask.onnx
WEAK_MASK := $(ARTIFACTS)/unet_int8_weak_mask.onnx
$(ARTIFACTS)/%_mask.onnx: $(ARTIFACTS)/%.onnx
	$(PY) -m calibration mask $< --out $@

onnx: $(FP32) $(FP16) $(INT8) $(INT8_WEAK) $(INT8_CPU) $(MASKS) $(WEAK_MASK)

# The CPU INT8 model is made on the workstation; a device with the ONNX files copied over (the FP32
# model given, no Keras model) runs what it has, and its engines.
CPU_INT8_IF_MADE_HERE = $(if $(call given,$(FP32)),,$(INT8_CPU))

demo: $(FP32) $(FP16) $(INT8) $(CPU_INT8_IF_MADE_HERE)
	$(PY) -m runtime demo --source synthetic:// --output $(ARTIFACTS)/demo.mp4 --summary-json $(ARTIFACTS)/demo.json

bench: $(FP32) $(FP16) $(INT8) $(CPU_INT8_IF_MADE_HERE)
	$(PY) -m runtime bench --streaming

# Memory over a long run must stay flat: stream for SOAK_SECONDS and print RSS as it goes.
soak: $(FP32) $(FP16) $(INT8)
	$(PY) -m runtime bench --soak $(SOAK_SECONDS)

# ---- On the device ----------------------------------------------------------------------------
# The venv sees the system's packages (JetPack's TensorRT and GStreamer OpenCV). An existing venv is
# never re-created: `python3 -m venv` over it would switch include-system-site-packages back off.
device-setup:
	@if [ -f $(VENV)/pyvenv.cfg ] && ! grep -Eqi '^include-system-site-packages *= *true' $(VENV)/pyvenv.cfg; then \
	  echo "error: $(VENV) exists without system site packages, so JetPack's TensorRT and OpenCV are invisible in it; move it away (mv $(VENV) $(VENV).old) and run make device-setup again, or use another: make device-setup VENV=.venv-device" >&2; exit 2; fi
	[ -f $(VENV)/pyvenv.cfg ] || $(PYTHON_SYS) -m venv --system-site-packages $(VENV)
	tools/device_setup.sh $(VENV) $(PYTHON_SYS)

# Only what is on the device is used: the ONNX files and the venv. Nothing here trains, exports or
# quantizes; the builder finds the FP16/INT8 variants of unet_fp32.onnx by the link they record.
need_onnx = @test -f $(FP32) || { echo "error: $(FP32) is missing: copy unet_fp32.onnx, unet_fp16.onnx and unet_int8.onnx (and their _mask variants) from the workstation's $(ARTIFACTS)/ (or run make onnx there); TensorRT 8.x also takes unet_int8_weak.onnx" >&2; exit 2; }
need_device_venv = @test -x $(PY) || { echo "error: no $(VENV) here: run make device-setup first" >&2; exit 2; }

# Engines output the uint8 mask when the three _mask variants were copied too, else probabilities.
ENGINE_OUTPUT ?= $(if $(filter 3,$(words $(wildcard $(MASKS)))),mask,probabilities)

# TensorRT and pycuda required (the command says what to install otherwise).
engine:
	$(need_onnx)
	$(need_device_venv)
	$(PY) -m build_engine engine --onnx $(FP32) --precision fp16 --output $(ENGINE_OUTPUT)
	$(PY) -m build_engine engine --onnx $(FP32) --precision int8 --output $(ENGINE_OUTPUT)

accuracy: $(FP32) $(FP16) $(INT8) $(INT8_CPU)
	$(PY) -m calibration evaluate --compare-methods

test: $(STAMP)
	$(PY) -m pytest -q -m "not gpu and not cuda" tests

# On a Jetson or GPU desktop with TensorRT and pycuda: fails (does not skip) if either is missing.
# Uses the small ONNX models shipped in tests/data (or GPU_TEST_ONNX=your_fp32.onnx) and only the
# runtime set (numpy, OpenCV, ONNX Runtime, pytest, TensorRT, pycuda): no training, no TensorFlow.
gpu-test:
	$(need_device_venv)
	REQUIRE_GPU=1 $(PY) -m pytest -q -s -m "gpu or cuda" tests

# Needs PyPI; resolves the device requirements for each platform without installing anything.
check-device-deps: $(STAMP)
	tools/check_device_deps.sh $(PY)

typecheck: $(STAMP)
	$(PY) -m mypy build_engine/builder.py build_engine/trt_config.py build_engine/trt_api.py build_engine/precision.py calibration/trt_calibrator.py runtime/backends/trt.py runtime/backends/trt_io.py runtime/backends/trt_slots.py runtime/backends/cuda_mem.py runtime/backends/cuda_graph.py runtime/manifest.py

clean:
	rm -rf $(ARTIFACTS)
