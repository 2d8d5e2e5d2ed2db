"""`animlcm serve`: a Gradio page (and API) over the render stage.

Modules: ``config`` (ServeConfig: models, address, limits), ``limits`` (upload checks, zip unpacking),
``models`` (loaded networks kept between renders), ``jobs`` (one render request -> the render stage's
``run``), ``app`` (the Blocks page), ``launch`` (safe defaults and the server).
Gradio is imported only by ``app`` and ``launch``: the rest is tested without it.
"""
