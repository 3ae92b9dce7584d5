"""``beatrec serve``: a trained BEAT run behind HTTP (FastAPI) and a web page to explore it.

Modules: :mod:`config` (ServeConfig), :mod:`engine` (the model side: recommend, explain, fold in, inspect),
:mod:`batcher` (concurrent explain requests gathered into batched ``generate`` calls, LRU cache),
:mod:`stats` (request counts, latency percentiles, Prometheus text), :mod:`schemas` (pydantic request and
response models) and :mod:`app` (the FastAPI app, its routes and the static page).
"""
