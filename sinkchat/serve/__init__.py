"""``sinkchat serve``: the sink cache behind an OpenAI-compatible API.

- :mod:`.protocol`: the wire format (requests, responses, errors);
- :mod:`.matching`: which saved conversation a request continues;
- :mod:`.pool`: one model, many conversations, one request at a time;
- :mod:`.app`: the HTTP endpoints (Starlette);
- :mod:`.server`: binding, start-up and shutdown (uvicorn).

The HTTP stack comes with the ``serve`` extra; only :mod:`.server` and :mod:`.app` need it.
"""
