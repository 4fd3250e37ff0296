"""A small web app whose sessions live in tandem: the seed scenario at the web level.

Run one copy on each host, next to that host's tandemd, behind a load balancer that spreads
requests over both (no sticky sessions). Logging in stores the user in the session; every
other request reads or adds to it. When a host dies, the other host's copy already holds
every session, so the user stays logged in.

    python app.py --listen 0.0.0.0:8000 --resp 127.0.0.1:6380 --name A

Routes (JSON answers):
    POST /login?user=NAME        log in: the user goes into the session
    POST /attr?name=N&value=V    save one attribute in the session (must be logged in)
    GET  /me                     who is logged in, with every attribute
    POST /logout                 end the session
    GET  /health                 200 while the local tandemd answers, else 503 (for the LB)

Flask-Session keeps each session as one value under `session:<id>`, written with
`SET key value EX <lifetime>` on every request; its client is redis-py with its defaults
(RESP3, after `HELLO 3`).
"""

import argparse
from datetime import timedelta

import redis
from flask import Flask, jsonify, request, session
from flask_session import Session


def create_app(resp: str, name: str, secret: str) -> Flask:
    host, _, port = resp.rpartition(":")
    store = redis.Redis(host=host, port=int(port), socket_timeout=2)
    app = Flask(__name__)
    app.config.update(
        # Signs nothing here (Flask-Session's ids are random and unsigned by default), but
        # Flask wants one; every copy of the app uses the same.
        SECRET_KEY=secret,
        SESSION_TYPE="redis",
        SESSION_REDIS=store,
        SESSION_PERMANENT=True,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=1),
    )
    Session(app)

    def me():
        return {"user": session.get("user"), "attrs": session.get("attrs", {}), "served_by": name}

    @app.post("/login")
    def login():
        user = request.args.get("user", "")
        if not user:
            return jsonify(error="user missing"), 400
        session.clear()
        session["user"] = user
        session["attrs"] = {}
        return jsonify(me())

    @app.post("/attr")
    def attr():
        if not session.get("user"):
            return jsonify(error="not logged in", served_by=name), 401
        attrs = dict(session.get("attrs", {}))
        attrs[request.args["name"]] = request.args.get("value", "")
        session["attrs"] = attrs
        return jsonify(me())

    @app.get("/me")
    def whoami():
        return jsonify(me())

    @app.post("/logout")
    def logout():
        session.clear()
        return jsonify(me())

    @app.get("/health")
    def health():
        try:
            store.ping()
        except redis.RedisError as e:
            return jsonify(ok=False, error=str(e), served_by=name), 503
        return jsonify(ok=True, served_by=name)

    return app


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", default="127.0.0.1:8000", help="HTTP address (host:port)")
    p.add_argument("--resp", default="127.0.0.1:6380", help="the local tandemd's RESP address")
    p.add_argument("--name", default="app", help="this copy's name, shown in answers")
    p.add_argument("--secret", default="change-me", help="Flask's secret key, the same on every copy")
    a = p.parse_args()
    host, _, port = a.listen.rpartition(":")
    # Flask's own threaded server keeps the example small; put it behind gunicorn or uWSGI
    # in production.
    create_app(a.resp, a.name, a.secret).run(host=host, port=int(port), threaded=True)


if __name__ == "__main__":
    main()
