"""`fashionai-pipeline serve`: the pipeline over HTTP, for any storefront backend.

Importing this package imports no web framework: `signing.sign_shopper` is
for storefront backends, which need only the standard library. The app
(`app.create_app`) needs the `serve` extra (aiohttp, uvloop).
The API is described in docs/SERVICE.md and docs/openapi/service.json.
"""
