"""llama-cpp-python's own OpenAI-compatible server, with mean pooling, for tests of embedding endpoints.

Run as `python -m tests.llama_embedding_server --model M.gguf --embedding true --host 127.0.0.1 --port P`.
The server's settings have no pooling option, and without pooling a decoder model such as the packaged Gemma
answers one vector per token; this sets mean pooling, as `llama-server --pooling mean` does upstream, and
then runs the server unchanged.
"""

from __future__ import annotations

import functools

import llama_cpp
from llama_cpp.server.__main__ import main

_llama_init = llama_cpp.Llama.__init__


@functools.wraps(_llama_init)
def _mean_pooled_init(self, *args, **kwargs) -> None:
    kwargs.setdefault("pooling_type", llama_cpp.LLAMA_POOLING_TYPE_MEAN)
    _llama_init(self, *args, **kwargs)


if __name__ == "__main__":
    llama_cpp.Llama.__init__ = _mean_pooled_init
    main()
