"""A peft LoRA adapter of Gemma 3 as a GGUF LoRA file that llama.cpp loads beside the base GGUF (`lora_path`).

llama.cpp reads an adapter GGUF with `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`, the
base model's architecture, and per adapted weight two tensors named after the base tensor with `.lora_a` and
`.lora_b` appended (`blk.3.attn_q.weight.lora_a`). In ggml order A is [in, r] and B is [r, out], which in the
row-major arrays written here is exactly peft's `lora_A.weight` [r, in] and `lora_B.weight` [out, r]; llama.cpp
scales B @ A by alpha / r, as peft does. HF module names map to GGUF tensor names through the `gguf` package's
own table for the architecture. Written with the `gguf` package (optional dependency, extra `train`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ground.errors import TandemError

ARCH = "gemma3"
_PEFT_NAME = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<side>[AB])(?:\.default)?\.weight$")


class AdapterConversionError(TandemError):
    """A LoRA state dict that cannot be written as a llama.cpp adapter."""


def gguf_tensor_names(state: Mapping[str, object], block_count: int) -> dict[str, str]:
    """peft tensor name -> GGUF adapter tensor name (`model.layers.0.self_attn.q_proj.lora_A.weight` ->
    `blk.0.attn_q.weight.lora_a`)."""
    import gguf  # deferred: optional dependency (extra `train`)

    table = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, block_count)
    names = {}
    for name in state:
        match = _PEFT_NAME.match(name)
        if not match:
            raise AdapterConversionError(f"{name!r} is not a LoRA A/B weight")
        base = table.get_name(match["module"])
        if base is None:
            raise AdapterConversionError(f"no llama.cpp tensor for {match['module']!r} in {ARCH}")
        names[name] = f"{base}.weight.lora_{match['side'].lower()}"
    return names


def write_lora_gguf(state: Mapping[str, object], alpha: float, block_count: int, path: Path,
                    name: str = "tandem plan adapter") -> Path:  # fmt: skip
    """Write the LoRA tensors of `state` (peft names, torch tensors or arrays) as a GGUF adapter at `path`."""
    import gguf  # deferred: optional dependency (extra `train`)

    names = gguf_tensor_names(state, block_count)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    writer = gguf.GGUFWriter(tmp, ARCH)
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.General.NAME, name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for source in sorted(names, key=lambda n: names[n]):  # .lora_a right before its .lora_b
        value = state[source]
        array = value.detach().float().cpu().numpy() if hasattr(value, "detach") else np.asarray(value, np.float32)
        writer.add_tensor(names[source], np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path
