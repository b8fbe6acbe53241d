# Every target creates the virtual environment it needs: on a fresh machine `make demo` and
# `make test` need nothing typed before them.
PYTHON_SYS ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
ARTIFACTS  ?= artifacts
export ARTIFACTS
export TF_CPP_MIN_LOG_LEVEL := 3

MODEL := $(ARTIFACTS)/unet.keras
FP32  := $(ARTIFACTS)/unet_fp32.onnx
FP16  := $(ARTIFACTS)/unet_fp16.onnx
INT8  := $(ARTIFACTS)/unet_int8.onnx
STAMP := $(VENV)/.installed

.PHONY: setup model onnx accuracy engine demo bench test gpu-test typecheck clean help
.DEFAULT_GOAL := help

help:
	@echo "usage: make TARGET [VARIABLE=value ...]   (every target creates the venv it needs)"
	@echo ""
	@echo "  make demo       stream the synthetic salt video through the best model -> $(ARTIFACTS)/demo.mp4"
	@echo "  make test       the CPU test suite (static TensorRT checks included)"
	@echo "  make setup      only create $(VENV) with the pinned packages (shows pip's progress)"
	@echo "  make model      train the UNet on synthetic salt data -> $(MODEL)"
	@echo "  make onnx       export + FP16 + INT8 ONNX -> $(ARTIFACTS)/unet_{fp32,fp16,int8}.onnx and their _mask variants"
	@echo "  make accuracy   accuracy of every precision against FP32 and ground truth"
	@echo "  make bench      latency benchmark of every model present, and streaming FPS"
	@echo "  make engine     FP16 and INT8 TensorRT engines (needs TensorRT and a GPU)"
	@echo "  make gpu-test   the tests marked gpu/cuda on shipped models (run once on a Jetson or GPU desktop; fails without one)"
	@echo "  make typecheck  mypy over the TensorRT/pycuda code against the TensorRT stubs"
	@echo "  make clean      delete $(ARTIFACTS)/ (the venv stays)"
	@echo "  make help       this list"
	@echo ""
	@echo "variables:"
	@echo "  ARTIFACTS=dir   where every generated file goes (now: $(ARTIFACTS))"
	@echo "  MODEL=file      the Keras model that make onnx exports (now: $(MODEL))"
	@echo "  PYTHON_SYS=...  the Python that creates the venv (now: $(PYTHON_SYS))"
	@echo ""
	@echo "your own model:"
	@echo "  make onnx MODEL=path/to/mine.keras ARTIFACTS=mine    # export, FP16, INT8 of your trained UNet"
	@echo "  make accuracy bench ARTIFACTS=mine                   # then measure them"
	@echo "  python -m runtime demo --model mine/unet_int8.onnx --serve 8090   # and watch it live"

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

$(FP32): $(MODEL)
	$(PY) -m build_engine export --model $< --out $@

$(FP16): $(FP32)
	$(PY) -m calibration fp16 --fp32 $< --out $@

$(INT8): $(FP32)
	$(PY) -m calibration quantize --fp32 $< --out $@ --fp32-fallback

MASKS := $(ARTIFACTS)/unet_fp32_mask.onnx $(ARTIFACTS)/unet_fp16_mask.onnx $(ARTIFACTS)/unet_int8_mask.onnx
$(ARTIFACTS)/%_mask.onnx: $(ARTIFACTS)/%.onnx
	$(PY) -m calibration mask $< --out $@

onnx: $(FP32) $(FP16) $(INT8) $(MASKS)

demo: $(FP32) $(FP16) $(INT8)
	$(PY) -m runtime demo --source synthetic:// --output $(ARTIFACTS)/demo.mp4 --summary-json $(ARTIFACTS)/demo.json

bench: $(FP32) $(FP16) $(INT8)
	$(PY) -m runtime bench --streaming

# On the device: TensorRT and pycuda required (the command says what to install otherwise).
engine: $(FP32) $(FP16) $(INT8) $(MASKS)
	$(PY) -m build_engine engine --onnx $(FP32) --precision fp16
	$(PY) -m build_engine engine --onnx $(FP32) --precision int8

accuracy: $(FP32) $(FP16) $(INT8)
	$(PY) -m calibration evaluate $(FP32) $(FP16) $(INT8) --compare-methods

test: $(STAMP)
	$(PY) -m pytest -q -m "not gpu and not cuda" tests

# On a Jetson or GPU desktop with TensorRT and pycuda: fails (does not skip) if either is missing.
# Uses the small ONNX models shipped in tests/data (or GPU_TEST_ONNX=your_fp32.onnx) and only the
# runtime set (numpy, OpenCV, ONNX Runtime, pytest, TensorRT, pycuda): no training, no TensorFlow.
gpu-test:
	REQUIRE_GPU=1 $(PY) -m pytest -q -s -m "gpu or cuda" tests

typecheck: $(STAMP)
	$(PY) -m mypy build_engine/builder.py build_engine/trt_config.py build_engine/trt_api.py build_engine/precision.py calibration/trt_calibrator.py runtime/backends/trt.py runtime/backends/trt_io.py runtime/backends/trt_slots.py runtime/backends/cuda_mem.py runtime/backends/cuda_graph.py runtime/manifest.py

clean:
	rm -rf $(ARTIFACTS)
