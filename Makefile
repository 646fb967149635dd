# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# The virtual environment is made on first use. torch is installed first, pinned to the
# version this project is developed against (a local CPU build on the dev machines); where that
# exact version is not on offer, the newest torch is taken instead.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test venv bench bench-samplers bench-guidance bench-inverse bench-pointclouds bench-fewstep bench-folder reproduce reproduce-score clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)" || $(PY) -m pip install torch
	$(PY) -m pip install -e ".[test]"
	$(PY) -m pip install --no-deps "k-diffusion==0.1.1.post1" torchsde trampoline   # test peer, see README
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m ddpmkit.cli.demo

test: $(STAMP)
	$(PY) -m pytest -n 2 tests

bench: $(STAMP)
	$(PY) benchmarks/throughput.py

bench-samplers: $(STAMP)
	$(PY) benchmarks/samplers.py

bench-guidance: $(STAMP)
	$(PY) benchmarks/guidance.py

bench-inverse: $(STAMP)   # the oracle table (both processes), then inpainting the digits of runs/digits (make demo)
	$(PY) benchmarks/inverse_oracle.py --process discrete
	$(PY) benchmarks/inverse_oracle.py --process edm --out benchmarks/out/inverse_oracle_edm.json
	$(PY) benchmarks/inverse_digits.py --run runs/digits

bench-pointclouds: $(STAMP)   # trains the point-cloud presets where runs/ lacks them, then measures
	for p in shapes shapes-pvcnn shapes-pvcnn-cond shapes-completion shapes-completion-pdr shapes-denoise; do \
	    test -d runs/$$p || $(PY) -m ddpmkit train $$p || exit 1; done   # each preset's own num_threads
	OMP_NUM_THREADS=1 $(PY) benchmarks/pointclouds.py --parts generation
	OMP_NUM_THREADS=1 $(PY) benchmarks/pointclouds.py --parts completion --sampler ddpm --steps 100
	OMP_NUM_THREADS=1 $(PY) benchmarks/pointclouds.py --parts denoising

bench-fewstep: $(STAMP)   # the digits teacher (make demo) with every solver, its distilled students, the flows
	test -d runs/digits || $(PY) -m ddpmkit.cli.demo
	OMP_NUM_THREADS=1 $(PY) benchmarks/fewstep_solvers.py runs/digits
	OMP_NUM_THREADS=1 $(PY) benchmarks/fewstep_distill.py runs/digits
	test -d runs/digits-flow || $(PY) -m ddpmkit train digits-flow num_threads=1
	test -d runs/digits-flow-reflow || $(PY) -m ddpmkit distill runs/digits-flow --method reflow --out runs/digits-flow-reflow
	OMP_NUM_THREADS=1 $(PY) benchmarks/fewstep_flow.py runs/digits-flow runs/digits-flow-reflow --baseline runs/digits
	OMP_NUM_THREADS=1 $(PY) benchmarks/fewstep_draws.py runs/digits-flow:dpmpp3m:8 runs/digits:dpmpp2m:8 \
	    runs/digits-flow-reflow:euler:2 runs/digits-flow-reflow:euler:1 \
	    runs/digits-flow-reflow:euler:1+runs/digits-flow@0.3 benchmarks/out/distill/pd@2:ddim:2:trailing \
	    benchmarks/out/distill/pd@3:ddim:1:trailing benchmarks/out/distill/cd:consistency:2:80,0.821,0 \
	    runs/digits:unipc:4 runs/digits:dpmpp2m:4 runs/digits:unipc:5 runs/digits:dpmpp2m:5   # 20 noise draws each
	for k in 4 5; do $(PY) -m ddpmkit tune-grid runs/digits --sampler unipc --steps $$k --quiet || exit 1; done
	OMP_NUM_THREADS=1 $(PY) benchmarks/fewstep_draws.py runs/digits:unipc:4 runs/digits:unipc:4:runs/digits/grids/unipc-4.json \
	    runs/digits:unipc:5 runs/digits:unipc:5:runs/digits/grids/unipc-5.json --out benchmarks/out/fewstep_tuned.json

bench-folder: $(STAMP)   # the LFW faces through `ddpmkit train folder` (needs: .venv/bin/pip install scikit-image)
	$(PY) benchmarks/folder_faces.py

reproduce: $(STAMP)
	$(PY) benchmarks/reproduce.py

reproduce-score: $(STAMP)
	$(PY) benchmarks/score_family.py

clean:
	rm -rf $(VENV) runs
