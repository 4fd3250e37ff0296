"""Flask-Limiter counting in a tandem pair, used unchanged.

    python limiter_flow.py [STRATEGY]     (env TANDEM_A, TANDEM_B = host:port)

Two copies of one Flask app, one storing its counters through node A and one through node B,
allow three requests a minute per client between them: the fourth, whichever node it lands
on, is refused with 429. A refused command raises in the storage (errors are not swallowed):
the request fails with 500.
"""

import sys

from flask import Flask
from flask_limiter import Limiter

from common import expect, nodes


def make_app(host, port, strategy):
    app = Flask(f"app-{port}")
    limiter = Limiter(
        key_func=lambda: "tester",
        app=app,
        storage_uri=f"redis://{host}:{port}",
        strategy=strategy,
        swallow_errors=False,
    )

    @app.get("/ping")
    @limiter.limit("3 per minute")
    def ping():
        return "ok"

    return app


def main():
    strategy = sys.argv[1] if len(sys.argv) > 1 else "fixed-window"
    (ha, pa), (hb, pb) = nodes()
    a, b = make_app(ha, pa, strategy), make_app(hb, pb, strategy)
    codes = [app.test_client().get("/ping").status_code for app in (a, b, a, b)]
    expect("limit across A and B", codes, None, [200, 200, 200, 429])
    print(f"PASS flask-limiter {strategy}")


if __name__ == "__main__":
    main()
