"""The app of ``procrastinate --app=benchmarks.apps.procrastinate_app.app
worker`` in a cell's worker process: the App and tasks the cell declared
(``engines.procrastinate.make_app``), on the server and schema the cell
put in its environment."""

from __future__ import annotations

import json
import os

from benchmarks.engines.procrastinate import SETTINGS_ENV, make_app

try:
    _settings = json.loads(os.environ[SETTINGS_ENV])
except KeyError:
    raise RuntimeError(f"{SETTINGS_ENV} is not set: this app is started by a benchmark cell") from None

app = make_app(_settings["url"], _settings["schema"])
