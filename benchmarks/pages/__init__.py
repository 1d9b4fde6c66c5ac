"""Product-page servers for `python -m benchmarks.page_server`: one page, three ways to personalise it.

Each app renders a product page of 200 native products through a Jinja2 template, in one of
three modes chosen by `PAGE_MODE` (read once at start-up):

- `none`: the page as the storefront renders it without personalisation;
- `project`: this project's request path: publish the productView, then order the page
  with the ranking reader (the asyncio twins in the ASGI app);
- `diy`: what a user would write alone: Celery `apply_async` of a task per event, a
  `redis.Redis` GET of the cached ranking and a plain merge.

Shoppers and products come from the query string (`?s=<session>&p=<product>`), so a load
generator can spread requests over many shoppers whose rankings are cached.
"""
