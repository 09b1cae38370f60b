# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

# The designer's front end: npm ci from the committed lock file, then Vite builds designer/static.
FRONTEND := designer/frontend
DESIGNER := designer/static/index.html
FRONTEND_SOURCES := $(wildcard $(FRONTEND)/src/*) $(FRONTEND)/index.html $(FRONTEND)/vite.config.js $(FRONTEND)/package.json

.PHONY: run test lint typecheck typecheck-frontend services clean designer designer-screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

$(FRONTEND)/node_modules/.installed: $(FRONTEND)/package-lock.json
	cd $(FRONTEND) && npm ci --no-audit --no-fund
	touch $@

$(DESIGNER): $(FRONTEND)/node_modules/.installed $(FRONTEND_SOURCES)
	cd $(FRONTEND) && npm run build

designer: $(DESIGNER)

# The screenshots of docs/designer.md, taken by the browser tests (which otherwise write them
# to a temporary folder): run it when the designer's looks change, and commit the images.
designer-screenshots: $(STAMP) $(DESIGNER)
	DESIGNER_SCREENSHOTS=docs $(BIN)/pytest tests/browser -q -p no:cacheprovider

run: $(STAMP) $(DESIGNER)
	@echo "interlace is installed in $(BIN): call it as $(BIN)/interlace, or put it on your PATH with"
	@echo "  export PATH=\"$$PWD/$(BIN):\$$PATH\""
	$(BIN)/interlace run flows/

test: $(STAMP)
	bash tests/services/install.sh
	$(MAKE) designer  # after install.sh, which brings node and npm where they are missing
	$(BIN)/ruff check .
	$(MAKE) typecheck-frontend
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The designer's JSX and JS checked by TypeScript (checkJs, JSDoc types, nothing emitted),
# from the lock file's typescript; part of make test's lint step.
typecheck-frontend: $(FRONTEND)/node_modules/.installed
	cd $(FRONTEND) && npm run --silent typecheck

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache designer/static $(FRONTEND)/node_modules
