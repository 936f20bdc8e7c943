# echoseg: `make demo` runs the whole pipeline on built-in synthetic data; `make test` runs the tests.
# Both create .venv and install what they need. torch is installed first as the pinned CPU build
# (torch==2.13.0), so the `train` extra's torch requirement is already met and pip never pulls
# a multi-GB CUDA build on a CPU machine. On a GPU machine, install the CUDA torch you want first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.echoseg-installed
DEMO   ?= demo-out
WIDTH  ?= 16
EPOCHS ?= 12
# one ONNX Runtime: `make install ORT_EXTRA=gpu` on a GPU box (onnxruntime-gpu, TensorRT, pycuda, NVML)
ORT_EXTRA ?= cpu

.PHONY: install demo test test-floors clean pretrained

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[$(ORT_EXTRA),openvino,train,export,dicom,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/echo-synth $(DEMO)/data --videos 120 --frames 64 --seed 0
	$(BIN)/echo-train --data $(DEMO)/data --model unet --width $(WIDTH) --epochs $(EPOCHS) --overwrite --out runs/unet
	$(BIN)/echo-train --data $(DEMO)/data --model matae-unet --width $(WIDTH) --epochs $(EPOCHS) --overwrite --out runs/matae-unet
	$(BIN)/echo-eval runs/unet runs/matae-unet --data $(DEMO)/data --split test
	$(BIN)/echo-export build --fp16 --int8 -g 0.5 -g 0.25
	$(BIN)/echo-run $(DEMO)/data/Videos/SYN000_00119.avi --out $(DEMO)/run
	@echo "true EF of that synthetic video (FileList.csv): $$(grep SYN000_00119 $(DEMO)/data/FileList.csv | cut -d, -f2)"
	$(BIN)/echo-bench compare --out $(DEMO)/bench

# The bundled model: synthetic data only (nothing under a data-use agreement may ship), fixed seeds.
# An ensemble of matae-unet width 16 networks, one per seed in PRE_SEEDS (each on its own echo-synth
# data of that seed), probabilities averaged in one graph (echo-export ensemble). About 30 minutes on
# 2 CPU cores; minutes on a GPU. Writes echoseg/pretrained/echo-synth-matae-w16/.
# PRE_STYLE echo is the first generator (bit for bit what it always drew); echo3 its atria-dwarfing version.
PRE ?= pretrained-build
PRE_STYLE ?= echo3
PRE_VIDEOS ?= 500
PRE_EPOCHS ?= 2
PRE_SEEDS ?= 13 14 15
PRE_SHIFT ?= 1
PRE_WORKERS ?= 2
PRE_MEMBERS = $(foreach s,$(PRE_SEEDS),$(PRE)/member-$(s))
pretrained: install
	set -e; for s in $(PRE_SEEDS); do \
	  rm -rf $(PRE)/data-$$s; \
	  $(BIN)/echo-synth $(PRE)/data-$$s --style $(PRE_STYLE) --layout frames --every 6 --videos $(PRE_VIDEOS) --frames 48 --seed $$s --workers $(PRE_WORKERS); \
	  $(BIN)/echo-train --data $(PRE)/data-$$s --model matae-unet --width 16 --init none --epochs $(PRE_EPOCHS) --augment-strength heavy --recon-weight 0.1 --shift-consistency $(PRE_SHIFT) --seed $$s --overwrite --out $(PRE)/member-$$s; \
	done
	rm -rf $(PRE)/echo-synth-matae-w16
	if [ $(words $(PRE_SEEDS)) -gt 1 ]; then \
	  $(BIN)/echo-export ensemble $(PRE_MEMBERS) --out $(PRE)/echo-synth-matae-w16; \
	else cp -r $(PRE_MEMBERS) $(PRE)/echo-synth-matae-w16; fi
	$(BIN)/echo-eval $(PRE)/echo-synth-matae-w16 --data $(PRE)/data-$(firstword $(PRE_SEEDS)) --split test
	$(BIN)/echo-export build $(PRE)/echo-synth-matae-w16 --fp16 --int8 -g 0.5 --out $(PRE)/exports
	$(BIN)/python -m echoseg.pretrained.bundle $(PRE)/exports/echo-synth-matae-w16 --run $(PRE)/echo-synth-matae-w16 --eval $(PRE)/echo-synth-matae-w16/eval-test/metrics.json --style $(PRE_STYLE)

test: install
	$(BIN)/python -m pytest -q

# The suite once more with every dependency at the lowest version pyproject.toml allows
# (.ci/floors.txt), in a second venv; CI runs it after `make test`.
FLOORS_VENV ?= .venv-floors
test-floors:
	test -x $(FLOORS_VENV)/bin/python || $(PYTHON) -m venv $(FLOORS_VENV)
	$(FLOORS_VENV)/bin/python -m pip install -q torch==2.13.0
	$(FLOORS_VENV)/bin/python -m pip install -q -c .ci/floors.txt -e '.[cpu,train,export,dicom,dev]'
	$(FLOORS_VENV)/bin/python -m pip list 2>/dev/null | grep -iE '^(numpy|onnx|onnxruntime|opencv-python-headless|matplotlib|typer|rich|psutil|pydicom|onnxslim|torch) '
	$(FLOORS_VENV)/bin/python -m pytest -q -m 'not slow' -p no:cacheprovider

clean:
	rm -rf $(DEMO) runs exports outputs bench-out model_repository .pytest_cache $(PRE) $(FLOORS_VENV)
