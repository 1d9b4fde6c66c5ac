"""Web framework integrations: Django, Flask, FastAPI/Starlette.

Each framework has its own module, importing its framework only when the module
itself is imported, so the base install needs none of them:

- `fashionai_pipeline.producers.integrations.django`: a middleware and a view helper;
- `fashionai_pipeline.producers.integrations.flask`: a Flask extension;
- `fashionai_pipeline.producers.integrations.fastapi`: an ASGI middleware and a dependency.

`common` holds what they share (the shopper cookie, the page-view call). How to use
each: docs/INTEGRATIONS.md.
"""
