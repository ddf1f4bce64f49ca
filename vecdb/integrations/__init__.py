"""Adapters that make vecdb a vector store of LLM frameworks (the top layer: nothing in vecdb
imports it, and ``import vecdb`` loads neither framework).

- ``vecdb.integrations.langchain.VecdbVectorStore``: a LangChain ``VectorStore``
  (``pip install vecdb[langchain]``).
- ``vecdb.integrations.llama_index.VecdbVectorStore``: a LlamaIndex ``BasePydanticVectorStore``
  (``pip install vecdb[llamaindex]``).

Both keep each document in a collection with ``id_type="str"`` (framework ids are strings, so
they are the vecdb ids, unchanged) and work over an embedded database (``vecdb.open``) or a
server (``vecdb.connect``).
"""
