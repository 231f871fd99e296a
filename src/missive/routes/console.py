"""The console's routes under /console (docs/console.md): pages and form actions (console/views.py), its
own static files, and the npm assets that scripts/bootstrap installed (Chart.js)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from missive.console import views
from missive.console.web import BASE, assets_dir
from missive.settings import ConsoleSettings


def routes(settings: ConsoleSettings) -> list[BaseRoute]:
    get, post = ["GET"], ["POST"]
    pages: list[BaseRoute] = [
        Route("/", views.home, methods=get),
        Route("/sign-in", views.sign_in_page, methods=get),
        Route("/sign-in", views.sign_in, methods=post),
        Route("/sign-out", views.sign_out, methods=post),
        Route("/keys", views.keys_page, methods=get),
        Route("/keys", views.key_create, methods=post),
        Route("/keys/{key_id}", views.key_update, methods=post),
        Route("/workspaces", views.workspaces_page, methods=get),
        Route("/workspaces", views.workspace_create, methods=post),
        Route("/workspaces/{workspace_id}", views.workspace_update, methods=post),
        Route("/workbench", views.workbench_page, methods=get),
        Route("/workbench/messages", views.workbench_messages, methods=post),
        Route("/workbench/check", views.workbench_check, methods=post),
        Route("/usage", views.usage_page, methods=get),
        Route("/usage.csv", views.usage_csv, methods=get),
        Route("/cost.csv", views.usage_csv, methods=get),
        Route("/limits", views.limits_page, methods=get),
        Route("/batches", views.batches_page, methods=get),
        Route("/batches/{batch_id}/cancel", views.batch_cancel, methods=post),
        Route("/batches/{batch_id}/results", views.batch_results, methods=get),
        Route("/models", views.models_page, methods=get),
        Mount("/static", StaticFiles(packages=[("missive.console", "static")])),
    ]
    vendor = assets_dir(settings.assets_dir)
    if vendor.is_dir():  # without them the pages say that the charts are unavailable
        pages.append(Mount("/vendor", StaticFiles(directory=vendor)))
    return [Route(BASE, views.home, methods=get), Mount(BASE, routes=pages)]
